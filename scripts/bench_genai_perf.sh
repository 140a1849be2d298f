#!/usr/bin/env bash
# genai-perf 0.0.16 (PyPI) against Triton's gRPC stream (--endpoint kserve, tensorrtllm input names)
# or the OpenAI front (chat, completions), offline, in its own venv (.cache/venv-genai-perf); it
# drives the project's perf_analyzer 2.51.0 (.venv/bin, first on PATH). Starts a server (and the
# front) unless --triton / --front are given; writes runs/bench-genai-perf/<time>/.
# Usage: scripts/bench_genai_perf.sh [--endpoint kserve|chat|completions] [--concurrency 2]
#                                    [--requests 16] [--osl 32] [--method rsd] [--pipeline FILE]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.cache/venv-genai-perf
"$ROOT/scripts/setup.sh" >/dev/null
if ! "$VENV/bin/genai-perf" --version 2>/dev/null | grep -q '0.0.16'; then
  echo "bench_genai_perf: installing genai-perf==0.0.16 into $VENV (a few minutes, once)"
  python3.11 -m venv "$VENV"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "genai-perf==0.0.16"
fi
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/bench_clients.py" genai-perf --exe "$VENV/bin/genai-perf" "$@"
