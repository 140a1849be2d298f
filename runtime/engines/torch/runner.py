"""One batched forward over rows from many sequences: in-flight batching for HF models.

Each row is (cache, new token ids, what to return). New tokens are right-padded into a
[rows, width] batch; their K/V are written straight into each row's arena slot, and attention
reads the rows' slots in place: the batch is a view of the arena when the rows' slots are
consecutive (the usual case: concurrent requests' sequences fill slots 0 .. live-1), with idle
rows riding along for a few free slots between decode rows; only other sets of rows are
gathered (one index per layer, counted in `KVArena.copied_tokens`). An explicit 4D boolean mask
lets key k be seen by query j of row b iff k <= cached_b + j, so sequences of any cache length
and any number of new tokens (prefill and decode) share one forward. Rows ask either for the
final hidden states of their last positions (heads applied by the caller) or for a token drawn
from the last position's logits: the output head and greedy choice then run once per batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import torch

from runtime.core.sampling import is_greedy
from runtime.engines.torch.kvcache import KVArena, SeqCache
from runtime.engines.torch.lean import DecoderForward, decoder_forward
from runtime.engines.torch.sampling import RuleState, greedy_tokens, sample_token

IDLE_ROWS = 16  # most idle rows a decode batch carries to stay a view of the arena
PAD_SLACK = 64  # padded positions a forward may always carry (more only up to its real tokens)


@dataclass(frozen=True, slots=True)
class Sampler:
    temperature: float
    top_p: float
    generator: torch.Generator
    logprobs: bool = True  # report the token's log-prob (greedy rows skip the softmax without it)
    top_k: int = 0
    rules: RuleState | None = None  # the request's logit rules for this sequence (None: none apply)

    @property
    def greedy(self) -> bool:
        return is_greedy(self.temperature, self.top_k)


@dataclass(frozen=True, slots=True)
class Drawn:
    token: int
    logprob: float  # under the sampled distribution; untempered at T == 0 (0.0 if not asked for)


@dataclass(slots=True)
class Row:
    cache: SeqCache
    new_ids: list[int]
    outputs: int = 0  # return the final hidden states of the last `outputs` new positions
    sample: Sampler | None = None  # or draw a token from the last position (returns a Drawn)


RowOutput = Union[torch.Tensor, Drawn]


@dataclass(frozen=True, slots=True)
class _Plan:
    """Index tensors of one forward (built once, used by every layer)."""

    lo: int  # batch rows are slots lo .. lo+B-1 (a view), or `slots` (a gather)
    batch: int
    slots: torch.Tensor | None  # [B] gather index, None for a view
    kv_len: int
    write_slot: torch.Tensor  # [T] per real new token: its slot, position, batch row, column
    write_pos: torch.Tensor
    write_row: torch.Tensor
    write_col: torch.Tensor
    single: tuple[int, int, int] | None  # (slot, start, count) when the batch is one row


class _ArenaView:
    """What the HF attention layers see as the cache of one forward: `update` stores the new
    tokens' K/V in their slots and returns the K/V of the batch's slots (a view of the arena)."""

    def __init__(self, arena: KVArena, plan: _Plan) -> None:
        self.arena, self.plan = arena, plan

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
               ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.plan
        k_all, v_all = self.arena.layer(layer_idx, keys)
        if p.single is not None:  # one row: plain slice copies
            slot, start, count = p.single
            k_all[slot, :, start:start + count] = keys[0, :, :count]
            v_all[slot, :, start:start + count] = values[0, :, :count]
        else:
            k_all[p.write_slot, :, p.write_pos] = keys[p.write_row, :, p.write_col]
            v_all[p.write_slot, :, p.write_pos] = values[p.write_row, :, p.write_col]
        if p.slots is None:
            return k_all[p.lo:p.lo + p.batch, :, :p.kv_len], v_all[p.lo:p.lo + p.batch, :, :p.kv_len]
        return k_all[p.slots, :, :p.kv_len], v_all[p.slots, :, :p.kv_len]


@dataclass(slots=True)
class BatchRunner:
    """Runs rows through a base (headless) decoder model; `head` serves rows that sample."""

    model: torch.nn.Module  # e.g. LlamaModel: returns last_hidden_state
    device: torch.device
    max_rows: int = 64
    head: torch.nn.Module | None = None  # hidden -> vocabulary logits (generators only)
    vocab_size: int = 0
    max_len: int = 1 << 30  # the model's context: the arena never grows past it
    arena: KVArena | None = None
    kv_budget_bytes: int = 0  # the arena's memory budget (engine.kv_cache_mb; 0: none)
    forwards: int = 0
    gathers: int = 0  # forwards whose rows were gathered (not a view of the arena)
    lean: bool = True  # the model's forward as plain torch calls where it can (runtime.engines.torch.lean)
    name: str = "model"
    _decoder: DecoderForward = field(init=False)

    def __post_init__(self) -> None:
        if self.arena is None:
            self.arena = KVArena(self.max_len, self.kv_budget_bytes, self.name)
        self._decoder = decoder_forward(self.model, self.lean, self.name)

    def new_cache(self) -> SeqCache:
        assert self.arena is not None
        return self.arena.new()

    @torch.inference_mode()
    def run(self, rows: list[Row]) -> list[RowOutput]:
        """Per row, in order: hidden states [outputs, hidden], or a Drawn token."""
        results: dict[int, RowOutput] = {}
        for group in self._groups(rows):
            results.update(zip(group, self._forward([rows[i] for i in group])))
        return [results[i] for i in range(len(rows))]

    def _groups(self, rows: list[Row]) -> list[list[int]]:
        """Rows in forwards of at most max_rows, in slot order within each. Rows are taken by
        width and share a forward while its padding (positions past a row's own tokens) stays
        within PAD_SLACK or the real tokens, whichever is more: decode rows go together, steps of
        different lengths go together (a forward's fixed cost outweighs a few padded positions),
        a long prefill does not pad the rows beside it."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].new_ids))
        groups: list[list[int]] = []
        members: list[int] = []
        real = 0
        for i in order:
            assert rows[i].cache.alive, "a row's cache was freed"
            width = len(rows[i].new_ids)  # the widest so far: the group would pad to it
            padding = (len(members) + 1) * width - (real + width)
            if members and (len(members) == self.max_rows or padding > max(PAD_SLACK, real + width)):
                groups.append(members)
                members, real = [], 0
            members.append(i)
            real += width
        if members:
            groups.append(members)
        return [sorted(g, key=lambda i: rows[i].cache.slot) for g in groups]

    def _forward(self, rows: list[Row]) -> list[RowOutput]:
        assert self.arena is not None
        plan, ids, positions, mask, index = self._plan(rows)
        self.arena.reserve(self.arena.live, plan.kv_len)
        self.forwards += 1
        hidden = self._decoder(ids, positions, mask, _ArenaView(self.arena, plan))  # [B, width, hidden]
        for row in rows:
            row.cache.ids.extend(row.new_ids)
        results: list[RowOutput] = [hidden[b, len(r.new_ids) - r.outputs:len(r.new_ids)] for b, r in zip(index, rows)]
        drawing = [i for i, r in enumerate(rows) if r.sample is not None]
        if drawing:
            drawn = self._draw([rows[i] for i in drawing], hidden, [index[i] for i in drawing])
            for i, d in zip(drawing, drawn):
                results[i] = d
        return results

    def _plan(self, rows: list[Row]) -> tuple[_Plan, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Batch layout, ids, positions, mask [B, 1, W, K], and each row's batch index.

        Rows in consecutive slots are the batch as they are (a view of the arena); decode rows
        with up to IDLE_ROWS other slots between them still are, those slots riding along as
        idle rows (a query that sees key 0 only, nothing written: a little compute instead of a
        copy); any other set of rows is gathered (a copy, counted)."""
        assert self.arena is not None
        slot_list = [r.cache.slot for r in rows]
        assert slot_list == sorted(slot_list), "rows come in slot order"
        lo, span, width = slot_list[0], slot_list[-1] - slot_list[0] + 1, max(len(r.new_ids) for r in rows)
        view = span == len(rows) or (width == 1 and span <= len(rows) + IDLE_ROWS)
        index = [s - lo for s in slot_list] if view else list(range(len(rows)))
        batch = span if view else len(rows)
        cached_l, new_l, ids_l = [0] * batch, [0] * batch, [[0] * width for _ in range(batch)]
        writes: list[list[int]] = [[], [], [], []]  # per real new token: slot, position, batch row, column
        for b, r in zip(index, rows):
            c, n = r.cache.length, len(r.new_ids)
            cached_l[b], new_l[b] = c, n
            ids_l[b][:n] = r.new_ids
            writes[0] += [r.cache.slot] * n
            writes[1] += range(c, c + n)
            writes[2] += [b] * n
            writes[3] += range(n)
        kv_len = max(c + n for c, n in zip(cached_l, new_l))
        dev = self.device
        cached = torch.tensor(cached_l, device=dev)
        key = torch.arange(kv_len, device=dev)
        if width == 1 and len(rows) == batch:  # pure decode: query b sits at position cached_b
            positions = cached[:, None]
            mask = (key[None, :] <= positions)[:, None, None, :]
        else:
            query = cached[:, None] + torch.arange(width, device=dev)  # [B, W] positions of the new tokens
            real = torch.arange(width, device=dev) < torch.tensor(new_l, device=dev)[:, None]
            # a padding (or idle) query sees key 0 only, so no softmax row is empty (NaN-free)
            mask = torch.where(real[:, :, None], key <= query[:, :, None], key == 0)[:, None]  # [B, 1, W, K]
            positions = torch.where(real, query, 0)
        w = torch.tensor(writes, device=dev)
        single = (lo, cached_l[0], new_l[0]) if batch == 1 else None
        gather = None if view else torch.tensor(slot_list, device=dev)
        if not view:
            self.gathers += 1
            self.arena.copied_tokens += sum(cached_l) + sum(new_l)  # the gather reads them into a batch
        plan = _Plan(lo, batch, gather, kv_len, w[0], w[1], w[2], w[3], single)
        return plan, torch.tensor(ids_l, device=dev), positions, mask, index

    def _draw(self, rows: list[Row], hidden: torch.Tensor, index: list[int]) -> list[Drawn]:
        """Tokens for sampling rows: one head matmul; greedy rows take one argmax together."""
        assert self.head is not None, "this runner has no output head to sample from"
        if len(rows) == 1:
            last = hidden[index[0], len(rows[0].new_ids) - 1][None]
        else:
            last = hidden[torch.tensor(index), torch.tensor([len(r.new_ids) - 1 for r in rows])]  # [R, hidden]
        logits = self.head(last).float()[:, : self.vocab_size]
        ruled = [i for i, r in enumerate(rows) if r.sample is not None and r.sample.rules is not None]
        if ruled:  # rows with logit rules (penalties, bans, bias) are adjusted one by one
            logits = logits.clone()
            for i in ruled:
                state = rows[i].sample.rules  # type: ignore[union-attr]
                assert state is not None
                logits[i] = state.apply(logits[i])
        drawn: list[Drawn | None] = [None] * len(rows)
        greedy = [i for i, r in enumerate(rows) if r.sample is not None and r.sample.greedy]
        if greedy:
            chosen = logits if len(greedy) == len(rows) else logits[greedy]
            scored = [s.logprobs for i in greedy if (s := rows[i].sample) is not None]
            for i, (token, logprob) in zip(greedy, greedy_tokens(chosen, scored)):
                drawn[i] = Drawn(token, logprob)
        for i, row in enumerate(rows):
            if drawn[i] is None:
                s = row.sample
                assert s is not None
                drawn[i] = Drawn(*sample_token(logits[i], s.temperature, s.top_p, s.generator, s.top_k))
        return [d for d in drawn if d is not None]
