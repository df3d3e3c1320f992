#!/usr/bin/env bash
# Sets up .venv if needed, then lints, type-checks and runs every test
# (unit tests, then integration tests on the real vLLM CPU engine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
mypy worker
python -c "import sys, worker; bad = [m for m in ('vllm', 'torch', 'runpod') if m in sys.modules]; sys.exit(f'import worker pulled in {bad}' if bad else 0)"
python -m pytest tests "$@"
