"""Token-sequence helpers shared by the engines (KV reuse, what a sub-model already holds)."""
from __future__ import annotations

from collections.abc import Sequence


def common_prefix(*seqs: Sequence[int], limit: int | None = None) -> int:
    """Length of the longest prefix all `seqs` share, at most `limit`."""
    n = min(len(s) for s in seqs)
    if limit is not None:
        n = max(min(n, limit), 0)
    first, rest = seqs[0], seqs[1:]
    for i in range(n):
        if any(s[i] != first[i] for s in rest):
            return i
    return n
