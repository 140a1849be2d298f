#!/usr/bin/env bash
# Triton load test: perf_analyzer over gRPC streaming, method=rsd vs method=target through one
# server, concurrency sweep, 3 windows of --requests requests per point (bounded; --timeout per point); writes runs/loadtest/<time>/results.{md,csv}.
# Usage: scripts/loadtest.sh [--pipeline FILE] [--concurrency 1,2,4,8] [--requests 12]
#                            [--max-tokens 32] [--threshold T] [--prompts embedded|FILE] [--url HOST:GRPC_PORT] [--timeout S] [--out DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" >/dev/null
exec "$ROOT/.venv/bin/python" -m runtime.clients.loadtest "$@"
