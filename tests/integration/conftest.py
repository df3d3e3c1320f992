"""Integration fixtures: tiny gpt-oss checkpoints and real worker processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.tiny import ensure_tiny_model

START_TIMEOUT = 600.0  # generous: an engine start on a loaded 2-core machine can take minutes


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared = os.environ.get("TINY_MODEL_CACHE")  # reuse across runs locally if set
    return Path(shared) if shared else tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def random_model(tiny_cache: Path) -> Path:
    return ensure_tiny_model("random", tiny_cache)


@pytest.fixture(scope="session")
def scripted_model(tiny_cache: Path) -> Path:
    return ensure_tiny_model("scripted", tiny_cache)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker process on the CPU engine, isolated under `tmp`."""
    (tmp / "vllm-cache").mkdir(parents=True, exist_ok=True)
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "RUNPOD_"))}
    env.update({
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(tmp / "vllm-cache"),
        "TMPDIR": str(tmp / "tmp"),
        "MAX_MODEL_LEN": "2048",
        "MAX_NUM_SEQS": "32",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "info",
    })
    env.update(extra)
    return env


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_server(model: Path, tmp: Path, **env_extra: str) -> Iterator[Server]:
    port = free_port()
    env = engine_env(tmp, MODEL=str(model), HOST="127.0.0.1", PORT=str(port), **env_extra)
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        wait_ready(server, api_key=env_extra.get("API_KEY"))
        yield server
    finally:
        stop(proc)


def wait_ready(server: Server, timeout: float = START_TIMEOUT,
               api_key: str | None = None) -> None:
    """Poll /ready (with the API key where one is set: /ready needs it then)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n"
                               f"{server.log_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/ready", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready in {timeout}s:\n{server.log_text()[-4000:]}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# One random and one scripted server for the whole session: every module that only needs
# "a worker on this model" shares them (an engine start costs a minute or more on CI's
# two cores). A module that needs other settings starts its own with run_server.
@pytest.fixture(scope="session")
def random_server(random_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(random_model, tmp_path_factory.mktemp("random-server"),
                    SERVED_MODEL_NAME="tiny-random", MAX_NUM_SEQS="64") as server:
        yield server


@pytest.fixture(scope="session")
def scripted_server(
    scripted_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    # 8192 tokens of context: Codex's instructions and tools alone are about 5,500
    with run_server(scripted_model, tmp_path_factory.mktemp("scripted-server"),
                    SERVED_MODEL_NAME="tiny-scripted", API_KEY="test-key-123",
                    MAX_MODEL_LEN="8192") as server:
        yield server


@pytest.fixture(scope="session")
def runpod_pair(random_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One job queue and `python -m worker runpod` polling it, shared by the RunPod modules.

    test_runpod_worker's engine-death test kills this worker: it runs last of its module,
    and the modules after it (alphabetically) do not use this fixture.
    """
    from .runpod_queue import queue_worker  # it imports this module

    with queue_worker(random_model, tmp_path_factory.mktemp("runpod-worker"),
                      MAX_NUM_SEQS="64") as both:
        yield both


@pytest.fixture(scope="session")
def reliability() -> Iterator[dict[str, object]]:
    """Figures of the reliability tests; written as JSON to $RELIABILITY_OUT when set."""
    record: dict[str, object] = {}
    yield record
    out = os.environ.get("RELIABILITY_OUT")
    if out and record:
        import json

        Path(out).write_text(json.dumps(record, indent=2, sort_keys=True))
