"""`rsd serve`: render the model repository and run tritonserver under the supervisor."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.config import REPO_ROOT, load_config
from runtime.core.errors import ConfigError

if TYPE_CHECKING:
    from runtime.deploy.config import ServeConfig
    from runtime.deploy.supervisor import Sidecar

log = logging.getLogger("rsd.serve")

DEFAULT_SERVE_CONFIG = REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="render the Triton model repository and run tritonserver")
    p.add_argument("--config", default=str(DEFAULT_SERVE_CONFIG), help="serving YAML (configs/triton/*.yaml)")
    p.add_argument("--pipeline", help="pipeline YAML (overrides the serving config's `pipeline`)")
    p.add_argument("--address", help="bind address (default from the config: 127.0.0.1)")
    p.add_argument("--http-port", type=int)
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--openai-port", type=int, help="port of the OpenAI-compatible front (/v1/completions, "
                                                   "/v1/chat/completions, /v1/models, /health); 0: none "
                                                   "(default from the config: 9000)")
    p.add_argument("--health-port", type=int, help="port of /ready (Triton and every front answer, not "
                                                   "draining) and /live; 0: none (default from the config: 8003)")
    p.add_argument("--model-name", action="append", metavar="NAME",
                   help="serve the rsd BLS under this name (repeatable): e.g. ensemble and tensorrt_llm_bls for "
                        "TensorRT-LLM's clients (default from the config: rsd)")
    p.add_argument("--api-key", default=os.environ.get("RSD_API_KEY"),
                   help="clients must send 'Authorization: Bearer KEY': the OpenAI front checks it, and Triton's "
                        "inference APIs (gRPC metadata: triton-grpc-protocol-authorization) require it; health "
                        "and metrics stay open (default: $RSD_API_KEY, else none)")
    p.add_argument("--open-read-apis", action="store_true",
                   help="beyond loopback, leave model config, metadata and statistics open (on loopback they "
                        "always are; repository control, shared memory, trace and logging always need the admin key)")
    p.add_argument("--engines", help="trtllm: the engine-set output root of `python -m build_engines` "
                                     "(overrides trtllm.engine_root)")
    p.add_argument("--repo", help="where to render the repository (default: .build/triton_repo/<config name>-"
                                  "<grpc port>, one folder per instance)")
    p.add_argument("--log-file", help="tritonserver log (default: <repo>.log; the OpenAI front's: <repo>-openai.log)")
    p.add_argument("--render-only", action="store_true", help="render the repository, print its path and exit")
    p.add_argument("--container", metavar="IMAGE", nargs="?", const="",
                   help="GPU host: run the NGC Triton container instead (default image: "
                        "nvcr.io/nvidia/tritonserver:24.10-pyt-python-py3; trtllm: the config's trtllm.image)")
    p.add_argument("--admin-key", default=os.environ.get("RSD_ADMIN_KEY"),
                   help="opens Triton's restricted APIs (model repository, shared memory, trace, logging; beyond "
                        "loopback also model config, metadata and statistics) to requests with the header "
                        "'rsd-admin-key: KEY' (default: $RSD_ADMIN_KEY, else a random key: closed)")
    p.add_argument("--grace-s", type=float, help="SIGTERM: seconds in-flight requests get to finish "
                                                 "(default from the config: 30)")
    p.add_argument("--max-restarts", type=int, help="restarts of a failed server within the config's "
                                                    "restarts.window_s before exiting 1 (default from the config: 5)")
    p.add_argument("tritonserver_args", nargs=argparse.REMAINDER,
                   help="after --: extra tritonserver flags, passed through as they are")
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository
    from runtime.deploy.server import check_ports

    cfg = load_serve_config(args.config).with_overrides(
        pipeline=args.pipeline, address=args.address, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, openai_port=args.openai_port, health_port=args.health_port,
        shutdown_grace_s=args.grace_s, max_restarts=args.max_restarts,
        model_names=tuple(args.model_name) if args.model_name else None)
    if args.engines:
        if cfg.trtllm is None:
            raise ConfigError("--engines", "only for a serving config with backend trtllm")
        cfg = dataclasses.replace(cfg, trtllm=cfg.trtllm.with_engine_root(Path(args.engines)))
    if not args.render_only and args.container is None:
        # before rendering: a running instance on these ports owns its repository folder
        check_ports(cfg.address, cfg.http_port, cfg.grpc_port, cfg.metrics_port)
    repo = render_repository(cfg, Path(args.repo).resolve() if args.repo else None)
    if args.render_only:
        print(repo)
        return 0
    extra = tuple(a for a in args.tritonserver_args if a != "--")
    if args.container is not None:
        return _run_container(cfg, repo, args.container, args.admin_key, extra)
    return _run_local(cfg, repo, Path(args.log_file) if args.log_file else repo.with_suffix(".log"),
                      args.admin_key, args.api_key or "", args.open_read_apis, extra)


def _run_local(cfg: ServeConfig, repo: Path, log_file: Path, admin_key: str | None, api_key: str,
               open_read_apis: bool, extra: tuple[str, ...]) -> int:
    from runtime.deploy.health import Health, HealthServer
    from runtime.deploy.server import TritonServer, is_loopback, port_is_free
    from runtime.deploy.supervisor import RestartPolicy, Supervisor
    from runtime.deploy.trtllm_launch import launch_for

    launch = launch_for(cfg)
    server = TritonServer(repo, cfg.http_port, cfg.grpc_port, cfg.metrics_port, cfg.address,
                          cfg.exit_timeout_s, log_file, (*launch.args, *extra), launch.launcher, launch.env,
                          open_read_apis=open_read_apis, api_key=api_key)
    if admin_key:
        server.admin_key = admin_key
    server.check_ports()
    if cfg.health_port and not port_is_free(cfg.address, cfg.health_port):
        raise ConfigError("--health-port", f"{cfg.address}:{cfg.health_port} is not free; pick another port (0: none)")
    if not is_loopback(cfg.address) and not api_key:
        log.warning("rsd serve: bound to %s without --api-key: anyone who reaches these ports can run inference",
                    cfg.address)
    policy = RestartPolicy(cfg.max_restarts, cfg.restart_window_s, cfg.restart_backoff_s)
    sidecars = (_openai_front(cfg, log_file, api_key),) if cfg.openai_port else ()
    health = Health(server.ready, tuple((s.name, s.health_url) for s in sidecars), threading.main_thread())
    supervisor = Supervisor(server, policy, cfg.shutdown_grace_s, launch.ready_timeout_s, sidecars=sidecars,
                            health=health)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.setLevel(logging.INFO)  # the supervisor's restarts and drain are what an operator reads
    probes = HealthServer(health, cfg.address, cfg.health_port) if cfg.health_port else None
    if probes is not None:
        probes.start()
    print(f"starting tritonserver (log: {log_file}) ...", flush=True)

    def ready() -> None:
        front = f"  openai http://{cfg.address}:{cfg.openai_port}/v1" if cfg.openai_port else ""
        ready_url = f"  ready http://{cfg.address}:{cfg.health_port}/ready" if cfg.health_port else ""
        print(f"serving: {', '.join(cfg.model_names)} on http {server.url}  grpc {cfg.address}:{cfg.grpc_port}  "
              f"metrics http://{cfg.address}:{cfg.metrics_port}/metrics{front}{ready_url}  "
              f"(Ctrl-C or SIGTERM drains and stops)", flush=True)

    try:
        code = supervisor.run(stop, on_ready=ready)
    finally:
        if probes is not None:
            probes.stop()
    print("stopped" if code == 0 else f"tritonserver kept failing; see {log_file}", flush=True,
          file=sys.stdout if code == 0 else sys.stderr)
    return code


def _openai_front(cfg: ServeConfig, log_file: Path, api_key: str) -> Sidecar:
    from runtime.deploy.server import is_loopback, port_is_free
    from runtime.deploy.supervisor import Sidecar

    if not port_is_free(cfg.address, cfg.openai_port):
        raise ConfigError("--openai-port", f"{cfg.address}:{cfg.openai_port} is not free; pick another port (0: no front)")
    local = cfg.address if is_loopback(cfg.address) else "127.0.0.1"  # how this host reaches Triton and the front
    command = (sys.executable, "-m", "runtime.frontends.openai_api", "--triton", f"{local}:{cfg.grpc_port}",
               "--host", cfg.address, "--port", str(cfg.openai_port), "--pipeline", str(cfg.pipeline),
               "--model-name", cfg.model_names[0], "--triton-model", cfg.model_names[0])
    env_key = ("RSD_API_KEY", api_key)  # passed by environment, not argv (ps shows argv)
    return Sidecar("the OpenAI-compatible front", command, log_file.with_name(log_file.stem + "-openai.log"),
                   f"http://{local}:{cfg.openai_port}/health", env=(env_key,) if api_key else ())


def _run_container(cfg: ServeConfig, repo: Path, image: str, admin_key: str | None, extra: tuple[str, ...]) -> int:
    from runtime.deploy.server import NGC_IMAGE, container_command
    from runtime.deploy.trtllm_launch import container_image, launch_for, mounted_paths

    launch = launch_for(cfg)
    cmd = container_command(repo, mounted_paths(cfg, load_config(cfg.pipeline)), image or container_image(cfg, NGC_IMAGE),
                            cfg.http_port, cfg.grpc_port, cfg.metrics_port, env=launch.env, launcher=launch.launcher,
                            extra_args=(*launch.args, *extra), docker_args=launch.docker_args,
                            admin_key=admin_key or "")
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)
