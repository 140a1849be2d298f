#!/usr/bin/env bash
# Set up, then run the tests (all tiers, including the real Triton server tests).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not server" or -k triton.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh
exec "$ROOT/.venv/bin/python" -m pytest --timeout 900 "$@"
