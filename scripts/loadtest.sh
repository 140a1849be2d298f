#!/usr/bin/env bash
# Triton load test: perf_analyzer over gRPC streaming, method=rsd vs method=target through one
# server, concurrency sweep, a fixed number of requests per point (bounded by --timeout per point); writes runs/loadtest/<time>/results.{md,csv}.
# Usage: scripts/loadtest.sh [--pipeline FILE] [--concurrency 1,2,4,8] [--requests 24]
#                            [--max-tokens 32] [--threshold T] [--url HOST:GRPC_PORT] [--timeout S] [--out DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" >/dev/null
exec "$ROOT/.venv/bin/python" -m runtime.serving.loadtest "$@"
