#!/usr/bin/env bash
# GPU benchmark of the PyTorch engine (issue 11, item 6), from the repository root on a machine
# with one CUDA GPU and a python3 that has CUDA torch and transformers; no downloads, no files
# written outside $OUT, about 5-8 minutes in all:
#
#   scripts/gpu_bench.sh [--dry-run]
#
# 1. scripts/gpu_bench.py: random-weight Qwen2.5 shapes in bf16 (draft and PRM 1.5B, target 7B)
#    built on the GPU; in-process RSD vs target-only output tokens/s at forced step acceptance
#    rates 0%, 50%, 90%, at concurrency 1, 8, 32 (table in $OUT/gpu_bench.md).
# 2. the gpu-marked tests (tests/test_gpu.py: the engine on CUDA vs CPU, degenerate equalities,
#    concurrency), log in $OUT/gpu_tests.log.
#
# --dry-run: no GPU needed; runs step 1 with tiny float32 shapes on the CPU and step 2 as a
# collection (the gpu tests skip without CUDA), to check the script itself.
# Environment: PYTHON (default: .venv/bin/python if its torch sees CUDA, else python3), OUT
# (default runs/gpu_bench), BENCH_ARGS (extra gpu_bench.py flags), BENCH_TIMEOUT_S (default 420).
set -euo pipefail

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/runs/gpu_bench}
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

cuda_python() {
  for py in ${PYTHON:-} "$ROOT/.venv/bin/python" python3; do
    if [ -x "$(command -v "$py" 2>/dev/null)" ] && "$py" -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ "$DRY_RUN" = 1 ]; then
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  echo "== dry run: tiny shapes on the CPU ($PY)"
  "$PY" scripts/gpu_bench.py --shapes tiny --device cpu --concurrency 1,2 --accept 0,0.9 --max-tokens 16 \
    --step-tokens 6 --out "$OUT/gpu_bench_dry.md"
  "$PY" -m pytest --noconftest -q -p no:cacheprovider tests/test_gpu.py --collect-only
  echo "== dry run done: $OUT/gpu_bench_dry.md"
  exit 0
fi

PY=$(cuda_python) || { echo "no python with CUDA torch found (set PYTHON); try --dry-run" >&2; exit 1; }
echo "== python: $PY"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
uptime || true

status=0
echo "== 1. in-process RSD vs target-only at forced acceptance (bf16, Qwen2.5 1.5B/7B shapes)"
timeout "${BENCH_TIMEOUT_S:-420}" "$PY" scripts/gpu_bench.py --out "$OUT/gpu_bench.md" ${BENCH_ARGS:-} \
  2>&1 | tee "$OUT/gpu_bench.log" || status=1

echo "== 2. gpu-marked tests"
timeout 240 "$PY" -m pytest --noconftest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 \
  | tee "$OUT/gpu_tests.log" || status=1

echo "== done (status $status): $OUT"
exit $status
