"""ENGINE_ARGS and worker-vllm's engine-argument variables, checked at start against the
pinned vLLM: a bad one stops `python -m worker serve` in the plan phase, before any
download or engine, naming the variable and the key (no engine starts here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import engine_env


def start(model: Path, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "serve"], capture_output=True,
                          text=True, timeout=300,
                          env=engine_env(tmp, MODEL=str(model), HOST="127.0.0.1", PORT="9",
                                         **env))


@pytest.mark.parametrize(("env", "words"), [
    # BLOCK_SIZE (worker-vllm's) is a real engine argument and passes; the typo stops it
    ({"BLOCK_SIZE": "32", "ENGINE_ARGS": '{"block_sise": 32}'},
     ["not an engine argument of vLLM 0.32.0", "ENGINE_ARGS: 'block_sise'"]),
    ({"ENGINE_ARGS": '{"enforce_eager": false}'}, ["'enforce_eager'", "ENFORCE_EAGER"]),
])
def test_a_bad_engine_argument_stops_the_worker_naming_it(
        random_model: Path, tmp_path: Path, env: dict[str, str], words: list[str]) -> None:
    out = start(random_model, tmp_path, **env)
    text = out.stdout + out.stderr
    assert out.returncode == 3, text[-2000:]
    assert "start-up phase download" not in text  # stopped before weights or engine
    for word in words:
        assert word in text, text[-2000:]
