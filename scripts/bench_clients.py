"""Benchmark recipes with clients written by others: AIPerf and genai-perf, offline, against this server.

    scripts/bench_aiperf.sh     [--endpoint chat|completions|generate|generate_stream] [--concurrency 2]
                                [--requests 16] [--osl 32]
    scripts/bench_genai_perf.sh [--endpoint kserve|chat|completions] [same flags]

Each wrapper keeps its tool in a venv of its own under .cache/ (their pins clash with ours) and
calls this script with the tool's executable. Unless --front / --triton are given, it starts a
tritonserver (runtime.deploy.server.TritonServer) and the OpenAI front
(`python -m runtime.frontends.openai_api`) on free ports, runs the tool once, stops both, and
writes runs/bench-<tool>/<time>/{command.txt,<tool>.log,summary.md} next to the tool's artifacts.
AIPerf speaks HTTP only: chat and completions go to the OpenAI front; generate and
generate_stream to Triton's own HTTP generate endpoints through AIPerf's `template` endpoint type
(a payload template with TensorRT-LLM's input names, the text read from `text_output`).
Offline: the tokenizer is the pipeline's own model folder, prompts are the embedded task's
held-out questions (a JSONL file), HF_HUB_OFFLINE=1 (not for AIPerf: see tool_env), and perf_analyzer (genai-perf) is the
venv's own binary by its name on PATH. The output length asked for is --osl tokens: max_tokens,
and min_tokens / min_length where the tool sends one; the summary reports the lengths measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.config import REPO_ROOT, load_config  # noqa: E402
from runtime.deploy.server import TritonServer, free_ports  # noqa: E402

METRICS = ("request_latency", "time_to_first_token", "inter_token_latency", "output_sequence_length",
           "output_token_count", "input_sequence_length", "request_throughput", "output_token_throughput",
           "request_count")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("tool", choices=["aiperf", "genai-perf"])
    parser.add_argument("--exe", required=True, help="the tool's executable (in its own venv)")
    parser.add_argument("--endpoint", default="chat", choices=["chat", "completions", "kserve", "generate",
                                                               "generate_stream"],
                        help="OpenAI endpoint of the front; (genai-perf) kserve, Triton's own gRPC stream; (AIPerf) "
                             "generate / generate_stream, Triton's own HTTP endpoints")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--osl", type=int, default=32, help="output tokens asked for per request")
    parser.add_argument("--method", default="rsd", help="the rsd model's method for every request")
    parser.add_argument("--pipeline", default=str(REPO_ROOT / "configs" / "default.yaml"))
    parser.add_argument("--serve-config", default=str(REPO_ROOT / "configs" / "triton" / "torch_cpu.yaml"))
    parser.add_argument("--front", help="URL of a running OpenAI front (else one is started)")
    parser.add_argument("--triton", help="host:grpc_port of a running server (else one is started)")
    parser.add_argument("--triton-metrics", help="metrics URL of that server")
    parser.add_argument("--http", help="host:http_port of that server (generate endpoints)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds the tool may run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out or REPO_ROOT / "runs" / f"bench-{args.tool}" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    procs = Services(args, out)
    try:
        procs.start()
        cmd = command(args, procs, out)
        (out / "command.txt").write_text(" ".join(cmd) + "\n")
        print("running:", " ".join(cmd), flush=True)
        started = time.monotonic()
        with open(out / f"{args.tool}.log", "wb") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=tool_env(args.tool), cwd=out,
                                timeout=args.timeout).returncode
        wall = time.monotonic() - started
    finally:
        procs.stop()
    summary = summarize(args, out, rc, wall)
    (out / "summary.md").write_text(summary)
    print(summary)
    return rc


class Services:
    """The server and the front, started here unless given."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args, self.out = args, out
        self.server: TritonServer | None = None
        self.front: subprocess.Popen[bytes] | None = None
        self.grpc, self.metrics, self.front_url, self.http = args.triton, args.triton_metrics, args.front, args.http

    def start(self) -> None:
        if self.grpc is None:
            from runtime.deploy.config import load_serve_config
            from runtime.deploy.repo import render_repository

            http, grpc, metrics = free_ports(3)
            cfg = load_serve_config(self.args.serve_config).with_overrides(
                pipeline=self.args.pipeline, http_port=http, grpc_port=grpc, metrics_port=metrics)
            repo = render_repository(cfg, self.out / "repo")
            self.server = TritonServer(repo, http, grpc, metrics, cfg.address, cfg.exit_timeout_s,
                                       self.out / "tritonserver.log")
            self.server.start(ready_timeout_s=300)
            self.grpc, self.metrics = f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics"
            self.http = f"127.0.0.1:{http}"
        if self.front_url is None and self.args.endpoint in ("chat", "completions"):
            (port,) = free_ports(1)
            self.front = subprocess.Popen(
                [sys.executable, "-m", "runtime.frontends.openai_api", "--triton", self.grpc, "--port", str(port),
                 "--pipeline", self.args.pipeline, "--log-level", "warning"],
                stdout=open(self.out / "front.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            self.front_url = f"http://127.0.0.1:{port}"
            wait_http(f"{self.front_url}/health", 120)

    def stop(self) -> None:
        if self.front is not None:
            self.front.terminate()
            self.front.wait(timeout=30)
        if self.server is not None:
            self.server.stop()


def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:g} s")


def prompts_file(out: Path) -> Path:
    from runtime.task import heldout_problems

    file = out / "prompts.jsonl"
    file.write_text("".join(json.dumps({"text": p.question}) + "\n" for p in heldout_problems(64)))
    return file


def tokenizer(pipeline: str) -> str:
    cfg = load_config(pipeline)
    model = cfg.target or cfg.draft
    assert model is not None
    return str(model.path)


def command(args: argparse.Namespace, procs: Services, out: Path) -> list[str]:
    data, tok, n = prompts_file(out), tokenizer(args.pipeline), str(args.osl)
    if args.tool == "aiperf" and args.endpoint.startswith("generate"):
        return _aiperf_generate(args, procs, out, data, tok)
    if args.tool == "aiperf":
        return [args.exe, "profile", "-m", "rsd", "--url", str(procs.front_url), "--endpoint-type", args.endpoint,
                "--streaming", "--tokenizer", tok, "--input-file", str(data), "--custom-dataset-type", "single_turn",
                "--concurrency", str(args.concurrency), "--request-count", str(args.requests),
                "--prompt-output-tokens-mean", n, "--extra-inputs", f"min_tokens:{n}",
                "--extra-inputs", f"method:{args.method}", "--use-server-token-count",
                "--server-metrics", str(procs.metrics), "--no-gpu-telemetry", "--ui-type", "none",
                "--output-artifact-dir", str(out / "artifacts"), "--random-seed", "0"]
    common = ["-m", "rsd", "--tokenizer", tok, "--input-file", str(data), "--concurrency", str(args.concurrency),
              "--request-count", str(args.requests), "--output-tokens-mean", n, "--warmup-request-count", "0",
              "--artifact-dir", str(out / "artifacts"), "--random-seed", "0", "--streaming"]
    if args.endpoint == "kserve":  # Triton's gRPC stream, the tensorrtllm backend's input names
        return [args.exe, "profile", *common, "--endpoint-type", "kserve", "--backend", "tensorrtllm",
                "-u", str(procs.grpc), "--output-tokens-mean-deterministic", "--extra-inputs", f"method:{args.method}",
                "--server-metrics-url", str(procs.metrics)]
    return [args.exe, "profile", *common, "--endpoint-type", args.endpoint, "-u", str(procs.front_url),
            "--extra-inputs", f"min_tokens:{n}", "--extra-inputs", f"method:{args.method}"]


def _aiperf_generate(args: argparse.Namespace, procs: Services, out: Path, data: Path, tok: str) -> list[str]:
    """AIPerf's `template` endpoint on Triton's /v2/models/rsd/generate(_stream): the payload in
    TensorRT-LLM's input names (a file: an inline template's commas break --extra-inputs), the text
    read from text_output (AIPerf does not look for that name by itself)."""
    stream = args.endpoint == "generate_stream"
    template = out / "rsd_generate.json"
    template.write_text('{"text_input": {{ text|tojson }}, "max_tokens": ' + str(args.osl) + ', "min_tokens": '
                        + str(args.osl) + ', "method": "' + args.method + '", "stream": ' + str(stream).lower()
                        + ', "exclude_input_in_output": true}')
    return [args.exe, "profile", "-m", "rsd", "--url", f"http://{procs.http}", "--endpoint",
            f"/v2/models/rsd/{args.endpoint}", "--endpoint-type", "template", *(["--streaming"] if stream else []),
            "--extra-inputs", f"payload_template:{template}", "--extra-inputs", "response_field:text_output",
            "--tokenizer", tok, "--input-file", str(data), "--custom-dataset-type", "single_turn",
            "--concurrency", str(args.concurrency), "--request-count", str(args.requests),
            "--server-metrics", str(procs.metrics), "--no-gpu-telemetry", "--ui-type", "none",
            "--output-artifact-dir", str(out / "artifacts"), "--random-seed", "0"]


def tool_env(tool: str) -> dict[str, str]:
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    # AIPerf 0.13 in HF offline mode sends even a local folder to snapshot_download, which rejects
    # a path as a repo id; online mode loads a local folder directly (no hub request for a path).
    if tool != "aiperf":
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"  # perf_analyzer by its own name
    return env


def summarize(args: argparse.Namespace, out: Path, rc: int, wall: float) -> str:
    names = ("profile_export_aiperf.json", "profile_export_genai_perf.json")
    found = [p for name in names for p in sorted(out.rglob(name))]
    lines = [f"{args.tool} --endpoint {args.endpoint} --concurrency {args.concurrency} --requests {args.requests} "
             f"--osl {args.osl} --method {args.method}: exit {rc}, {wall:.0f} s; artifacts {out}", ""]
    if not found:
        return "\n".join(lines + [f"no {' / '.join(names)} written: see {out}/{args.tool}.log"]) + "\n"
    data = json.loads(found[0].read_text())
    lines += ["| metric | unit | avg | p50 | p90 | p99 | min | max |", "|---|---|---|---|---|---|---|---|"]
    for key in METRICS:
        value = data.get(key) or (data.get("records") or {}).get(key)
        if isinstance(value, dict):
            cells = [_fmt(value.get(s)) for s in ("avg", "p50", "p90", "p99", "min", "max")]
            lines.append(f"| {key} | {value.get('unit', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
