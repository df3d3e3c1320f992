#!/usr/bin/env bash
# Verifies the RunPod image's install step without a Docker engine (not run in CI: it
# downloads vLLM's CUDA wheels, several GB).
#
#   bash scripts/verify-image.sh [WORKDIR]      # WORKDIR: kept for inspection (default: a
#                                               # temporary folder, removed at the end)
#
# 1. A fresh virtual environment gets `vllm==<the pin>` from the package index, as the
#    base image vllm/vllm-openai:v<pin> holds it (the CUDA build, its torch and kernels).
# 2. The build context is copied the way Docker sends it (.dockerignore's allow-list), and
#    the Dockerfile's own RUN steps that install the worker are run there, in order, with
#    `python3` being that environment: the same constraints (image-install.sh freezes the
#    engine stack), so a dependency that would move vLLM or torch fails here as it would
#    fail the build.
# 3. With the network closed (HF_HUB_OFFLINE and a dead proxy, as the Dockerfile's
#    `--network=none` check): the worker's modules import, the Harmony vocabulary loads,
#    and every engine argument the worker can emit is a field of this vLLM's
#    AsyncEngineArgs (the CUDA build's, not the CPU build CI tests against).
#
# It needs python3 (3.10-3.13), pip access to the package index and ~15 GB of disk.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
if [ -n "${1:-}" ]; then
  WORK=$1
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
step() { printf '\n== verify-image: %s\n' "$*"; }

cd "$ROOT"
pin=$("$PY" -c 'import re, tomllib; gpu = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]; print(next(re.fullmatch(r"vllm==(.+)", r).group(1) for r in gpu if r.startswith("vllm==")))')

step "fresh venv with vllm==$pin (the base image's engine stack)"
[ -x "$WORK/venv/bin/python3" ] || "$PY" -m venv "$WORK/venv"
export PATH="$WORK/venv/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
python3 -m pip install -q --upgrade pip
python3 -m pip install -q "vllm==$pin"
# The base image's torch is a CUDA build; a local wheel folder or a CPU index in the pip
# configuration can slip in a CPU build, which is not the image (then run this with
# PIP_CONFIG_FILE=/dev/null and without PIP_FIND_LINKS).
python3 -c 'import sys, torch; sys.exit(None if torch.version.cuda else f"verify-image: pip installed torch {torch.__version__}, a CPU build; the image has a CUDA build (see the comment above)")'

step "the build context (.dockerignore's allow-list)"
ctx="$WORK/context"
rm -rf "$ctx"
mkdir -p "$ctx"
grep '^!' .dockerignore | sed 's/^!//; s#/$##' | while read -r path; do
  [ -e "$path" ] || continue  # an allowed path that does not exist is simply not sent
  mkdir -p "$ctx/$(dirname "$path")"
  cp -r "$path" "$ctx/$path"
done
find "$ctx" -name __pycache__ -prune -exec rm -rf {} +

step "the Dockerfile's install steps"
# Its RUN lines that install the worker (not the optional weight bake or the user setup),
# continuation lines joined; a RUN flag such as --network=none is Docker's, not the shell's.
mapfile -t runs < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' Dockerfile \
  | grep -E '^RUN ' | grep -E 'image-install\.sh|pip install --no-deps' \
  | sed -E 's/^RUN +//; s/^(--[a-z]+=[^ ]+ +)+//')
[ "${#runs[@]}" -ge 3 ] || { echo "verify-image: found ${#runs[@]} install steps in the Dockerfile" >&2; exit 1; }
offline=(env HF_HUB_OFFLINE=1 HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
         https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy=)
for cmd in "${runs[@]}"; do
  echo "+ $cmd"
  if [[ $cmd == *"image-install.sh check"* ]]; then
    (cd "$ctx" && "${offline[@]}" bash -c "$cmd")
  else
    (cd "$ctx" && bash -c "$cmd")
  fi
done

step "the worker imports and the engine arguments exist, offline"
(cd "$WORK" && "${offline[@]}" python3 - <<'PY'
import dataclasses
import importlib

import torch
import vllm
from vllm.engine.arg_utils import AsyncEngineArgs

import worker
from worker.engine import vllm_engine
from worker.harmony import tokens
from worker.setup import plan

for name in ("worker.platforms.runpod_handler", "worker.platforms.http_app",
             "worker.setup.bootstrap", "runpod"):
    importlib.import_module(name)
fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
missing = (vllm_engine.ENGINE_ARG_NAMES | plan.ENGINE_ARG_NAMES) - fields
assert not missing, f"engine arguments this vLLM does not have: {sorted(missing)}"
assert vllm.__version__ == worker.VLLM_VERSION, (vllm.__version__, worker.VLLM_VERSION)
ids = tokens.encode_text("Hello, world")
assert tokens.decode_text(ids) == "Hello, world" and tokens.stop_token_ids()
print(f"vLLM {vllm.__version__} on torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"worker {worker.__file__}, "
      f"Harmony vocabulary loaded ({tokens.encoding().name}), "
      f"{len(vllm_engine.ENGINE_ARG_NAMES)} engine arguments present")
PY
)
python3 -m pip freeze | grep -iE '^(vllm|torch|runpod|oss-harmony|fastapi|pydantic)==' | sed 's/^/  /'
step "OK"
