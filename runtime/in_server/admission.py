"""Admission control of the `rsd` BLS: how many rows (step loops) run at once.

Every running row holds a session, its KV cache, in each torch sub-model, and a sub-model keeps
`cache_requests` of them: past that it would have to close the caches of live requests. So the
BLS runs at most `capacity` rows; the rest wait in Triton's own queue, where the BLS's config
bounds them (`dynamic_batching.default_queue_policy`: `max_queue_size`, and a timeout after which
a waiting request is rejected). Both rejections come from Triton core: gRPC UNAVAILABLE, HTTP 503
on /infer and /generate ("Exceeds maximum queue size", "Request timeout expired"), and Triton
counts them (`nv_inference_request_failure`); `nv_inference_pending_request_count` is the queue depth.

That works because `execute` blocks while the BLS is full (`Admission.acquire`), so Triton keeps
the requests in its queue. A request already handed to `execute` (one dynamic batch, at most
max_batch_size rows) waits here, up to the same timeout, and is refused with `Overloaded` past
it. A request that was admitted runs to its end: nothing here fails a request half-way.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from runtime.core.errors import Overloaded


@dataclass(slots=True)
class Admission:
    capacity: int  # rows running at once
    max_wait_s: float  # how long a request handed to execute may wait for room
    running: int = 0
    waiting: int = 0  # requests in execute waiting for room (Triton's queue holds the others)
    rejected: int = 0  # requests refused here (Triton counts the ones its queue refuses)
    _room: threading.Condition = field(default_factory=threading.Condition)

    def acquire(self, rows: int, deadline: float) -> int:
        """Block until `rows` rows fit (a request wider than the capacity takes all of it), then hold
        them; the rows held, for `release`. Past `deadline` (time.monotonic) raise Overloaded."""
        rows = min(rows, self.capacity)
        with self._room:
            self.waiting += 1
            try:
                fits = self._room.wait_for(lambda: self.running + rows <= self.capacity,
                                           max(0.0, deadline - time.monotonic()))
            finally:
                self.waiting -= 1
            if not fits:
                self.rejected += 1
                raise Overloaded(f"the server is at capacity ({self.running} of {self.capacity} rows running) "
                                 f"and the request waited {self.max_wait_s:g} s", retry_after_s=1.0)
            self.running += rows
        return rows

    def release(self, rows: int) -> None:
        with self._room:
            self.running -= rows
            assert self.running >= 0, self.running
            self._room.notify_all()
