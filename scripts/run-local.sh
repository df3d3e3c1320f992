#!/usr/bin/env bash
# Sets up .venv if needed, then serves the worker on http://127.0.0.1:8000/v1.
# With no GPU and no MODEL set this is the tiny random gpt-oss on the CPU engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HOST=${HOST:-127.0.0.1} PORT=${PORT:-8000}
exec .venv/bin/python -m worker serve "$@"
