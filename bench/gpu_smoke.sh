#!/usr/bin/env bash
# The GPU path, end to end, in one command (docs/GPU.md shows a run's output):
# plan detection, the vLLM drift test, and `python -m worker serve` with CUDA
# graphs on the tiny scripted gpt-oss, driven by the official openai client,
# started twice (cold, then with the compile cache kept) for the timeline.
# Needs vLLM, this repo on PYTHONPATH and the Harmony vocab (see docs/GPU.md).
# Usage: bash bench/gpu_smoke.sh [OUTDIR]
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu-smoke}}
mkdir -p "$OUT"
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu-smoke-work}
mkdir -p "$WORK/tiny" "$WORK/vllm-cache"
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step "hardware"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" | tee "$OUT/versions.txt"

step "python -m worker plan (detected card)"
$PY -m worker plan | tee "$OUT/plan.txt"
MODEL=openai/gpt-oss-20b $PY -m worker plan --json > "$OUT/plan-20b.json"

step "drift test against the installed vLLM"
$PY -m pytest -q -p no:cacheprovider tests/integration/test_vllm_drift.py 2>&1 | tail -5 | tee "$OUT/drift.txt"

step "tiny scripted gpt-oss"
MODEL_DIR=$($PY -c "from pathlib import Path; from worker.tiny import ensure_tiny_model; print(ensure_tiny_model('scripted', Path('$WORK/tiny')))")
echo "$MODEL_DIR"

serve() {  # $1 = label
  local port=8123 log="$OUT/serve-$1.log"
  SHOW_LOADING_PROGRESS=true MODEL="$MODEL_DIR" SERVED_MODEL_NAME=tiny-scripted HOST=127.0.0.1 PORT=$port \
    MAX_MODEL_LEN=4096 GPU_MEMORY_UTILIZATION=0.5 VLLM_CACHE_ROOT="$WORK/vllm-cache" \
    $PY -m worker serve > "$log" 2>&1 &
  local pid=$! t0=$(date +%s.%N)
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/ready" -o "$OUT/ready-$1.json"; then break; fi
    kill -0 $pid 2>/dev/null || { echo "server died"; tail -40 "$log"; return 1; }
    sleep 0.5
  done
  echo "ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN{printf \"%.1f\", b-a}") s (process start to /ready 200)"
  cat "$OUT/ready-$1.json"; echo
  if [ "$1" = cold ]; then
    step "openai client checks"
    $PY bench/gpu_client.py "http://127.0.0.1:$port/v1" | tee "$OUT/client.json"
  fi
  grep -E "^\[|GPU memory|READY|^=====" "$log" | cut -c1-160 | tee "$OUT/progress-$1.txt"
  kill -TERM $pid; wait $pid; echo "exit code $?"
  grep -hoE "Using [A-Z_]+ attention backend[^.]*|Using FlashAttention version [0-9]+|Using '[A-Z_]+' [A-Za-z0-9]+ MoE backend|Using [A-Za-z0-9]+(Experts|Method)[A-Za-z0-9]*|torch.compile takes [0-9.]+ s in total|Graph capturing finished in [0-9.]+ secs[^)]*\)?|init engine[^)]*took [0-9.]+ seconds|Compiling a graph for [^t]*takes [0-9.]+ s|Dynamo bytecode transform time: [0-9.]+ s" "$log" | sort -u | tee "$OUT/backends-$1.txt"
}

step "serve, cold (compile cache empty)"
serve cold
step "serve, warm (compile cache kept)"
serve warm
