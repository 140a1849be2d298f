"""Start and stop a real `tritonserver` on a rendered model repository.

CPU: the Triton 2.51.0 binary bundled in the `nvidia-pytriton` wheel (scripts/setup.sh puts the
python-backend stub in place). The environment makes the stub's embedded Python this venv's:
PATH starts with the venv's bin (the stub reads that python's pyvenv.cfg), LD_LIBRARY_PATH has
the interpreter's LIBDIR (libpython), PYTHONPATH has this checkout (the `runtime` package).
GPU: the same repository in the NGC container, see `container_command`; inside an NGC container
(no pytriton) the container's own /opt/tritonserver is used. The `trtllm` layout adds a launcher
prefix, environment and flags for TensorRT-LLM's orchestrator mode (runtime/deploy/trtllm_launch.py).
Each server gets its own python-backend shared-memory prefix so `stop` can remove exactly its
/dev/shm regions if an unclean exit left them behind.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.config import REPO_ROOT
from runtime.core.errors import ConfigError, EngineError
from runtime.deploy.processes import SHM_PREFIX, die_with_parent, remove_stale_shm, stub_processes
from runtime.wire.model_env import ABORT_SUFFIX, DRAIN_ENV, INFER_AUTH_ENV, TOKEN_ENV, URL_ENV

log = logging.getLogger(__name__)

NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-pyt-python-py3"  # Triton 2.51 + PyTorch, = the CPU binary
SYSTEM_TRITON = Path("/opt/tritonserver")  # where the NGC containers install Triton


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (for tests and the demo; a race with other processes
    is possible but harmless there: the server then fails to start, loudly)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


ADMIN_HEADER = "rsd-admin-key"
GRPC_PREFIX = "triton-grpc-protocol-"  # Triton matches a restricted API's gRPC metadata key with this prefix
GRPC_ADMIN_HEADER = f"{GRPC_PREFIX}{ADMIN_HEADER}"
# Closed always: these APIs answer only requests with the admin key header (load/unload, which can
# load code; shared-memory registration; trace and log settings).
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
# Read-only (model config, model and server metadata, statistics): what perf_analyzer, genai-perf,
# Model Analyzer and tritonclient's get_model_config need. Open on loopback; keyed too when the
# server binds beyond it, unless opened explicitly (`rsd serve --open-read-apis`).
READ_APIS = ("model-config", "metadata", "statistics")
# With an API key (`rsd serve --api-key`), inference (infer, generate, streams) needs
# `authorization: Bearer KEY` (gRPC metadata: triton-grpc-protocol-authorization); health and metrics stay open.
API_KEY_HEADER = "authorization"


def is_loopback(address: str) -> bool:
    return address in ("127.0.0.1", "::1", "localhost") or address.startswith("127.")


def restricted_api_flags(admin_key: str, address: str = "127.0.0.1", open_read_apis: bool = False,
                         api_key: str = "") -> list[str]:
    """Triton's --http-restricted-api / --grpc-restricted-protocol groups (a category may be in one only)."""
    admin = list(ADMIN_APIS) + ([] if open_read_apis or is_loopback(address) else list(READ_APIS))
    groups = [(",".join(admin), ADMIN_HEADER, admin_key)]
    if api_key:
        groups.append(("inference", API_KEY_HEADER, f"Bearer {api_key}"))
    return [f"--{flag}={apis}:{header}={value}" for apis, header, value in groups
            for flag in ("http-restricted-api", "grpc-restricted-protocol")]


