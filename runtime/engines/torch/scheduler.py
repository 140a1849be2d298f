"""In-flight batching: concurrent coroutines submit rows; each forward takes everything pending.

Requests join and leave between forwards. The forward runs in a worker thread so the event loop
keeps serving (Triton's stub loop, the CLI's loop) while the model computes. After a forward the
woken coroutines sample and resubmit before the next forward is formed, so all requests that are
decoding share it.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from runtime.core.errors import EngineError
from runtime.engines.torch.runner import BatchRunner, Row

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    rows: list[Row]
    future: asyncio.Future[list[torch.Tensor]]


@dataclass(slots=True)
class ForwardScheduler:
    runner: BatchRunner
    name: str = "model"
    forwards: int = 0  # forwards run (for tests and logs)
    batched_rows: int = 0
    _pending: list[_Job] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _wakeup: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="forward"))

    async def run(self, rows: list[Row]) -> list[torch.Tensor]:
        """Queue rows for the next forward and wait for their hidden states."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._task is None or self._task.done():
            self._start(loop)
        assert self._wakeup is not None
        future: asyncio.Future[list[torch.Tensor]] = loop.create_future()
        self._pending.append(_Job(rows, future))
        self._wakeup.set()
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending = [job for job in self._pending if not job.future.done()]
        self._wakeup = asyncio.Event()
        self._task = loop.create_task(self._serve(), name=f"forward-{self.name}")

    async def _serve(self) -> None:
        assert self._wakeup is not None and self._loop is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0)  # let coroutines woken by the last forward resubmit first
            jobs = [job for job in self._pending if not job.future.done()]
            self._pending = []
            if not jobs:
                continue
            rows = [row for job in jobs for row in job.rows]
            try:
                hidden = await self._loop.run_in_executor(self._executor, self.runner.run, rows)
            except Exception as exc:  # one failed forward fails its jobs, never the scheduler
                log.exception("forward of %d rows on %s failed", len(rows), self.name)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(EngineError(f"{self.name} forward failed: {exc}"))
                continue
            self.forwards += 1
            self.batched_rows += len(rows)
            start = 0
            for job in jobs:
                part = hidden[start:start + len(job.rows)]
                start += len(job.rows)
                if not job.future.done():
                    job.future.set_result(part)
