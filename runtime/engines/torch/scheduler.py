"""In-flight batching: concurrent coroutines submit rows; each forward takes everything pending.

A submitter queues its rows, yields once to the event loop (so every coroutine woken by the
last forward can queue its rows too), and then, unless another submitter already took its rows,
runs one forward over all pending rows itself and hands each job its outputs. The forward runs
inline on the event loop's thread: no per-token thread hop or extra wake-up on the hot path,
and the KV arena is only ever touched from one thread. Requests join and leave between forwards.

A scheduler with `patience` (the PRM's and the target's) batches across requests whose steps
end at different times: while other schedulers of its pipeline (`peers`) still have work
queued, it lets up to `patience` more loop turns pass (each runs their forwards, which end more
steps) before running its own forward, unless `min_rows` rows are already waiting. A lone
request never waits (its other models are idle while it is being scored or rewritten).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from runtime.core.errors import EngineError
from runtime.engines.torch.runner import BatchRunner, Row, RowOutput

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Job:
    rows: list[Row]
    future: asyncio.Future[list[RowOutput]]
    taken: bool = False


@dataclass(slots=True)
class ForwardScheduler:
    runner: BatchRunner
    name: str = "model"
    forwards: int = 0  # model forwards run (for tests, logs and metrics)
    batched_rows: int = 0
    busy_s: float = 0.0  # wall time inside this model's forwards (where a run's time goes)
    patience: int = 0  # loop turns to wait for more rows while peers are busy (0: never wait)
    min_rows: int = 8  # ... unless this many rows are already queued
    peers: list[ForwardScheduler] = field(default_factory=list, repr=False)  # the pipeline's schedulers
    _pending: list[_Job] = field(default_factory=list)

    async def run(self, rows: list[Row]) -> list[RowOutput]:
        """Queue rows for the next forward and wait for their outputs (hidden states or Drawn)."""
        job = _Job(rows, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        try:
            await asyncio.sleep(0)  # let coroutines woken by the last forward queue theirs first
            waited = 0
            while not job.taken and waited < self.patience and self._worth_waiting():
                await asyncio.sleep(0)
                waited += 1
        except BaseException:
            if not job.taken:
                self._pending.remove(job)
            raise
        if not job.taken:
            self._run_pending()
        return await job.future

    def _worth_waiting(self) -> bool:
        queued = sum(len(job.rows) for job in self._pending)
        return queued < self.min_rows and any(peer._pending for peer in self.peers if peer is not self)

    def _run_pending(self) -> None:
        jobs = [job for job in self._pending if not job.future.done()]
        self._pending = []
        for job in jobs:
            job.taken = True
        rows = [row for job in jobs for row in job.rows]
        before, started = self.runner.forwards, time.perf_counter()
        try:
            outputs = self.runner.run(rows)
        except Exception as exc:  # one failed forward fails its jobs, never the scheduler
            log.exception("forward of %d rows on %s failed", len(rows), self.name)
            for job in jobs:
                job.future.set_exception(EngineError(f"{self.name} forward failed: {exc}"))
            return
        self.forwards += self.runner.forwards - before
        self.busy_s += time.perf_counter() - started
        self.batched_rows += len(rows)
        start = 0
        for job in jobs:
            job.future.set_result(outputs[start:start + len(job.rows)])
            start += len(job.rows)
