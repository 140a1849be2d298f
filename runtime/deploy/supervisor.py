"""`rsd serve`'s supervisor: run tritonserver, watch it and its model stubs, restart, drain.

Triton 2.51's Python backend does not notice a dead stub: readiness stays 200 while requests to
the model hang or fail ("Stub process ... is not healthy"). So the supervisor watches the server
process and every stub (`poll_s`); when one dies it kills the whole server at once (every
in-flight request's connection closes: its client gets an error instead of a hang, and the
ports stop answering, so readiness probes fail), then starts a fresh server after a backoff.
After `max_restarts` restarts within `window_s` it gives up and returns 1, so an orchestrator
(systemd `Restart=on-failure`, Kubernetes) takes over. SIGTERM/SIGINT drain: no new requests
(they get UNAVAILABLE), in-flight ones get `grace_s` to finish, then the server stops (the
ones still running get an error) and `run` returns 0.
"""
from __future__ import annotations

import collections
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.core.errors import ConfigError, EngineError
from runtime.deploy.server import TritonServer, process_alive, stub_processes

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
class Sidecar:
    """A process that serves beside tritonserver (the OpenAI-compatible front): started once the
    server is first ready, restarted when it exits, stopped last."""

    name: str
    command: tuple[str, ...]
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            log.error("rsd serve: %s exited with code %s; starting it again", self.name, self.proc.returncode)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(slots=True)
class Supervisor:
    server: TritonServer
    policy: RestartPolicy = RestartPolicy()
    grace_s: float = 30.0
    ready_timeout_s: float = 180.0
    poll_s: float = 0.5
    sidecars: tuple[Sidecar, ...] = ()
    restarts: int = 0  # how many times the server was restarted (for tests and logs)

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> int:
        """Serve until `stop` is set (drain, return 0) or restarts run out (return 1)."""
        try:
            return self._run(stop, on_ready)
        finally:
            for sidecar in self.sidecars:
                sidecar.stop()

    def _run(self, stop: threading.Event, on_ready: Callable[[], None] | None) -> int:
        recent: collections.deque[float] = collections.deque()
        while True:
            failure = self._start()
            if failure is None:
                for sidecar in self.sidecars:
                    sidecar.ensure()
                if on_ready is not None:
                    on_ready()
                failure = self._watch(stop)
            if failure is None:
                self._drain()
                return 0
            self.server.kill()
            now = time.monotonic()
            while recent and now - recent[0] > self.policy.window_s:
                recent.popleft()
            if len(recent) >= self.policy.max_restarts:
                log.error("rsd serve: %s; giving up after %d restarts in %g s (exit 1: let the orchestrator "
                          "restart the service)", failure, len(recent), self.policy.window_s)
                return 1
            delay = self.policy.delay(len(recent))
            log.error("rsd serve: %s; killed tritonserver, restarting in %g s (restart %d of at most %d in %g s)",
                      failure, delay, len(recent) + 1, self.policy.max_restarts, self.policy.window_s)
            if stop.wait(delay):
                return 0
            recent.append(time.monotonic())
            self.restarts += 1

    def _start(self) -> str | None:
        try:
            self.server.start(self.ready_timeout_s)
        except (EngineError, ConfigError) as exc:
            return f"tritonserver did not start: {exc}"
        return None

    def _watch(self, stop: threading.Event) -> str | None:
        """Block until a failure (its description) or `stop` (None)."""
        proc = self.server.proc
        assert proc is not None, "started"
        stubs = stub_processes(proc.pid)
        log.info("watching tritonserver (pid %d) and %d model stubs: %s", proc.pid, len(stubs),
                 ", ".join(f"{m} (pid {p})" for p, m in sorted(stubs.items(), key=lambda kv: kv[1])))
        while not stop.wait(self.poll_s):
            if proc.poll() is not None:
                return f"tritonserver (pid {proc.pid}) exited with code {proc.returncode}"
            for pid, model in stubs.items():
                if not process_alive(pid):
                    return f"the stub of model '{model}' (pid {pid}) died"
            for sidecar in self.sidecars:
                sidecar.ensure()
        return None

    def _drain(self) -> None:
        self.server.begin_drain()
        deadline = time.monotonic() + self.grace_s
        left = self.server.in_flight()
        if left:
            log.info("draining: %d request(s) in flight, waiting up to %g s", left, self.grace_s)
        while left and time.monotonic() < deadline and self.server.proc is not None \
                and self.server.proc.poll() is None:
            time.sleep(0.2)
            left = self.server.in_flight()
        if left:
            log.warning("draining: %d request(s) still running after %g s; they get an error", left, self.grace_s)
        self.server.stop()
