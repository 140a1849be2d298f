#!/usr/bin/env python3
"""Soak a server: 16 concurrent clients over mixed methods for minutes; prints requests, errors,
refusals, latency percentiles, RSS per server process at start and end, restarts and crash lines.

    .venv/bin/python scripts/soak.py [--minutes 10] [--concurrency 16] [--pipeline configs/default.yaml]
    .venv/bin/python scripts/soak.py --url 127.0.0.1:8001 --minutes 10      # a running server (no RSS)
    .venv/bin/python scripts/soak.py --concurrency 128 --minutes 3          # beyond the admission bound

Past the admission capacity (`admission` in the serving YAML; --max-running-rows etc. override it)
requests wait in Triton's queue or are refused as overloaded: a refusal is not an error, a request
that fails once admitted, or hangs, is. Exit 1 on any error, hang, restart, crash line, or RSS
growth over --max-rss-growth.

Without --url it starts a server under `rsd serve`'s supervisor on free ports (log in --out).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from runtime.clients.soak import soak
from runtime.config import REPO_ROOT
from runtime.deploy.processes import rss_bytes
from runtime.deploy.server import TritonServer, free_ports
from runtime.deploy.supervisor import RestartPolicy, Supervisor, supervised

CRASH = re.compile(r"Segmentation fault|malloc|double free|corrupted|core dumped|not healthy|Cannot remove future|"
                   r"Traceback", re.IGNORECASE)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="measured time after the warm-up (default 10)")
    p.add_argument("--warmup-s", type=float, default=30.0, help="load before RSS is first read (default 30)")
    p.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    p.add_argument("--max-tokens", type=int, default=48, help="per request (default 48)")
    p.add_argument("--pipeline", default=str(REPO_ROOT / "configs" / "default.yaml"), help="pipeline YAML")
    p.add_argument("--url", help="host:grpc_port of a running server (then no RSS or log checks)")
    p.add_argument("--max-running-rows", type=int, help="admission capacity (default: the serving YAML's)")
    p.add_argument("--max-queue-size", type=int, help="requests waiting in Triton's queue (default: the YAML's)")
    p.add_argument("--queue-timeout-s", type=float, help="how long one may wait (default: the YAML's)")
    p.add_argument("--max-rss-growth", type=float, default=0.10,
                   help="fail if a server process grew more than this after the warm-up (default 0.10)")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "soak" / time.strftime("%Y%m%d-%H%M%S")))
    args = p.parse_args()
    if args.url:
        result = soak(args.url, 60 * args.minutes, args.concurrency, args.warmup_s, base={"max_tokens": args.max_tokens})
        print(result.summary())
        return 1 if result.errors else 0
    return _with_server(args)


def _with_server(args: argparse.Namespace) -> int:
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = free_ports(3)
    cfg = load_serve_config(REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml").with_overrides(
        pipeline=args.pipeline, http_port=http, grpc_port=grpc, metrics_port=metrics,
        max_running_rows=args.max_running_rows, max_queue_size=args.max_queue_size,
        queue_timeout_s=args.queue_timeout_s)
    server = TritonServer(render_repository(cfg, out / "repo"), http, grpc, metrics, log_file=out / "tritonserver.log")
    load = os.getloadavg()
    try:
        with supervised(Supervisor(server, RestartPolicy(max_restarts=3), grace_s=10)) as supervisor:
            result = soak(f"127.0.0.1:{grpc}", 60 * args.minutes, args.concurrency, args.warmup_s,
                          processes=server.processes, rss=rss_bytes, base={"max_tokens": args.max_tokens})
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    crashes = [line for line in (out / "tritonserver.log").read_text(errors="replace").splitlines() if CRASH.search(line)]
    print(result.summary())
    grown = {name: g for name, g in result.rss_growth().items() if g > args.max_rss_growth}
    print(f"restarts: {supervisor.restarts}; crash lines in the log: {len(crashes)}; RSS grown over "
          f"{args.max_rss_growth:.0%}: {grown or 'none'}; load average before: "
          f"{'/'.join(f'{x:.2f}' for x in load)}, after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    for line in crashes[:10]:
        print("  log:", line)
    return 1 if result.errors or crashes or supervisor.restarts or grown else 0


if __name__ == "__main__":
    sys.exit(main())
