#!/usr/bin/env python3
"""RSD's lead at every load: target-only and RSD through one real server, concurrency 1 to 128.

    .venv/bin/python scripts/curve.py [--levels 1,8,32,64,128] [--seconds 40] [--max-tokens 96]
                                      [--methods target,rsd] [--in-process] [--url HOST:GRPC_PORT]

Closed-loop clients: at each level, `c` threads each send one streamed gRPC request after
another (8 held-out questions of the embedded task, as `loadtest --prompts embedded`; greedy,
`--max-tokens`) for `--seconds`
after a `--warmup-s` warm-up whose requests are not counted; the methods are interleaved (their
order alternates from level to level). Per point: completed requests/s, output tokens/s (from the
final response's stats), p50 / p99 latency, p50 time to the first streamed step, requests refused
as overloaded (past the admission bound: they wait in Triton's queue, a refusal is not an error)
and errors. With --in-process the same closed loop runs on the in-process pipeline
(runtime.assembly.torch, one event loop, the same prompts and parameters) after the server has
stopped, for the served / in-process ratio. Writes results.{json,md} and curve.png to --out
(default runs/curve/<time>); the PNG also to --png when given (docs/img/rsd_curve.png).

Without --url it starts a server under `rsd serve`'s supervisor on free ports with
configs/triton/torch_cpu.yaml (admission: 64 requests run, the rest wait).

--profile C (a started server only): while each method's point at level C runs, the CPU share of
each server process and of each stub's busiest threads (from /proc, over the measured window),
and, with py-spy on PATH or in the venv, a 15 s py-spy sample of every stub (`--nonblocking`),
summarised as the functions holding the most samples; written to profile-<method>-c<C>.md.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.clients.client import RsdClient, ServerError  # noqa: E402
from runtime.clients.loadtest import load_prompts  # noqa: E402
from runtime.clients.soak import percentile  # noqa: E402
from runtime.config import REPO_ROOT  # noqa: E402


PROMPTS = load_prompts("embedded")


@dataclass(slots=True)
class Point:
    where: str  # served | in-process
    method: str
    concurrency: int
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    first_step_s: list[float] = field(default_factory=list)
    tokens: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds else 0.0

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def row(self) -> dict[str, Any]:
        return {"where": self.where, "method": self.method, "concurrency": self.concurrency,
                "completed": len(self.latencies_s), "seconds": round(self.seconds, 2), "req_s": round(self.rps, 2),
                "tokens_s": round(self.tps, 1), "p50_s": round(percentile(self.latencies_s, 0.5), 3),
                "p99_s": round(percentile(self.latencies_s, 0.99), 3),
                "first_step_p50_s": round(percentile(self.first_step_s, 0.5), 3),
                "refused": self.refused, "errors": len(self.errors), "first_errors": self.errors[:3]}


def served_point(url: str, method: str, c: int, seconds: float, warmup_s: float, max_tokens: int) -> Point:
    point = Point("served", method, c)
    lock = threading.Lock()
    start = time.monotonic()
    measure_from, deadline = start + warmup_s, start + warmup_s + seconds

    def client(worker: int) -> None:
        rsd = RsdClient(url, "grpc", timeout_s=300.0)
        i = worker
        while time.monotonic() < deadline:
            params = {"method": method, "max_tokens": max_tokens, "temperature": 0.0}
            t0 = time.monotonic()
            first = None
            try:
                final = None
                for message in rsd.stream(PROMPTS[i % len(PROMPTS)], params, stream=True):
                    first = first if first is not None else time.monotonic() - t0
                    final = message if message.final else final
                if final is None:
                    raise RuntimeError("no final response")
                outcome, tokens = "ok", int((final.stats or {}).get("tokens", 0))
            except ServerError as exc:
                outcome, tokens = ("refused" if exc.overloaded else f"ServerError: {exc}"), 0
            except Exception as exc:  # counted, never stops the run
                outcome, tokens = f"{type(exc).__name__}: {exc}", 0
            done = time.monotonic()
            i += c
            if t0 < measure_from or done > deadline:
                continue  # started in the warm-up or ended after the window: not counted
            with lock:
                if outcome == "ok":
                    point.latencies_s.append(done - t0)
                    point.first_step_s.append(first or 0.0)
                    point.tokens += tokens
                elif outcome == "refused":
                    point.refused += 1
                else:
                    point.errors.append(outcome)

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline - time.monotonic() + 330)
    point.seconds = seconds
    return point


def in_process_point(pipeline: Any, method: str, c: int, seconds: float, warmup_s: float, max_tokens: int) -> Point:
    point = Point("in-process", method, c)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from, deadline = start + warmup_s, start + warmup_s + seconds

        async def client(worker: int) -> None:
            i = worker
            while loop.time() < deadline:
                t0 = loop.time()
                result = await pipeline.generate(PROMPTS[i % len(PROMPTS)],
                                                 {"method": method, "max_tokens": max_tokens, "temperature": 0.0})
                done = loop.time()
                i += c
                if t0 >= measure_from and done <= deadline:
                    point.latencies_s.append(done - t0)
                    point.tokens += int(result.stats["tokens"])

        await asyncio.gather(*(client(w) for w in range(c)))

    asyncio.run(run())
    point.seconds = seconds
    return point


def _cpu_ticks(pid: int) -> dict[str, int]:
    """utime + stime per thread of a process ('<thread name> <tid>'), and '*' for the process."""
    ticks: dict[str, int] = {}
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks["*"] = int(fields[11]) + int(fields[12])
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[f"{name} {task.name}"] = int(fields[11]) + int(fields[12])
    return ticks


def _py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    return subprocess.Popen([exe, "record", "--nonblocking", "-d", str(seconds), "-r", "50", "-f", "raw", "-o",
                             str(out), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _top_frames(raw: Path, count: int = 12) -> list[str]:
    """py-spy's raw (collapsed) stacks -> the innermost project frames holding the most samples,
    and the share of samples with any project frame at all (the rest: idle or C waits)."""
    if not raw.exists():
        return ["(no py-spy output)"]
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [f for f in stack.split(";") if "runtime/" in f or "triton_repo/" in f]
        if frames:
            own[frames[-1].split(" (")[0] + " (" + frames[-1].split("/")[-1]] += int(n)
    return [f"{n / max(total, 1):6.1%}  {frame}" for frame, n in own.most_common(count)]


def profiled_point(url: str, processes: dict[str, int], method: str, c: int, seconds: float, warmup_s: float,
                   max_tokens: int, out: Path) -> Point:
    """served_point, with per-process / per-thread CPU over the measured window and py-spy samples."""
    result: dict[str, Point] = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "p", served_point(url, method, c, seconds, warmup_s, max_tokens)))
    runner.start()
    time.sleep(warmup_s)
    hz = os.sysconf("SC_CLK_TCK")
    watched = {**processes, "client (this script)": os.getpid()}
    before = {name: _cpu_ticks(pid) for name, pid in watched.items()}
    t0 = time.monotonic()
    spies = {name: (_py_spy(pid, 15, out / f"pyspy-{method}-c{c}-{name.replace(':', '_')}.txt"),
                    out / f"pyspy-{method}-c{c}-{name.replace(':', '_')}.txt")
             for name, pid in processes.items() if name.startswith("stub:")}
    time.sleep(max(1.0, seconds - 2.0))
    after = {name: _cpu_ticks(pid) for name, pid in watched.items()}
    window = time.monotonic() - t0
    runner.join()
    lines = [f"# {method} at concurrency {c}: CPU over {window:.1f} s (100% = one core)", ""]
    for name in sorted(watched):
        share = (after[name]["*"] - before[name]["*"]) / hz / window
        threads = sorted(((after[name][t] - before[name].get(t, 0)) / hz / window, t)
                         for t in after[name] if t != "*")
        busiest = ", ".join(f"{t.rsplit(' ', 1)[0]} {v:.0%}" for v, t in threads[::-1][:4] if v >= 0.01)
        lines.append(f"- {name}: {share:.0%} (threads: {busiest or '-'})")
    for name, (spy, raw) in spies.items():
        if spy is not None:
            spy.wait(60)
            lines += ["", f"## py-spy {name} (share of its samples, innermost project frame)", "```",
                      *_top_frames(raw), "```"]
    (out / f"profile-{method}-c{c}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return result["p"]


def table(points: list[Point], methods: list[str], levels: list[int]) -> str:
    by = {(p.where, p.method, p.concurrency): p for p in points}
    base, other = methods[0], methods[-1]
    lines = [f"| concurrency | {base} req/s | {other} req/s | {other} / {base} | {base} tokens/s | {other} tokens/s | "
             f"{other} p50 / p99 s | {other} first step p50 s | refused ({base}, {other}) | errors | "
             f"{other} served / in-process (tokens/s) |",
             "|" + "---:|" * 11]
    for c in levels:
        a, b = by.get(("served", base, c)), by.get(("served", other, c))
        if a is None or b is None:
            continue
        inproc = by.get(("in-process", other, c))
        ratio = f"{b.tps / inproc.tps:.2f}x" if inproc is not None and inproc.tps else "-"
        lines.append(f"| {c} | {a.rps:.2f} | {b.rps:.2f} | **{b.rps / a.rps:.2f}x** | {a.tps:.0f} | {b.tps:.0f} | "
                     f"{percentile(b.latencies_s, 0.5):.2f} / {percentile(b.latencies_s, 0.99):.2f} | "
                     f"{percentile(b.first_step_s, 0.5):.3f} | {a.refused}, {b.refused} | "
                     f"{len(a.errors) + len(b.errors)} | {ratio} |")
    inproc_rows = [p for p in points if p.where == "in-process"]
    if inproc_rows:
        lines += ["", "| in process: concurrency | " + " | ".join(f"{m} tokens/s" for m in methods) + " |",
                  "|" + "---:|" * (len(methods) + 1)]
        for c in levels:
            cells = [by.get(("in-process", m, c)) for m in methods]
            lines.append(f"| {c} | " + " | ".join(f"{p.tps:.0f}" if p else "-" for p in cells) + " |")
    return "\n".join(lines)


def plot(points: list[Point], methods: list[str], levels: list[int], files: list[Path]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in methods:
        served = {p.concurrency: p for p in points if p.where == "served" and p.method == method}
        xs = [c for c in levels if c in served]
        left.plot(xs, [served[c].rps for c in xs], marker="o", label=f"{method}, served")
        inproc = {p.concurrency: p for p in points if p.where == "in-process" and p.method == method}
        if inproc:
            xi = [c for c in levels if c in inproc]
            left.plot(xi, [inproc[c].rps for c in xi], marker="x", linestyle="--", label=f"{method}, in process")
    base = {p.concurrency: p for p in points if p.where == "served" and p.method == methods[0]}
    other = {p.concurrency: p for p in points if p.where == "served" and p.method == methods[-1]}
    xs = [c for c in levels if c in base and c in other and base[c].rps]
    right.plot(xs, [other[c].rps / base[c].rps for c in xs], marker="o", color="tab:green")
    right.axhline(2.0, color="grey", linestyle=":", label="2x")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
    left.set_ylabel("completed requests / s")
    left.legend(fontsize=8)
    right.set_ylabel(f"{methods[-1]} / {methods[0]} (served)")
    right.legend(fontsize=8)
    fig.suptitle("RSD and target-only through one rsd serve (CPU, embedded models)")
    fig.tight_layout()
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(file, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="1,8,32,64,128")
    p.add_argument("--methods", default="target,rsd", help="baseline first")
    p.add_argument("--seconds", type=float, default=40.0, help="measured time per point")
    p.add_argument("--warmup-s", type=float, default=5.0, help="per point, not counted")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--pipeline", default=str(REPO_ROOT / "configs" / "default.yaml"))
    p.add_argument("--url", help="host:grpc_port of a running server (else one is started)")
    p.add_argument("--in-process", action="store_true", help="also the in-process pipeline at each level")
    p.add_argument("--png", help="also write the plot here (e.g. docs/img/rsd_curve.png)")
    p.add_argument("--profile", type=int, help="a level: profile the server's processes during its points")
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "curve" / time.strftime("%Y%m%d-%H%M%S")))
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    methods = args.methods.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    points: list[Point] = []

    def sweep(url: str, processes: dict[str, int] | None = None) -> None:
        for k, c in enumerate(levels):
            for method in (methods if k % 2 == 0 else methods[::-1]):
                if processes and c == args.profile:
                    point = profiled_point(url, processes, method, c, args.seconds, args.warmup_s, args.max_tokens,
                                           out)
                else:
                    point = served_point(url, method, c, args.seconds, args.warmup_s, args.max_tokens)
                points.append(point)
                print(json.dumps(point.row()), file=sys.stderr, flush=True)

    if args.url:
        sweep(args.url)
    else:
        _with_server(args.pipeline, out, sweep)
    if args.in_process:
        from runtime.assembly.torch import build_pipeline
        from runtime.config import load_config

        pipeline = build_pipeline(load_config(Path(args.pipeline)))
        for k, c in enumerate(levels):
            for method in (methods if k % 2 == 0 else methods[::-1]):
                point = in_process_point(pipeline, method, c, min(args.seconds, 20.0), min(args.warmup_s, 3.0),
                                         args.max_tokens)
                points.append(point)
                print(json.dumps(point.row()), file=sys.stderr, flush=True)
    text = table(points, methods, levels)
    after = os.getloadavg()
    header = (f"scripts/curve.py --levels {args.levels} --methods {args.methods} --seconds {args.seconds:g} "
              f"--max-tokens {args.max_tokens}{' --in-process' if args.in_process else ''}\n"
              f"load average before {'/'.join(f'{x:.2f}' for x in load)}, after {'/'.join(f'{x:.2f}' for x in after)}\n")
    (out / "results.md").write_text(header + "\n" + text + "\n")
    (out / "results.json").write_text(json.dumps([{**asdict(pt), **pt.row()} for pt in points], indent=1))
    plot(points, methods, levels, [out / "curve.png"] + ([Path(args.png)] if args.png else []))
    print(header + "\n" + text)
    print(f"\nwritten to {out}")
    return 1 if any(pt.errors for pt in points) else 0


def _with_server(pipeline: str, out: Path, sweep: Any) -> None:
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.repo import render_repository
    from runtime.deploy.server import TritonServer, free_ports
    from runtime.deploy.supervisor import RestartPolicy, Supervisor, supervised

    http, grpc, metrics = free_ports(3)
    cfg = load_serve_config(REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml").with_overrides(
        pipeline=pipeline, http_port=http, grpc_port=grpc, metrics_port=metrics)
    server = TritonServer(render_repository(cfg, out / "repo"), http, grpc, metrics, log_file=out / "tritonserver.log")
    with supervised(Supervisor(server, RestartPolicy(max_restarts=0), grace_s=10)):
        sweep(f"127.0.0.1:{grpc}", server.processes())

if __name__ == "__main__":
    sys.exit(main())
