"""Hard-timeout sympy comparisons in a small pool of long-lived worker processes.

sympy can run for minutes or forever (`2^{2^{100}}`, nested radicals), and a Python thread
cannot be interrupted mid-bignum, so each comparison runs in a worker process that is killed
when its deadline passes; a timeout counts as not equal (the reference's `pebble` pool, 3 s).
Workers are started once and reused, so 500 answers pay one interpreter start, not 500.

Workers are plain `python -m runtime.eval.symbolic_worker` subprocesses speaking JSON lines,
not `multiprocessing`: no fork of a process that may hold CUDA/threads, and no re-import of
the caller's `__main__` (spawn's requirement of an `if __name__ == "__main__"` guard).
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.core.errors import RsdError

logger = logging.getLogger(__name__)


class SymbolicWorkerError(RsdError):
    """A sympy worker process could not be started."""


@dataclass(frozen=True, slots=True)
class SymbolicJob:
    """One comparison: Python expressions `a` and `b` (from `latex_to_python`)."""

    a: str
    b: str
    negation_ok: bool = False  # equations: `l1-(r1)` may equal `-(l2-(r2))`


class _Worker:
    """One worker subprocess with a line buffer over its stdout."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def fileno(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def start(self, startup_timeout_s: float) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        # The child must import this package exactly as the parent did.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.eval.symbolic_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self._buffer = b""
        if self.read_line(time.monotonic() + startup_timeout_s) != '"ready"':
            self.kill()
            raise SymbolicWorkerError("sympy worker did not start (is sympy installed?)")

    def send(self, job: SymbolicJob, rel_tol: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        line = json.dumps([job.a, job.b, rel_tol, job.negation_ok]) + "\n"
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def read_line(self, deadline: float) -> str | None:
        """The next reply line, or None on timeout or worker death."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self], [], [], remaining)[0]:
                return None
            chunk = os.read(self.fileno(), 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.proc = None


class SymbolicChecker:
    """A pool of sympy workers; `equal_many` runs jobs in parallel, each with its own deadline.

    Thread-safe (one batch at a time). Use as a context manager or call `close()`.
    """

    def __init__(self, workers: int = 1, startup_timeout_s: float = 120.0) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._workers = [_Worker() for _ in range(workers)]
        self._startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()

    def equal(self, job: SymbolicJob, *, rel_tol: float, timeout_s: float) -> bool:
        return self.equal_many([job], rel_tol=rel_tol, timeout_s=timeout_s)[0]

    def equal_many(
        self, jobs: Sequence[SymbolicJob], *, rel_tol: float, timeout_s: float
    ) -> list[bool]:
        """Results in job order; a job past `timeout_s` is False and its worker is replaced."""
        busy: dict[_Worker, tuple[int, float]] = {}
        with self._lock:
            try:
                return self._run(jobs, rel_tol, timeout_s, busy)
            except BaseException:
                for worker in busy:  # an unread reply would be taken as the next job's answer
                    worker.kill()
                raise

    def _run(
        self,
        jobs: Sequence[SymbolicJob],
        rel_tol: float,
        timeout_s: float,
        busy: dict[_Worker, tuple[int, float]],
    ) -> list[bool]:
        """Dispatch to idle workers; `busy` maps a worker to (job index, deadline)."""
        results = [False] * len(jobs)
        pending = deque(range(len(jobs)))
        idle = list(self._workers)
        while pending or busy:
            while pending and idle:
                worker, index = idle.pop(), pending.popleft()
                self._send(worker, jobs[index], rel_tol)
                busy[worker] = (index, time.monotonic() + timeout_s)
            wait_s = max(0.0, min(deadline for _, deadline in busy.values()) - time.monotonic())
            ready = select.select(list(busy), [], [], wait_s)[0]
            for worker in list(busy):
                index, deadline = busy[worker]
                if worker not in ready and time.monotonic() < deadline:
                    continue
                reply = worker.read_line(deadline if worker in ready else 0.0)
                if reply is None:
                    logger.info("sympy comparison timed out after %.1fs: %r", timeout_s,
                                jobs[index])
                    worker.kill()
                results[index] = reply == "true"
                del busy[worker]
                idle.append(worker)
        return results

    def _send(self, worker: _Worker, job: SymbolicJob, rel_tol: float) -> None:
        worker.start(self._startup_timeout_s)
        try:
            worker.send(job, rel_tol)
        except BrokenPipeError:  # the worker died between jobs: one fresh start
            worker.kill()
            worker.start(self._startup_timeout_s)
            worker.send(job, rel_tol)

    def close(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.kill()

    def __enter__(self) -> SymbolicChecker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@functools.lru_cache(maxsize=1)
def default_checker() -> SymbolicChecker:
    """The process-wide checker `answers_equal` uses when given none (started on first use).

    A cached singleton rather than a module global: nothing starts at import, and the worker
    is closed at interpreter exit.
    """
    checker = SymbolicChecker(workers=1)
    atexit.register(checker.close)
    return checker
