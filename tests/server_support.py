"""A supervised real tritonserver for the fault tests (kill -9, restarts): `rsd serve`'s own
Supervisor in a thread, on free ports, with an admin key the tests know."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runtime.config import REPO_ROOT
from runtime.deploy.server import TritonServer, free_ports
from runtime.deploy.supervisor import RestartPolicy, Supervisor

ADMIN_KEY = "test-admin-key"


@dataclass(slots=True)
class Supervised:
    server: TritonServer
    supervisor: Supervisor
    stop: threading.Event
    thread: threading.Thread
    exit_code: list[int]

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until the server answers ready (fails after `timeout_s`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.server.ready():
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"not ready after {timeout_s:g} s")


def render(pipeline: Path, root: Path, **overrides: object) -> tuple[Path, tuple[int, int, int]]:
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository

    ports = tuple(free_ports(3))
    cfg = load_serve_config(REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml").with_overrides(
        pipeline=pipeline, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], **overrides)
    return render_repository(cfg, root / "repo"), ports  # type: ignore[return-value]


@contextmanager
def supervised_server(pipeline: Path, root: Path, grace_s: float = 10.0) -> Iterator[Supervised]:
    repo, (http, grpc, metrics) = render(pipeline, root, sub_request_timeout_s=60.0)
    server = TritonServer(repo, http, grpc, metrics, exit_timeout_s=10, log_file=root / "tritonserver.log",
                          admin_key=ADMIN_KEY)
    supervisor = Supervisor(server, RestartPolicy(max_restarts=3, window_s=600, backoff_s=0.5), grace_s,
                            ready_timeout_s=300, poll_s=0.2)
    stop, started, code = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=lambda: code.append(supervisor.run(stop, on_ready=started.set)), daemon=True)
    thread.start()
    if not started.wait(300):
        stop.set()
        raise TimeoutError("the supervised server did not become ready")
    handle = Supervised(server, supervisor, stop, thread, code)
    try:
        yield handle
    finally:
        stop.set()
        thread.join(120)
        server.kill()
