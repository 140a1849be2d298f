"""One batched forward over rows from many sequences: in-flight batching for HF models.

Each row is (cache, new token ids, how many trailing outputs to return). Rows are laid out as
[left-padded cached K/V | left-padded new tokens] and masked with an explicit 4D boolean mask,
so sequences of any cache length and any number of new tokens (prefill and decode) share one
forward. New K/V are appended to each row's own cache afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from runtime.engines.torch.kvcache import SeqCache


@dataclass(slots=True)
class Row:
    cache: SeqCache
    new_ids: list[int]
    outputs: int  # return the final hidden states of the last `outputs` new positions


@dataclass(slots=True)
class BatchRunner:
    """Runs rows through a base (headless) decoder model; heads are applied by the caller."""

    model: torch.nn.Module  # e.g. LlamaModel: returns last_hidden_state and past_key_values
    device: torch.device
    max_rows: int = 64
    prefill_chunk: int = 16  # rows with more new tokens than this run in their own forward

    @torch.inference_mode()
    def run(self, rows: list[Row]) -> list[torch.Tensor]:
        """Hidden states [outputs, hidden] per row, in order."""
        results: dict[int, torch.Tensor] = {}
        for group in self._groups(rows):
            results.update(zip(group, self._forward([rows[i] for i in group])))
        return [results[i] for i in range(len(rows))]

    def _groups(self, rows: list[Row]) -> list[list[int]]:
        """Decode-like rows together (in chunks of max_rows); each long prefill on its own, so
        one long prompt does not pad every other row to its length."""
        short = [i for i, r in enumerate(rows) if len(r.new_ids) <= self.prefill_chunk]
        long = [[i] for i, r in enumerate(rows) if len(r.new_ids) > self.prefill_chunk]
        return [short[i:i + self.max_rows] for i in range(0, len(short), self.max_rows)] + long

    def _forward(self, rows: list[Row]) -> list[torch.Tensor]:
        cached = max(r.cache.length for r in rows)
        width = max(len(r.new_ids) for r in rows)
        ids, positions, mask = self._inputs(rows, cached, width)
        cache = self._padded_cache(rows, cached) if cached else None
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask,
                         past_key_values=cache if cache is not None else DynamicCache(), use_cache=True)
        hidden = out.last_hidden_state
        layers = out.past_key_values.layers
        results = []
        for b, row in enumerate(rows):
            n = len(row.new_ids)
            keys = [layer.keys[b, :, cached + width - n:] for layer in layers]
            values = [layer.values[b, :, cached + width - n:] for layer in layers]
            row.cache.append(list(row.new_ids), keys, values)
            results.append(hidden[b, width - row.outputs:] if row.outputs else hidden[b, :0])
        return results

    def _inputs(self, rows: list[Row], cached: int, width: int) -> tuple[torch.Tensor, ...]:
        batch = len(rows)
        ids = torch.zeros(batch, width, dtype=torch.long)
        positions = torch.zeros(batch, width, dtype=torch.long)
        real = torch.zeros(batch, cached + width, dtype=torch.bool)  # which key slots hold a token
        for b, row in enumerate(rows):
            n, c = len(row.new_ids), row.cache.length
            ids[b, width - n:] = torch.tensor(row.new_ids, dtype=torch.long)
            positions[b, width - n:] = torch.arange(c, c + n)
            real[b, cached - c:cached] = True
            real[b, cached + width - n:] = True
        causal = torch.ones(width, cached + width, dtype=torch.bool).tril(diagonal=cached)
        mask = real[:, None, :] & causal[None]  # [B, Q, K]
        # A padding query attends to itself only, so no softmax row is empty (NaN-free).
        pad_query = ~real[:, cached:]  # [B, Q]
        eye = torch.zeros(width, cached + width, dtype=torch.bool)
        eye[:, cached:] = torch.eye(width, dtype=torch.bool)
        mask = torch.where(pad_query[:, :, None], eye[None], mask)
        return ids.to(self.device), positions.to(self.device), mask[:, None].to(self.device)

    def _padded_cache(self, rows: list[Row], cached: int) -> DynamicCache:
        ref = _some_keys(rows)
        layers = []
        for layer in range(len(ref)):
            shape = (len(rows), ref[layer].shape[0], cached, ref[layer].shape[2])
            keys = torch.zeros(shape, dtype=ref[layer].dtype, device=self.device)
            values = torch.zeros_like(keys)
            for b, row in enumerate(rows):
                if row.cache.length:
                    row.cache.write(layer, keys[b], values[b], cached - row.cache.length, row.cache.length)
            layers.append((keys, values))
        return DynamicCache(ddp_cache_data=layers)


def _some_keys(rows: list[Row]) -> list[torch.Tensor]:
    for row in rows:
        cache = row.cache
        while not cache.keys and cache.base is not None:
            cache = cache.base
        if cache.keys:
            return cache.keys
    raise AssertionError("a row has cached tokens but no stored keys")

