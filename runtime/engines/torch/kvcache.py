"""Per-sequence KV storage. One `SeqCache` per (request, model); forks share the parent's prefix.

Layout per layer: keys/values [kv_heads, capacity, head_dim], filled left to right; capacity
doubles as it grows, so appending a token does not copy the whole cache each time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class SeqCache:
    ids: list[int] = field(default_factory=list)  # tokens whose K/V are stored (own + base prefix)
    keys: list[torch.Tensor] = field(default_factory=list)  # per layer [H, cap, D] (own part)
    values: list[torch.Tensor] = field(default_factory=list)
    base: SeqCache | None = None  # shared prefix (read-only while this fork lives)
    base_len: int = 0

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def own_len(self) -> int:
        return len(self.ids) - self.base_len

    def fork(self) -> SeqCache:
        """A child sharing this cache's current contents; the child appends into its own storage."""
        return SeqCache(ids=list(self.ids), base=self, base_len=self.length)

    def crop(self, length: int) -> None:
        """Forget everything after `length` tokens (for a fork, not below its base)."""
        assert self.base_len <= length <= self.length, (self.base_len, length, self.length)
        del self.ids[length:]

    def reuse(self, ids: list[int] | tuple[int, ...], keep_new: int = 0) -> None:
        """Crop to the longest common prefix with `ids`, leaving at least `keep_new` of them to run."""
        limit = min(self.length, len(ids) - keep_new)
        common = 0
        while common < limit and self.ids[common] == ids[common]:
            common += 1
        self.crop(common)

    def append(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Append K/V for `ids`; keys[l] is [H, len(ids), D]."""
        start, need = self.own_len, self.own_len + len(ids)
        if not self.keys:
            self.keys = [torch.empty(k.shape[0], max(need, 16), k.shape[2], dtype=k.dtype, device=k.device) for k in keys]
            self.values = [torch.empty_like(k) for k in self.keys]
        elif need > self.keys[0].shape[1]:
            cap = max(need, 2 * self.keys[0].shape[1])
            self.keys = [_grow(k, cap, start) for k in self.keys]
            self.values = [_grow(v, cap, start) for v in self.values]
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.keys[layer][:, start:need] = k
            self.values[layer][:, start:need] = v
        self.ids.extend(ids)

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor, start: int, length: int) -> None:
        """Copy the first `length` cached positions of `layer` into keys/values[:, start:start+length]."""
        from_base = min(length, self.base_len)
        if self.base is not None and from_base:
            self.base.write(layer, keys, values, start, from_base)
        own = length - from_base
        if own > 0:
            keys[:, start + from_base:start + length] = self.keys[layer][:, :own]
            values[:, start + from_base:start + length] = self.values[layer][:, :own]


def _grow(t: torch.Tensor, cap: int, used: int) -> torch.Tensor:
    out = torch.empty(t.shape[0], cap, t.shape[2], dtype=t.dtype, device=t.device)
    out[:, :used] = t[:, :used]
    return out
