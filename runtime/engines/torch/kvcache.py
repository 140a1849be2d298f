"""Per-model KV storage without per-forward copies: one preallocated arena, one slot per sequence.

Layout per layer: keys/values [slots, kv_heads, capacity, head_dim]. Each live sequence (one per
request and model, plus short-lived forks for candidates) owns one slot (a row of the arena) and
its tokens fill positions [0, length) of that row, so a batch of sequences in consecutive slots
is a view of the arena (`BatchRunner` then attends on it in place). Live slots are kept compact
(0 .. live-1: freeing a slot moves the last sequence into it), so the sequences of concurrent
requests are usually consecutive. Capacities double when exceeded (amortised O(1) per token).

Copies happen only where data must be duplicated: a fork copies its parent's prefix once,
freeing moves one sequence, growth moves everything once per doubling, and a batch of
non-consecutive slots is gathered (counted in `copied_tokens`, which tests read).

The arena has a memory budget (`budget_bytes`, engine.kv_cache_mb): growth is capped to it and a
forward that needs more than the budget fails with an EngineError naming the setting, instead of
the process growing until the OOM killer takes the whole server down.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runtime.core.errors import EngineError
from runtime.core.tokens import common_prefix


@dataclass(eq=False, slots=True)
class SeqCache:
    """One sequence's cached tokens: ids here, K/V in its arena slot."""

    arena: KVArena
    slot: int  # -1 once freed
    ids: list[int] = field(default_factory=list)  # tokens whose K/V are stored, in order

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def alive(self) -> bool:
        return self.slot >= 0

    def crop(self, length: int) -> None:
        """Forget everything after `length` tokens (their K/V are overwritten later)."""
        assert 0 <= length <= self.length, (length, self.length)
        del self.ids[length:]

    def reuse(self, ids: list[int] | tuple[int, ...], keep_new: int = 0) -> None:
        """Crop to the longest common prefix with `ids`, leaving at least `keep_new` of them to run."""
        self.crop(common_prefix(self.ids, ids, limit=len(ids) - keep_new))

    def fork(self) -> SeqCache:
        """A new sequence starting with a copy of this one's cached tokens."""
        child = self.arena.new()
        self.arena.copy(self, child)
        return child

    def free(self) -> None:
        if self.alive:
            self.arena.free(self)


@dataclass(eq=False, slots=True)
class KVArena:
    max_len: int = 1 << 30  # capacity never grows past this (the model's context)
    budget_bytes: int = 0  # K and V of every layer together never exceed this (0: no budget)
    name: str = "model"
    keys: list[torch.Tensor] = field(default_factory=list)  # per layer [slot_cap, H, len_cap, D]
    values: list[torch.Tensor] = field(default_factory=list)
    slot_cap: int = 0
    len_cap: int = 0
    owners: list[SeqCache] = field(default_factory=list)  # slot -> its sequence (live slots only)
    copied_tokens: int = 0  # token positions copied between slots (forks, frees, gathers, growth)

    @property
    def live(self) -> int:
        return len(self.owners)

    def new(self) -> SeqCache:
        cache = SeqCache(self, len(self.owners))
        self.owners.append(cache)
        self.reserve(len(self.owners), 0)
        return cache

    def free(self, cache: SeqCache) -> None:
        """Release a slot; the last live sequence moves into it, so live slots stay 0 .. live-1."""
        slot, last = cache.slot, self.owners[-1]
        assert self.owners[slot] is cache
        if last is not cache:
            self._move(last.slot, slot, last.length)
            last.slot = slot
            self.owners[slot] = last
        self.owners.pop()
        cache.slot = -1

    def copy(self, src: SeqCache, dst: SeqCache) -> None:
        self._move(src.slot, dst.slot, src.length)
        dst.ids = list(src.ids)

    @torch.inference_mode()
    def reserve(self, slots: int, length: int) -> None:
        """Make room for `slots` sequences of `length` tokens (growth copies the arena once)."""
        if slots <= self.slot_cap and length <= self.len_cap:
            return
        slot_cap = max(slots, 2 * self.slot_cap, 4) if slots > self.slot_cap else self.slot_cap
        len_cap = self.len_cap
        if length > self.len_cap:
            len_cap = max(length, min(max(2 * self.len_cap, 64), self.max_len))
        slot_cap, len_cap = self._within_budget(slots, length, slot_cap, len_cap)
        used = max((c.length for c in self.owners), default=0)
        rows = min(self.live, self.slot_cap)
        for store in (self.keys, self.values):
            for layer, old in enumerate(store):
                new = old.new_zeros(slot_cap, old.shape[1], len_cap, old.shape[3])
                new[:rows, :, :used] = old[:rows, :, :used]
                store[layer] = new
        if self.keys:
            self.copied_tokens += rows * used
        self.slot_cap, self.len_cap = slot_cap, len_cap

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for store in (self.keys, self.values) for t in store)

    def _within_budget(self, slots: int, length: int, slot_cap: int, len_cap: int) -> tuple[int, int]:
        """The grown capacities, cut back to the budget (doubling is amortisation, not a need); an
        EngineError when even `slots` x `length` do not fit."""
        if not self.budget_bytes or not self.keys:  # before the first forward: nothing allocated yet
            return slot_cap, len_cap
        k = self.keys[0]
        per_position = 2 * len(self.keys) * k.shape[1] * k.shape[3] * k.element_size()
        if slot_cap * len_cap * per_position <= self.budget_bytes:
            return slot_cap, len_cap
        need_slots, need_len = max(slots, self.slot_cap), max(length, self.len_cap)
        if need_slots * need_len * per_position > self.budget_bytes:
            raise EngineError(
                f"{self.name}: the KV cache would need {need_slots * need_len * per_position / 2**20:.0f} MiB for "
                f"{need_slots} sequences of {need_len} tokens, over its budget of {self.budget_bytes / 2**20:.0f} MiB "
                f"(engine.kv_cache_mb); lower admission.max_running_rows or raise the budget")
        if slot_cap * len_cap * per_position > self.budget_bytes:
            slot_cap = max(need_slots, min(slot_cap, self.budget_bytes // (per_position * len_cap)))
        if slot_cap * len_cap * per_position > self.budget_bytes:
            len_cap = max(need_len, min(len_cap, self.budget_bytes // (per_position * slot_cap)))
        return slot_cap, len_cap

    def layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s K/V storage, allocated on first use with `like`'s heads, dim, dtype
        (called per layer per forward: the usual case returns before any context manager)."""
        if index < len(self.keys):
            return self.keys[index], self.values[index]
        return self._allocate(index, like)

    @torch.inference_mode()
    def _allocate(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.keys) <= index:
            shape = (self.slot_cap, like.shape[1], self.len_cap, like.shape[3])
            self.keys.append(like.new_zeros(shape))
            self.values.append(like.new_zeros(shape))
        return self.keys[index], self.values[index]

    @torch.inference_mode()  # the arena's tensors are inference tensors (made in the forward)
    def _move(self, src: int, dst: int, length: int) -> None:
        if not length:
            return
        for k, v in zip(self.keys, self.values):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]
        if self.keys:
            self.copied_tokens += length
