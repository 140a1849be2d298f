#!/usr/bin/env bash
# The first GPU run of the TensorRT-LLM production path, as one command. Run it inside the
# TensorRT-LLM Triton container on a machine with an NVIDIA GPU, from the repository root:
#
#   docker run --rm --gpus all --shm-size=2g --ulimit memlock=-1 --ulimit stack=67108864 \
#     -v "$PWD":/workspace/rsd -w /workspace/rsd \
#     nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 scripts/gpu_first_run.sh
#
# Steps: install this project (--no-deps: the container has torch, transformers, TensorRT-LLM);
# models (models/embedded with configs/default.yaml when present, else tiny random models shaped
# for TensorRT-LLM, runtime/smoke_models.py); engines (python -m build_engines with
# configs/engines/embedded.yaml: fp16 draft with generation logits, a target that verifies draft
# tokens, a value-head PRM engine); then two layouts of configs/triton/trtllm.yaml, each rendered,
# started in orchestrator mode (rsd serve: mpirun -n 1, TRTLLM_ORCHESTRATOR=1) and checked by
# scripts/first_run_checks.py, which sends every method greedy, streamed, with log-probs and with
# a logit bias, compares the greedy text with the PyTorch path in process and prints a pass/fail
# table:
#   A. the default: draft and target engines (native verification on), the PRM on torch (cuda);
#   B. the opt-in PRM engine (trtllm.prm: engine), rsd and bon.
# gsi and cos need the target's context logits, which a verifying target cannot return: they must
# be refused, naming gather_context_logits. Exit 1 if a check failed.
#
#   scripts/gpu_first_run.sh [--dry-run]  --dry-run prints every command and request and runs nothing
#                                         of the GPU path (it runs on CPU; CI runs it)
# Environment: WORK (default .build/gpu_first_run), MODELS_ROOT (default models/embedded),
# PIPELINE_YAML (default configs/default.yaml), GPU_ARCH (sm80|sm86|sm89|sm90, else detected),
# HTTP_PORT (default 8000; gRPC and metrics take the next two), READY_TIMEOUT_S (default 900),
# PYTHON (default python3).
set -euo pipefail

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
WORK=${WORK:-$ROOT/.build/gpu_first_run}
MODELS_ROOT=${MODELS_ROOT:-$ROOT/models/embedded}
PIPELINE=${PIPELINE_YAML:-$ROOT/configs/default.yaml}
ENGINES=$WORK/engines
HTTP_PORT=${HTTP_PORT:-8000}
GRPC_PORT=$((HTTP_PORT + 1))
METRICS_PORT=$((HTTP_PORT + 2))
READY_TIMEOUT_S=${READY_TIMEOUT_S:-900}
SERVER_PID=""

say() { echo "gpu_first_run: $*"; }
FAILED=0
run() {
  echo "+ $*"
  if (( ! DRY_RUN )); then "$@"; fi
}

stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    say "stopping the server (pid $SERVER_PID)"
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
}
trap stop_server EXIT

ready() {
  "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$HTTP_PORT/v2/health/ready" 2>/dev/null
}

wait_ready() {
  local waited=0
  until ready; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      say "the server exited while starting; last log lines:"
      tail -n 40 "$WORK/serve.out" "$WORK/tritonserver.log" 2>/dev/null || true
      exit 1
    fi
    if (( waited >= READY_TIMEOUT_S )); then
      say "not ready after $READY_TIMEOUT_S s"
      exit 1
    fi
    sleep 5
    waited=$((waited + 5))
  done
  say "server ready after ${waited} s"
}

# 1. the project, without touching the container's torch / tensorrt_llm
if (( DRY_RUN )) || ! "$PY" -c "import runtime, build_engines, yaml, tqdm" 2>/dev/null; then
  run "$PY" -m pip install --no-deps -e .
  run "$PY" -m pip install pyyaml tqdm
fi
run mkdir -p "$WORK"

# 2. models and the pipeline config (tokenizers, prompt template, PRM format) of the BLS
if [[ -f $MODELS_ROOT/draft/config.json && -f $PIPELINE ]]; then
  say "models: $MODELS_ROOT, pipeline: $PIPELINE"
else
  MODELS_ROOT=$WORK/models
  PIPELINE=$MODELS_ROOT/pipeline.yaml
  say "no embedded models: tiny random models shaped for TensorRT-LLM in $MODELS_ROOT"
  run "$PY" -m runtime.smoke_models "$MODELS_ROOT"
fi

# 3. engines (fp16 draft, target and value-head PRM; incremental on re-runs)
BUILD=("$PY" -m build_engines --config configs/engines/embedded.yaml --models-root "$MODELS_ROOT"
       --output-root "$ENGINES")
if [[ -n ${GPU_ARCH:-} ]]; then BUILD+=(--gpu-arch "$GPU_ARCH"); fi
run "${BUILD[@]}"

# 4. the serving YAMLs of the two layouts (native verification on: the embedded target has max_draft_len)
LAYOUT_A=$WORK/trtllm-default.yaml
LAYOUT_B=$WORK/trtllm-prm-engine.yaml
echo "+ sed 's/native_verify: false/native_verify: true/' configs/triton/trtllm.yaml > $LAYOUT_A"
echo "+ sed 's/^  prm: torch/  prm: engine/' $LAYOUT_A > $LAYOUT_B"
if (( ! DRY_RUN )); then
  sed 's/native_verify: false/native_verify: true/' configs/triton/trtllm.yaml > "$LAYOUT_A"
  sed 's/^  prm: torch/  prm: engine/' "$LAYOUT_A" > "$LAYOUT_B"
fi

# render (checks every engine manifest; fails naming the key), start, wait, check, stop
serve_and_check() {
  local name=$1 yaml=$2; shift 2
  local serve=("$PY" -m runtime.cli serve --config "$yaml" --pipeline "$PIPELINE" --engines "$ENGINES"
               --repo "$WORK/repo-$name" --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT"
               --metrics-port "$METRICS_PORT" --openai-port 0)
  run "${serve[@]}" --render-only
  echo "+ ${serve[*]} --log-file $WORK/tritonserver-$name.log > $WORK/serve-$name.out 2>&1 &"
  if (( ! DRY_RUN )); then
    "${serve[@]}" --log-file "$WORK/tritonserver-$name.log" > "$WORK/serve-$name.out" 2>&1 &
    SERVER_PID=$!
    wait_ready
  fi
  local checks=("$PY" scripts/first_run_checks.py --url "127.0.0.1:$GRPC_PORT" --pipeline "$PIPELINE"
                --reference-dtype float16 "$@")
  echo "+ ${checks[*]} | tee $WORK/checks-$name.md"
  if (( DRY_RUN )); then
    "${checks[@]}" --dry-run
  elif ! "${checks[@]}" | tee "$WORK/checks-$name.md"; then
    FAILED=1
  fi
  stop_server
  SERVER_PID=""
}

# 5. layout A: engines + torch PRM; every method (gsi and cos refused)
serve_and_check default "$LAYOUT_A" --unsupported gsi,cos
# 6. layout B: the PRM engine (opt-in)
serve_and_check prm-engine "$LAYOUT_B" --methods rsd,bon

if (( DRY_RUN )); then say "dry run: nothing was run"; exit 0; fi
if (( FAILED )); then say "FAILED: see $WORK/checks-*.md"; exit 1; fi
say "OK: every check passed ($WORK/checks-*.md)"
