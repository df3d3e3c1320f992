#!/usr/bin/env bash
# Every GPU step in one command: bench/gpu_smoke.sh (plan, drift test, scripted model:
# client checks, cold and warm start) then bench/gpu_mxfp4.sh (MXFP4 model: client
# checks, throughput against vLLM's own server). Usage: bash bench/gpu_all.sh [OUTDIR]
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu-all}}
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/gpu_smoke.sh" "$OUT/smoke"; a=$?
bash "$here/gpu_mxfp4.sh" "$OUT/mxfp4"; b=$?
exit $(( a || b ))