def check_ports(address: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    """A ConfigError naming the flag of the first port something already listens on."""
    for flag, port in (("--http-port", http_port), ("--grpc-port", grpc_port), ("--metrics-port", metrics_port)):
        if not port_is_free(address, port):
            raise ConfigError(flag, f"{address}:{port} is not free; is another server running? pick another port")


def port_is_free(address: str, port: int) -> bool:
    """Nothing listens on address:port (the TIME_WAIT connections of a killed server are fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class TritonInstall:
    binary: Path
    backends: Path
    caches: Path

    @classmethod
    def find(cls) -> TritonInstall:
        """The NGC container's Triton when there is one (it has the GPU backends), else pytriton's."""
        system = cls(SYSTEM_TRITON / "bin" / "tritonserver", SYSTEM_TRITON / "backends", SYSTEM_TRITON / "caches")
        if system.binary.is_file():
            return system
        try:
            import pytriton
        except ImportError as exc:
            raise ConfigError("tritonserver", "nvidia-pytriton is not installed; run scripts/setup.sh") from exc
        root = Path(pytriton.__file__).parent / "tritonserver"
        install = cls(root / "bin" / "tritonserver", root / "backends", root / "caches")
        if not install.binary.is_file():
            raise ConfigError("tritonserver", f"{install.binary} is missing")
        if not (install.backends / "python" / "triton_python_backend_stub").is_file():
            raise ConfigError("tritonserver", "the python backend stub is not in place; run scripts/setup.sh")
        return install


@dataclass(slots=True)
class TritonServer:
    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"
    exit_timeout_s: int = 30
    log_file: Path | None = None
    extra_args: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()  # e.g. mpirun -n 1 (TensorRT-LLM orchestrator mode)
    extra_env: tuple[tuple[str, str], ...] = ()
    # Key of the restricted admin APIs (header ADMIN_HEADER); by default a random one nobody knows.
    admin_key: str = field(default_factory=lambda: secrets.token_hex(16))
    open_read_apis: bool = False  # beyond loopback, leave model config / metadata / statistics open
    api_key: str = ""  # inference needs `authorization: Bearer KEY` ("" : open)
    proc: subprocess.Popen[bytes] | None = None
    shm_prefix: str = field(default_factory=lambda: f"{SHM_PREFIX}{os.getpid()}x{time.monotonic_ns() % 10**6}_")
    # The BLS sends this with each sub-request; sub-models refuse requests without it.
    internal_token: str = field(default_factory=lambda: secrets.token_hex(16))
    drain_file: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / f"rsd-drain-{secrets.token_hex(8)}")

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    def command(self, install: TritonInstall) -> list[str]:
        return [
            *self.launcher, str(install.binary), f"--model-repository={self.repo}", f"--backend-directory={install.backends}",
            f"--cache-directory={install.caches}", "--model-control-mode=none",
            *restricted_api_flags(self.admin_key, self.address, self.open_read_apis, self.api_key),
            "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={self.address}", f"--grpc-address={self.address}", f"--metrics-address={self.address}",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}", *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env[TOKEN_ENV] = self.internal_token
        loopback = "127.0.0.1" if self.address in ("0.0.0.0", "::", "") else self.address
        env[URL_ENV] = f"{loopback}:{self.grpc_port}"  # the BLS reaches the sub-models here
        env[DRAIN_ENV] = str(self.drain_file)
        if self.api_key:
            env[INFER_AUTH_ENV] = f"Bearer {self.api_key}"
        env.update(self.extra_env)
        return env

    def check_ports(self) -> None:
        """Fail before starting when a port is taken: another server would answer our readiness probe."""
        check_ports(self.address, self.http_port, self.grpc_port, self.metrics_port)

    def processes(self) -> dict[str, int]:
        """The server's processes: 'tritonserver' and one entry per model stub ('stub:<model>')."""
        if self.proc is None:
            return {}
        return {"tritonserver": self.proc.pid, **{f"stub:{m}": pid for pid, m in stub_processes(self.proc.pid).items()}}

    def kill(self) -> None:
        """SIGKILL the whole process group (server and stubs) at once: for a server that is broken."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.remove_shm()

    def begin_drain(self) -> None:
        """New requests now get UNAVAILABLE ("shutting down"); in-flight ones go on."""
        self.drain_file.touch()

    def abort_drain(self) -> None:
        """The grace expired: requests still running fail at their next step (the BLS's abort flag)."""
        Path(str(self.drain_file) + ABORT_SUFFIX).touch()

    def in_flight(self) -> int | None:
        """Requests the rsd model is serving now (its metric), None if the metrics do not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        # one series per served model name (served_model label): the server's in-flight requests are their sum
        return sum(int(float(line.split()[-1])) for line in text.splitlines()
                   if line.startswith("rsd_requests_in_flight"))

    def start(self, ready_timeout_s: float = 180.0) -> None:
        install = TritonInstall.find()
        self.check_ports()
        remove_stale_shm()
        self._remove_drain_files()
        log.info("starting tritonserver on %s (grpc %d, metrics %d), repository %s",
                 self.url, self.grpc_port, self.metrics_port, self.repo)
        # killed with us, even by kill -9 (a launcher such as mpirun gets SIGTERM, which it forwards)
        dies = die_with_parent(signal.SIGTERM if self.launcher else signal.SIGKILL)
        with open(self.log_file, "ab") if self.log_file else open(os.devnull, "wb") as out:
            self.proc = subprocess.Popen(self.command(install), env=self.environment(), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=dies)
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EngineError(f"tritonserver exited with code {self.proc.returncode} while starting"
                                  f"{self._log_hint()}")
            if self.ready():
                log.info("tritonserver is ready at %s", self.url)
                return
            time.sleep(0.25)
        raise EngineError(f"tritonserver not ready after {timeout_s:g} s{self._log_hint()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM, wait (Triton unloads models, up to its exit timeout), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s if timeout_s is not None else self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not exit after SIGTERM; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.remove_shm()
        self._remove_drain_files()

    def _remove_drain_files(self) -> None:
        self.drain_file.unlink(missing_ok=True)
        Path(str(self.drain_file) + ABORT_SUFFIX).unlink(missing_ok=True)

    def remove_shm(self) -> None:
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            log.warning("removing leftover shared memory region %s", region)
            region.unlink(missing_ok=True)

    def _log_hint(self) -> str:
        if self.log_file is None or not self.log_file.is_file():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-25:]
        return "; last log lines:\n" + "\n".join(tail)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def container_command(repo: Path, paths: list[Path], image: str = NGC_IMAGE, http_port: int = 8000,
                      grpc_port: int = 8001, metrics_port: int = 8002, *, env: Sequence[tuple[str, str]] = (),
                      launcher: Sequence[str] = (), extra_args: Sequence[str] = (),
                      docker_args: Sequence[str] = (), admin_key: str = "", internal_token: str = "") -> list[str]:
    """`docker run` for a GPU host: the rendered repository and every path it names (this
    checkout, the model folders, engine folders) are mounted at the same absolute paths, so the
    rendered configs stay valid; the image's Python gets the checkout on PYTHONPATH and needs
    `transformers` (pip install it in a derived image; the trtllm image has it)."""
    mounts = [arg for p in sorted({repo, REPO_ROOT, *paths}) for arg in ("-v", f"{p}:{p}:ro")]
    env = [*env, (TOKEN_ENV, internal_token or secrets.token_hex(16))]
    env_args = [arg for name, value in env for arg in ("-e", f"{name}={value}")]
    return ["docker", "run", "--rm", "--gpus=all", "--shm-size=4g", "--ipc=host", *docker_args,
            "-p", f"127.0.0.1:{http_port}:{http_port}", "-p", f"127.0.0.1:{grpc_port}:{grpc_port}",
            "-p", f"127.0.0.1:{metrics_port}:{metrics_port}", *mounts, "-e", f"PYTHONPATH={REPO_ROOT}", *env_args,
            image, *launcher, "tritonserver", f"--model-repository={repo}", "--model-control-mode=none",
            # docker publishes the ports on the host's loopback only: the read-only APIs stay open
            *restricted_api_flags(admin_key or secrets.token_hex(16), "0.0.0.0", open_read_apis=True),
            f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
            *extra_args]
