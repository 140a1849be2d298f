#!/usr/bin/env bash
# The main job: set up, start a real Triton server with the embedded models, stream RSD's steps for
# a few prompts (accepted draft steps; a draft mistake the PRM catches and the target rewrites),
# compare RSD with target-only (time and FLOPs, measured now, through the server), stop the server.
# Usage: scripts/demo.sh [PIPELINE_YAML] [PROMPT ...]
#   PIPELINE_YAML defaults to configs/default.yaml (the embedded trained models) when it exists,
#   otherwise tiny random models are built under .cache/tiny_models (plumbing only: gibberish).
#   The default prompts are held-out task questions; on the second and third the draft alone goes
#   wrong, and the PRM catches its mistake.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh
PY=$ROOT/.venv/bin/python
RSD=$ROOT/.venv/bin/rsd

PIPELINE=${1:-}
if [[ -z $PIPELINE ]]; then
  if [[ -f configs/default.yaml ]]; then
    PIPELINE=configs/default.yaml
  else
    echo "demo: configs/default.yaml not found; building tiny random models (outputs are gibberish)"
    PIPELINE=$("$PY" -c 'from pathlib import Path; from runtime.tiny_models import tiny_config_yaml; print(tiny_config_yaml(Path(".cache/tiny_models").resolve()))' 2>/dev/null)
  fi
fi
shift $(( $# > 0 ? 1 : 0 ))
PROMPTS=("$@")
if [[ ${#PROMPTS[@]} -eq 0 ]]; then
  PROMPTS=("What is 80-9+3+9?" "What is 72+7-5-8?" "What is 87-5-2+7+7-8?")
fi
PROMPT=${PROMPTS[0]}
read -r HTTP GRPC METRICS OPENAI < <("$PY" -c 'from runtime.deploy.server import free_ports; print(*free_ports(4))')
LOG=$ROOT/.build/demo-serve.log
mkdir -p "$ROOT/.build"

echo "demo: pipeline $PIPELINE; ports http $HTTP grpc $GRPC metrics $METRICS openai $OPENAI"
"$RSD" serve --pipeline "$PIPELINE" --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" --openai-port "$OPENAI" \
  --log-file "$ROOT/.build/demo-tritonserver.log" >"$LOG" 2>&1 &
SERVE_PID=$!
stop() {
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    echo "demo: stopping the server"
    kill -TERM "$SERVE_PID"
    wait "$SERVE_PID" || true
  fi
}
trap stop EXIT

echo -n "demo: waiting for tritonserver"
until curl -sf "http://127.0.0.1:$HTTP/v2/health/ready" >/dev/null; do
  if ! kill -0 "$SERVE_PID" 2>/dev/null; then
    echo; echo "demo: the server failed to start:"; tail -n 40 "$LOG" "$ROOT/.build/demo-tritonserver.log" || true
    exit 1
  fi
  echo -n "."; sleep 1
done
echo " ready"

echo; echo "demo: rsd client --stream (gRPC), prompt: $PROMPT"
"$RSD" client --url "127.0.0.1:$GRPC" --protocol grpc --stream --prompt "$PROMPT" --max-tokens 128

echo; echo "demo: RSD vs target-only through the server for ${#PROMPTS[@]} prompts (steps, then time and FLOPs)"
"$PY" scripts/demo_compare.py --url "127.0.0.1:$GRPC" "${PROMPTS[@]}"

echo; echo "demo: the first request, unary over HTTP (POST /v2/models/rsd/generate):"
BODY=$("$PY" -c 'import json,sys; print(json.dumps({"text_input": sys.argv[1], "max_tokens": 128}))' "$PROMPT")
curl -s -X POST "http://127.0.0.1:$HTTP/v2/models/rsd/generate" -d "$BODY" \
  | "$PY" -c 'import collections,json,sys; d=json.load(sys.stdin); src=d.get("step_source") or []; src=[src] if isinstance(src,str) else src
print(json.dumps({"text_output": d.get("text_output"), "steps_by_source": collections.Counter(src), "finish_reason": d.get("finish_reason"), "error": d.get("error")}))'

echo; echo "demo: server metrics (rsd_*):"
curl -s "http://127.0.0.1:$METRICS/metrics" | grep -E '^rsd_(requests_total|steps_(drafted|accepted|regenerated)_total|target_calls_total)' || true
