"""One readiness and one liveness for the whole of `rsd serve`, on a port of their own (8003).

    GET /ready  200 {"ready": true, ...} when tritonserver is ready, every front `rsd serve` started
                answers (the OpenAI front's /health) and the server is not draining; else 503
                with what is not ready. For a Kubernetes readinessProbe (and startupProbe).
    GET /live   200 while the supervisor's thread runs; 503 once it ended. For a livenessProbe: a
                restart by the supervisor itself (15-45 s on 2 cores, minutes for engines) keeps
                /live at 200 and /ready at 503, so the kubelet lets the supervisor work.

Triton's own /v2/health/ready knows nothing of the fronts, and the OpenAI front's /health nothing
of the draining, so a probe of either alone can route traffic to a replica that cannot serve it.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """An HTTP GET of `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(slots=True)
class Health:
    """What /ready and /live report; the supervisor updates it, probes read it."""

    triton_ready: Callable[[], bool]
    fronts: tuple[tuple[str, str], ...] = ()  # (name, health URL) of every front rsd serve started
    supervisor: threading.Thread | None = None  # /live follows it (None: the calling thread's process)
    serving: bool = False  # the supervisor has a started server (cleared while restarting or draining)
    draining: bool = False

    def ready(self) -> tuple[bool, dict[str, object]]:
        state: dict[str, object] = {"serving": self.serving, "draining": self.draining}
        if not self.serving or self.draining:
            return False, state
        state["tritonserver"] = self.triton_ready()
        for name, url in self.fronts:
            state[name] = answers(url)
        return all(v for k, v in state.items() if k != "draining"), state

    def live(self) -> tuple[bool, dict[str, object]]:
        alive = self.supervisor is None or self.supervisor.is_alive()
        return alive, {"supervisor": alive}


@dataclass(slots=True)
class HealthServer:
    health: Health
    address: str
    port: int
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        health = self.health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                checks = {"/ready": health.ready, "/live": health.live}.get(self.path.split("?")[0])
                if checks is None:
                    self._send(404, {"error": f"unknown path {self.path}; use /ready or /live"})
                    return
                ok, state = checks()
                self._send(200 if ok else 503, {"ok": ok, **state})

            def _send(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: object) -> None:  # probes every few seconds: not logged
                log.debug(fmt, *args)

        self._server = ThreadingHTTPServer((self.address, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
