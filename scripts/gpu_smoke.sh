#!/usr/bin/env bash
# GPU smoke test of the TensorRT-LLM production path. Run it inside the TensorRT-LLM Triton
# container on a machine with an NVIDIA GPU, from the repository root:
#
#   docker run --rm --gpus all --shm-size=2g --ulimit memlock=-1 --ulimit stack=67108864 \
#     -v "$PWD":/workspace/rsd -w /workspace/rsd \
#     nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 scripts/gpu_smoke.sh
#
# Steps: install this project (--no-deps: the container has torch, transformers, TensorRT-LLM);
# models (models/embedded with configs/default.yaml when present, else tiny random models shaped
# for TensorRT-LLM, runtime/smoke_models.py); engines (python -m build_engines with
# configs/engines/embedded.yaml); render the trtllm repository (configs/triton/trtllm.yaml); start
# tritonserver in orchestrator mode (rsd serve: mpirun -n 1, TRTLLM_ORCHESTRATOR=1); send one
# streamed rsd request (rsd client); check that a final response arrived; stop the server.
#
#   scripts/gpu_smoke.sh [--dry-run]    --dry-run prints every command and runs none (no GPU needed)
# Environment: WORK (default .build/gpu_smoke), MODELS_ROOT (default models/embedded),
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
WORK=${WORK:-$ROOT/.build/gpu_smoke}
MODELS_ROOT=${MODELS_ROOT:-$ROOT/models/embedded}
PIPELINE=${PIPELINE_YAML:-$ROOT/configs/default.yaml}
ENGINES=$WORK/engines
HTTP_PORT=${HTTP_PORT:-8000}
GRPC_PORT=$((HTTP_PORT + 1))
METRICS_PORT=$((HTTP_PORT + 2))
READY_TIMEOUT_S=${READY_TIMEOUT_S:-900}
SERVER_PID=""

say() { echo "gpu_smoke: $*"; }
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

check_response() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
messages = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
assert messages, "no response arrived"
final = messages[-1]
assert final["finish_reason"], f"the last response is not final: {final}"
text = "".join(m["text"] for m in messages)
print(f"gpu_smoke: {len(messages)} streamed responses, {len(text)} characters, finish_reason "
      f"{final['finish_reason']}, steps {final['stats'].get('steps')}, sources {sum((m['sources'] for m in messages), [])}")
PYEOF
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

# 4. render the trtllm repository (checks every engine manifest; fails naming the key)
SERVE=("$PY" -m runtime.cli serve --config configs/triton/trtllm.yaml --pipeline "$PIPELINE" --engines "$ENGINES"
       --repo "$WORK/repo" --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT")
run "${SERVE[@]}" --render-only

# 5. start the server in orchestrator mode and wait until it is ready
echo "+ ${SERVE[*]} --log-file $WORK/tritonserver.log > $WORK/serve.out 2>&1 &"
if (( ! DRY_RUN )); then
  "${SERVE[@]}" --log-file "$WORK/tritonserver.log" > "$WORK/serve.out" 2>&1 &
  SERVER_PID=$!
  wait_ready
fi

# 6. one streamed request; a final response must arrive
CLIENT=("$PY" -m runtime.cli client --url "127.0.0.1:$GRPC_PORT" --stream --json --timeout 300
        --prompt "What is 12 + 35?" --max-tokens 32)
echo "+ ${CLIENT[*]} > $WORK/client.jsonl"
if (( ! DRY_RUN )); then
  "${CLIENT[@]}" > "$WORK/client.jsonl"
  check_response "$WORK/client.jsonl"
fi

# 7. stop (also on any failure above: the EXIT trap)
stop_server
SERVER_PID=""
if (( DRY_RUN )); then say "dry run: nothing was run"; else say "OK"; fi
