#!/usr/bin/env bash
# The GPU path on the real checkpoint format: a tiny random MXFP4 gpt-oss (hidden 1024)
# served by `python -m worker serve` with CUDA graphs, checked with the openai client,
# then throughput at concurrency 1, 8 and 32 against vLLM's own OpenAI server with the
# same engine arguments, measured back to back in this one command (docs/GPU.md).
# Usage: bash bench/gpu_mxfp4.sh [OUTDIR]   (same environment as bench/gpu_smoke.sh)
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu-mxfp4}}
mkdir -p "$OUT"
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu-smoke-work}
PORT=8124
mkdir -p "$WORK/tiny" "$WORK/vllm-cache"
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
wait_ready() {  # $1 pid, $2 url, $3 log
  for _ in $(seq 1 900); do
    curl -sf "$2" -o /dev/null && return 0
    kill -0 "$1" 2>/dev/null || { echo "server died"; tail -40 "$3"; return 1; }
    sleep 0.5
  done
  return 1
}
backends() { grep -hoE "Using [A-Z_]+ attention backend|Using FlashAttention version [0-9]+|Using '[A-Z_]+' Mxfp4 MoE backend|Using [A-Za-z0-9]+Experts[A-Za-z0-9]*" "$1" | sort -u; }

step "tiny random MXFP4 gpt-oss"
MODEL_DIR=$($PY -m worker.tiny --kind random-mxfp4 --cache "$WORK/tiny")
echo "$MODEL_DIR"
COMMON_ENV=(MAX_MODEL_LEN=4096 GPU_MEMORY_UTILIZATION=0.5 MAX_NUM_SEQS=64 VLLM_CACHE_ROOT="$WORK/vllm-cache")

step "worker: python -m worker serve"
env "${COMMON_ENV[@]}" MODEL="$MODEL_DIR" SERVED_MODEL_NAME=tiny-mxfp4 HOST=127.0.0.1 PORT=$PORT \
  $PY -m worker serve > "$OUT/worker.log" 2>&1 &
pid=$!; t0=$(date +%s.%N)
wait_ready $pid "http://127.0.0.1:$PORT/ready" "$OUT/worker.log" || exit 1
echo "worker ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
curl -s "http://127.0.0.1:$PORT/ready"; echo
backends "$OUT/worker.log" | tee "$OUT/backends-worker.txt"
grep -m1 -oE "engine ready: .*" "$OUT/worker.log"
$PY bench/gpu_client.py "http://127.0.0.1:$PORT/v1" --random | tee "$OUT/client.json"
step "worker throughput"
$PY -m worker bench --url "http://127.0.0.1:$PORT/v1" --concurrency 1,8,32 --max-tokens 256 \
  --seed 0 --json | tee "$OUT/bench-worker.jsonl"
kill -TERM $pid; wait $pid

step "vLLM's own OpenAI server, same engine arguments"
VLLM_CACHE_ROOT="$WORK/vllm-cache" $PY -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --served-model-name tiny-mxfp4 \
  --host 127.0.0.1 --port $PORT --max-model-len 4096 --gpu-memory-utilization 0.5 \
  --max-num-seqs 64 --max-num-batched-tokens 8192 --attention-backend FLASH_ATTN \
  --enable-prefix-caching --enable-chunked-prefill --async-scheduling \
  > "$OUT/vllm.log" 2>&1 &
pid=$!; t0=$(date +%s.%N)
wait_ready $pid "http://127.0.0.1:$PORT/v1/models" "$OUT/vllm.log" || exit 1
echo "vllm server ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
backends "$OUT/vllm.log" | tee "$OUT/backends-vllm.txt"
step "vLLM server throughput"
$PY -m worker bench --url "http://127.0.0.1:$PORT/v1" --concurrency 1,8,32 --max-tokens 256 \
  --seed 0 --json | tee "$OUT/bench-vllm.jsonl"
kill -TERM $pid; wait $pid

step "ratios (worker / vLLM server)"
$PY - "$OUT/bench-worker.jsonl" "$OUT/bench-vllm.jsonl" <<'PY' | tee "$OUT/ratios.txt"
import json, sys
w = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
v = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
for a, b in zip(w, v):
    print(f"c={a['concurrency']:>2}  tok/s {a['tokens_per_s']:8.1f} vs {b['tokens_per_s']:8.1f}"
          f"  ratio {a['tokens_per_s'] / b['tokens_per_s']:.2f}   TTFT p50 "
          f"{a['ttft_p50_s']*1e3:6.1f} vs {b['ttft_p50_s']*1e3:6.1f} ms"
          f"  ITL p50 {a['itl_p50_s']*1e3:5.2f} vs {b['itl_p50_s']*1e3:5.2f} ms")
PY
