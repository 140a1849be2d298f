#!/usr/bin/env bash
# AIPerf 0.13.0 (PyPI; NVIDIA's successor to genai-perf, HTTP/OpenAI only) against the OpenAI front,
# offline, in its own venv (.cache/venv-aiperf: its pins clash with ours). Starts a server and the
# front unless --front URL (and --triton-metrics URL) are given; writes runs/bench-aiperf/<time>/.
# Usage: scripts/bench_aiperf.sh [--endpoint chat|completions|generate|generate_stream] [--concurrency 2] [--requests 16]
#                                [--osl 32] [--method rsd] [--pipeline FILE] [--front URL]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.cache/venv-aiperf
"$ROOT/scripts/setup.sh" >/dev/null
if ! "$VENV/bin/aiperf" --version 2>/dev/null | grep -q '^0.13.0'; then
  echo "bench_aiperf: installing aiperf==0.13.0 into $VENV (a few minutes, once)"
  python3.11 -m venv "$VENV"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "aiperf==0.13.0"
fi
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/bench_clients.py" aiperf --exe "$VENV/bin/aiperf" "$@"
