"""Load test: perf_analyzer (2.51.0, from the tritonclient wheel) over gRPC streaming against
the `rsd` model, once with method=rsd and once with method=target, through the same server.

For each method and concurrency it runs one bounded perf_analyzer measurement: 3 windows of
`--requests` requests each (count_windows) with the stability check disabled (-s 999), so a
noisy machine cannot make it fail, and it ends after 3 windows; it reads the CSV, and writes
results.csv and results.md
(throughput, latency percentiles, and the ratio RSD / target-only) to the output folder.
Requests use stream=false: perf_analyzer times a decoupled model by its first response, which
is then the whole answer, so latencies are end-to-end. Used by scripts/loadtest.sh.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.config import REPO_ROOT
from runtime.deploy.server import GRPC_ADMIN_HEADER, TritonServer, free_ports

log = logging.getLogger("rsd.loadtest")

PROMPTS = ("What is 12 + 35?", "Compute 7 * 8 - 5.", "Solve for x: 2x + 3 = 11.", "What is 15% of 80?",
           "Simplify (3 + 5) * 2 / 4.", "How many minutes are in 3.5 hours?", "What is the sum of 1 to 10?",
           "A rectangle is 4 by 9. What is its area?")


@dataclass(frozen=True, slots=True)
class Row:
    method: str
    concurrency: int
    throughput: float  # requests / s
    tokens: float  # mean output tokens per request (from a sequential pass over the prompts)
    steps: float  # mean steps per request
    target_share: float  # share of output tokens written by the target (RequestStats.target_token_share)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float


def input_data(method: str, max_tokens: int, prompts: tuple[str, ...], extra: dict[str, object]) -> dict[str, object]:
    rows = [{"text_input": [p], "stream": [False], "method": [method], "max_tokens": [max_tokens],
             **{k: [v] for k, v in extra.items()}} for p in prompts]
    return {"data": rows}


def run_point(pa: Path, url: str, data: Path, concurrency: int, requests: int, timeout_s: float, out: Path,
              admin_key: str = "") -> Path:
    csv_file = out / f"{data.stem}_c{concurrency}.csv"
    # perf_analyzer reads the model config and statistics: restricted APIs, opened by the admin key.
    key = ["-H", f"{GRPC_ADMIN_HEADER}:{admin_key}"] if admin_key else []
    cmd = [str(pa), "-m", "rsd", "-u", url, "-i", "grpc", "--streaming", "--input-data", str(data), *key,
           "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-mode", "count_windows",
           "--measurement-request-count", str(max(requests, 2 * concurrency)), "--max-trials", "3", "-s", "999",
           "-f", str(csv_file)]
    log.info("%s", " ".join(cmd))
    with open(out / f"{data.stem}_c{concurrency}.log", "w") as logf:
        subprocess.run(cmd, check=True, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout_s)
    return csv_file


def parse_csv(method: str, file: Path) -> Row:
    with open(file) as f:
        record = next(csv.DictReader(f))

    def ms(key: str) -> float:
        return float(record[key]) / 1000.0

    return Row(method, int(record["Concurrency"]), float(record["Inferences/Second"]), 0.0, 0.0, 0.0,
               ms("p50 latency"), ms("p90 latency"), ms("p99 latency"),
               ms("Avg latency") if "Avg latency" in record else float("nan"))


def load_prompts(spec: str | None) -> tuple[str, ...]:
    """The request prompts: built-in math questions, `embedded` (held-out task questions), or a
    text file with one prompt per line."""
    if spec is None:
        return PROMPTS
    if spec == "embedded":
        from runtime.task import heldout_problems

        return tuple(p.question for p in heldout_problems(len(PROMPTS)))
    lines = tuple(line.strip() for line in Path(spec).read_text().splitlines() if line.strip())
    if not lines:
        raise SystemExit(f"--prompts {spec}: no prompts in the file")
    return lines


def profile(url: str, method: str, max_tokens: int, extra: dict[str, object],
            prompts: tuple[str, ...] = PROMPTS) -> tuple[float, float, float]:
    """Mean output tokens, steps and target token share per request for `method` (one pass)."""
    from runtime.clients.client import RsdClient

    client = RsdClient(url, "grpc", timeout_s=600)
    stats = [client.generate(p, {"method": method, "max_tokens": max_tokens, **extra}).stats or {} for p in prompts]
    def mean(key: str) -> float:
        return sum(float(s.get(key) or 0.0) for s in stats) / len(stats)

    return mean("tokens"), mean("steps"), mean("target_token_share")


def markdown(rows: list[Row]) -> str:
    lines = ["| method | concurrency | req/s | tokens/s | tokens/req | steps/req | target tokens | p50 ms | p90 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.concurrency} | {r.throughput:.2f} | {r.throughput * r.tokens:.1f} | "
                     f"{r.tokens:.1f} | {r.steps:.1f} | {r.target_share:.0%} | {r.p50_ms:.0f} | {r.p90_ms:.0f} | "
                     f"{r.p99_ms:.0f} |")
    lines += ["", "| concurrency | req/s RSD / target | tokens/s RSD / target | p50 latency RSD / target |",
              "|---:|---:|---:|---:|"]
    by = {(r.method, r.concurrency): r for r in rows}
    for c in sorted({r.concurrency for r in rows}):
        rsd, tgt = by.get(("rsd", c)), by.get(("target", c))
        if rsd and tgt and tgt.throughput and tgt.p50_ms:
            tokens = (rsd.throughput * rsd.tokens) / (tgt.throughput * tgt.tokens) if tgt.tokens else float("nan")
            lines.append(f"| {c} | {rsd.throughput / tgt.throughput:.2f} | {tokens:.2f} | {rsd.p50_ms / tgt.p50_ms:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", help="pipeline YAML (default: the serving config's)")
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml"))
    parser.add_argument("--url", help="use a running server (host:grpc_port) instead of starting one")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=12,
                        help="requests per measurement window (3 windows per point, at least 2 x c each)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per perf_analyzer run")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threshold", type=float, help="RSD threshold (default: the pipeline's)")
    parser.add_argument("--methods", default="rsd,target")
    parser.add_argument("--prompts", help="'embedded' (held-out task questions) or a file, one prompt per line")
    parser.add_argument("--admin-key", default=os.environ.get("RSD_ADMIN_KEY", ""),
                        help="with --url: the server's admin key (perf_analyzer reads the model config; "
                             "default $RSD_ADMIN_KEY); a server started here gets its own")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "loadtest" / time.strftime("%Y%m%d-%H%M%S")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pa = Path(sys.executable).parent / "perf_analyzer"  # runnable as is after scripts/setup.sh (RPATH)
    if not pa.is_file():
        raise SystemExit(f"{pa} is missing: run scripts/setup.sh")
    extra = {} if args.threshold is None else {"threshold": args.threshold}
    prompts = load_prompts(args.prompts)
    files = {}
    for method in args.methods.split(","):
        files[method] = out / f"input_{method}.json"
        files[method].write_text(json.dumps(input_data(method, args.max_tokens, prompts, extra), indent=1))
    server = None if args.url else _start_server(args, out)
    admin_key = args.admin_key if server is None else server.admin_key
    load_before = os.getloadavg()
    url = args.url if server is None else f"127.0.0.1:{server.grpc_port}"
    try:
        shape = {method: profile(url, method, args.max_tokens, extra, prompts) for method in files}
        rows = [dataclasses.replace(parse_csv(method, run_point(pa, url, data, int(c), args.requests, args.timeout, out,
                                                                      admin_key)),
                                    tokens=shape[method][0], steps=shape[method][1], target_share=shape[method][2])
                for c in args.concurrency.split(",") for method, data in files.items()]
    finally:
        if server is not None:
            server.stop()
    _write(rows, out, load_before, os.getloadavg())
    print(markdown(rows))
    print(f"results: {out}/results.md, {out}/results.csv")
    return 0


def _start_server(args: argparse.Namespace, out: Path) -> TritonServer:
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository

    http, grpc, metrics = free_ports(3)
    cfg = load_serve_config(args.config).with_overrides(pipeline=args.pipeline, http_port=http, grpc_port=grpc,
                                                        metrics_port=metrics)
    repo = render_repository(cfg, out / "repo")
    server = TritonServer(repo, http, grpc, metrics, cfg.address, cfg.exit_timeout_s, out / "tritonserver.log")
    server.start(ready_timeout_s=300)
    return server


def _write(rows: list[Row], out: Path, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(Row.__slots__)
        writer.writerows([[getattr(r, k) for k in Row.__slots__] for r in rows])
    note = (f"Load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}, "
            f"after: {'/'.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} CPUs.\n\n")
    (out / "results.md").write_text(note + markdown(rows))


if __name__ == "__main__":
    sys.exit(main())
