#!/usr/bin/env bash
# The real-size GPU benchmark (docs/GPU.md, "Real size") as short commands, one per device call,
# on a machine where ../shared/gpu/README.md's recipe installed vLLM into /tmp/site and the vocab
# into /tmp/vocab:
#   bash bench/gpu_real.sh setup        # versions, GPU, drift test, both shape folders, plans
#   bash bench/gpu_real.sh run ARGS...  # python bench/gpu_real.py --out $OUT --work $WORK ARGS
#   bash bench/gpu_real.sh load ARGS... # python bench/load_bench.py --out $OUT --work $WORK ARGS
# TOKENIZER_DIR: a built tiny-o200k tokenizer folder to reuse (building one takes a minute);
# SHAPES="shape-20b": set up one shape only; SKIP_DRIFT=1: no drift test; SKIP_IMPORTTIME=1: no
# `-X importtime` runs.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/gpu-real-out}
WORK=${WORK:-/tmp/gpu-real}
export PYTHONPATH=$REPO:/tmp/site TIKTOKEN_ENCODINGS_BASE=/tmp/vocab PATH=/tmp/site/bin:$PATH
export VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/models"
case "${1:-}" in
setup)
  { nvidia-smi; python3 -c "import torch, vllm; print('torch', torch.__version__, 'vllm', vllm.__version__)"
    nproc; free -g; df -h /tmp; } 2>&1 | tee "$OUT/setup.txt"
  if [ -n "${TOKENIZER_DIR:-}" ] && [ ! -d "$WORK/models/tiny-o200k-tokenizer-v1" ]; then
    cp -r "$TOKENIZER_DIR" "$WORK/models/tiny-o200k-tokenizer-v1"
  fi
  for k in ${SHAPES:-shape-20b shape-120b}; do
    (cd "$REPO" && python3 -m worker.tiny --kind $k --cache "$WORK/models")
  done 2>&1 | tee -a "$OUT/setup.txt"
  if [ -z "${SKIP_DRIFT:-}" ]; then
    (cd "$REPO" && python3 -m pytest tests/integration/test_vllm_drift.py -q --noconftest \
       -p no:cacheprovider) 2>&1 | tee "$OUT/drift.txt"
  fi
  # what importing vLLM costs, module by module, twice (the second with the files cached):
  # the engine's own imports (worker/engine/vllm_engine.py)
  for i in $([ -n "${SKIP_IMPORTTIME:-}" ] || echo 1 2); do
    (cd "$REPO" && /usr/bin/time -f "import wall %e s" python3 -X importtime -c \
      "import vllm; from vllm.engine.arg_utils import AsyncEngineArgs; from vllm.v1.engine.async_llm import AsyncLLM" \
      2> "$OUT/importtime-$i.txt"); tail -1 "$OUT/importtime-$i.txt"
  done
  for k in ${SHAPES:-shape-20b shape-120b}; do
    (cd "$REPO" && MODEL=$WORK/models/tiny-gpt-oss-$k-v1 LOAD_FORMAT=dummy python3 -m worker plan)
  done 2>&1 | tee "$OUT/plan.txt"
  ;;
run)
  shift
  python3 "$REPO/bench/gpu_real.py" --out "$OUT" --work "$WORK" "$@"
  ;;
load)
  shift
  python3 "$REPO/bench/load_bench.py" --out "$OUT" --work "$WORK" "$@"
  ;;
*)
  echo "usage: bash bench/gpu_real.sh setup | run ARGS... | load ARGS..." >&2
  exit 2
  ;;
esac
