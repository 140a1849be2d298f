"""`rsd serve`'s supervisor: run tritonserver, watch it and its model stubs, restart, drain.

Triton 2.51's Python backend does not notice a dead stub: readiness stays 200 while requests to
the model hang or fail ("Stub process ... is not healthy"). So the supervisor watches the server
process and every stub the repository should run (`poll_s`, the stubs looked up again at every
poll, so one that died early or was replaced is seen); when one is missing it kills the whole
server at once (every in-flight request's connection closes: its client gets an error instead of
a hang, and the ports stop answering, so readiness probes fail), then starts a fresh server after
a backoff. After `max_restarts` restarts within `window_s` it gives up and returns 1, so an
orchestrator (systemd `Restart=on-failure`, Kubernetes) takes over. Sidecars (the OpenAI front)
restart with their own backoff and limit; past it `run` returns 1 too. SIGTERM/SIGINT drain: no
new requests (they get UNAVAILABLE), in-flight ones get `grace_s` to finish; then the ones still
running fail at their next step (the abort flag), and the server stops; `run` returns 0.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from runtime.core.errors import ConfigError, EngineError
from runtime.deploy.health import Health, answers
from runtime.deploy.processes import die_with_parent, expected_stubs, process_alive, stub_processes
from runtime.deploy.server import TritonServer

log = logging.getLogger("rsd.serve")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 600.0
    backoff_s: float = 1.0  # doubled after each restart in the window, up to max_backoff_s
    max_backoff_s: float = 30.0

    def delay(self, recent: int) -> float:
        return min(self.backoff_s * 2 ** recent, self.max_backoff_s)


@dataclass(slots=True)
class Restarts:
    """Restarts within a sliding window: how long to wait before the next, or None (give up)."""

    policy: RestartPolicy
    _times: collections.deque[float] = field(default_factory=collections.deque)

    def next_delay(self, now: float) -> float | None:
        while self._times and now - self._times[0] > self.policy.window_s:
            self._times.popleft()
        if len(self._times) >= self.policy.max_restarts:
            return None
        return self.policy.delay(len(self._times))

    def record(self, now: float) -> None:
        self._times.append(now)

    def __len__(self) -> int:
        return len(self._times)


@dataclass(slots=True)
class Sidecar:
    """A process that serves beside tritonserver (the OpenAI-compatible front): started once the
    server is first ready, restarted with backoff when it exits (its log file is opened per start
    and closed in this process at once), killed with `rsd serve`, stopped last."""

    name: str
    command: tuple[str, ...]
    log_file: Path | None = None
    health_url: str = ""  # answers 200 once it serves ("" : it is up once started)
    env: tuple[tuple[str, str], ...] = ()  # added to rsd serve's environment
    policy: RestartPolicy = RestartPolicy(max_restarts=5, window_s=600.0, backoff_s=0.5)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _restarts: Restarts | None = None
    _due: float = 0.0  # when the next start may happen (monotonic)

    def ensure(self) -> str | None:
        """Start or restart it when due; a failure description once restarts ran out."""
        if self.proc is not None and self.proc.poll() is None:
            return None
        now = time.monotonic()
        if self.proc is not None:  # it exited: schedule a restart after a backoff
            restarts = self._restarts = self._restarts or Restarts(self.policy)
            delay = restarts.next_delay(now)
            if delay is None:
                return (f"{self.name} exited with code {self.proc.returncode} after {len(restarts)} restarts in "
                        f"{self.policy.window_s:g} s")
            log.error("rsd serve: %s exited with code %s; starting it again in %g s", self.name,
                      self.proc.returncode, delay)
            restarts.record(now)
            self.proc, self._due = None, now + delay
        if now < self._due:
            return None
        with open(self.log_file, "ab") if self.log_file else open(os.devnull, "wb") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent(), env={**os.environ, **dict(self.env)})
        self.starts += 1
        return None

    def healthy(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and (not self.health_url or answers(self.health_url))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class GiveUp(Exception):
    """A sidecar ran out of restarts: `rsd serve` exits 1 for its orchestrator."""


@dataclass(slots=True)
class Supervisor:
    server: TritonServer
    policy: RestartPolicy = RestartPolicy()
    grace_s: float = 30.0
    ready_timeout_s: float = 180.0
    poll_s: float = 0.5
    sidecars: tuple[Sidecar, ...] = ()
    abort_wait_s: float = 15.0  # after the grace: how long running requests get to fail at their next step
    sidecar_ready_timeout_s: float = 120.0  # how long a started sidecar gets to answer its health URL
    health: Health | None = None  # what the health port reports (runtime.deploy.health)
    # The BLS's in-flight gauge lags by up to one metrics flush (runtime.in_server.metrics.BufferedFactory,
    # 0.25 s): a drain that began right after requests arrived read 0 and stopped the server under them.
    settle_s: float = 0.6
    restarts: int = 0  # how many times the server was restarted (for tests and logs)

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> int:
        """Serve until `stop` is set (drain, return 0) or restarts run out (return 1)."""
        try:
            return self._run(stop, on_ready)
        except GiveUp as exc:
            log.error("rsd serve: %s; exiting 1 (let the orchestrator restart the service)", exc)
            self.server.kill()
            return 1
        finally:
            for sidecar in self.sidecars:
                sidecar.stop()

    def _run(self, stop: threading.Event, on_ready: Callable[[], None] | None) -> int:
        restarts = Restarts(self.policy)
        while True:
            failure = self._start()
            if failure is None:
                failure = self._start_sidecars(stop)
            if failure is None:
                self._set(serving=True)
                if on_ready is not None:
                    on_ready()
                failure = self._watch(stop)
            self._set(serving=False)
            if failure is None:
                self._drain()
                return 0
            self.server.kill()
            delay = restarts.next_delay(time.monotonic())
            if delay is None:
                log.error("rsd serve: %s; giving up after %d restarts in %g s (exit 1: let the orchestrator "
                          "restart the service)", failure, len(restarts), self.policy.window_s)
                return 1
            log.error("rsd serve: %s; killed tritonserver, restarting in %g s (restart %d of at most %d in %g s)",
                      failure, delay, len(restarts) + 1, self.policy.max_restarts, self.policy.window_s)
            if stop.wait(delay):
                return 0
            restarts.record(time.monotonic())
            self.restarts += 1

    def _start(self) -> str | None:
        try:
            self.server.start(self.ready_timeout_s)
        except (EngineError, ConfigError) as exc:
            return f"tritonserver did not start: {exc}"
        return None

    def _ensure_sidecars(self) -> None:
        for sidecar in self.sidecars:
            failure = sidecar.ensure()
            if failure is not None:
                raise GiveUp(failure)

    def _start_sidecars(self, stop: threading.Event) -> str | None:
        """Start the sidecars and wait until each answers its health URL: `rsd serve` says it serves,
        and /ready turns 200, only when every front answers."""
        deadline = time.monotonic() + self.sidecar_ready_timeout_s
        while not stop.is_set():
            self._ensure_sidecars()
            if all(s.healthy() for s in self.sidecars):
                return None
            if time.monotonic() > deadline:
                late = [s.name for s in self.sidecars if not s.healthy()]
                return f"{', '.join(late)} did not answer within {self.sidecar_ready_timeout_s:g} s"
            stop.wait(0.25)
        return None

    def _set(self, serving: bool) -> None:
        if self.health is not None:
            self.health.serving = serving


    def _watch(self, stop: threading.Event) -> str | None:
        """Block until a failure (its description) or `stop` (None)."""
        proc = self.server.proc
        assert proc is not None, "started"
        expected = expected_stubs(self.server.repo)
        stubs = stub_processes(proc.pid)
        log.info("watching tritonserver (pid %d) and %d model stubs: %s", proc.pid, len(stubs),
                 ", ".join(f"{m} (pid {p})" for p, m in sorted(stubs.items(), key=lambda kv: kv[1])))
        while not stop.wait(self.poll_s):
            if proc.poll() is not None:
                return f"tritonserver (pid {proc.pid}) exited with code {proc.returncode}"
            missing = _missing_stub(expected, stubs, stub_processes(proc.pid))
            if missing is not None:
                return missing
            self._ensure_sidecars()
        return None

    def _drain(self) -> None:
        if self.health is not None:
            self.health.draining = True
        self.server.begin_drain()
        deadline = time.monotonic() + self.grace_s
        time.sleep(min(self.settle_s, self.grace_s))
        left = self._wait_in_flight(deadline)
        if left:
            log.warning("draining: %d request(s) still running after %g s; they fail at their next step",
                        left, self.grace_s)
            self.server.abort_drain()
            left = self._wait_in_flight(time.monotonic() + self.abort_wait_s)
        self.server.stop()

    def _wait_in_flight(self, deadline: float) -> int | None:
        left = self.server.in_flight()
        if left:
            log.info("draining: %d request(s) in flight, waiting up to %.0f s", left, deadline - time.monotonic())
        while left and time.monotonic() < deadline and self.server.proc is not None \
                and self.server.proc.poll() is None:
            time.sleep(0.1)
            left = self.server.in_flight()
        return left


def _missing_stub(expected: dict[str, int], seen: dict[int, str], now: dict[int, str]) -> str | None:
    """A description of the first stub that died or is missing (None: all run)."""
    for pid, model in seen.items():
        if pid not in now or not process_alive(pid):
            return f"the stub of model '{model}' (pid {pid}) died"
    for model, count in expected.items():
        running = sum(1 for pid, m in now.items() if m == model and process_alive(pid))
        if running < count:
            return f"model '{model}' runs {running} of its {count} stub(s)"
    return None


@contextmanager
def supervised(supervisor: Supervisor, start_timeout_s: float = 300.0) -> Iterator[Supervisor]:
    """`supervisor.run` in a thread, as `rsd serve` runs it, for scripts (soak, curve): yields once
    the server serves (TimeoutError naming its log if it does not); on exit drains and stops it and
    kills whatever is left."""
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop, ready.set), daemon=True)
    thread.start()
    try:
        if not ready.wait(start_timeout_s):
            raise TimeoutError(f"the server did not start within {start_timeout_s:g} s; see {supervisor.server.log_file}")
        yield supervisor
    finally:
        stop.set()
        thread.join(120)
        supervisor.server.kill()
