"""Server processes for the benchmark: our worker, vLLM's OpenAI server, the RunPod worker.

Both HTTP servers get the same engine arguments: vLLM's command line is derived from the
arguments our worker resolves for the same model (`worker.setup.bootstrap.resolve`), and both run
with the same environment (VLLM_ENABLE_V1_MULTIPROCESSING=0, the worker's CPU default, so
each server is one API process plus one EngineCore process with the uni-process executor).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 420.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment every server gets (as the integration tests' `engine_env`)."""
    (tmp / "vllm-cache").mkdir(parents=True, exist_ok=True)
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "RUNPOD_"))}
    env.update({
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(tmp / "vllm-cache"),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "TMPDIR": str(tmp / "tmp"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def worker_settings_env(model: Path, max_model_len: int, max_num_seqs: int) -> dict[str, str]:
    return {"MODEL": str(model), "SERVED_MODEL_NAME": "bench", "MAX_MODEL_LEN": str(max_model_len),
            "MAX_NUM_SEQS": str(max_num_seqs), "LOG_LEVEL": "warning"}


def resolved_engine_args(model: Path, max_model_len: int, max_num_seqs: int) -> dict[str, Any]:
    """The AsyncEngineArgs our worker passes for this model (no vLLM import)."""
    from worker.setup.bootstrap import resolve
    from worker.setup.config import Settings

    env = worker_settings_env(model, max_model_len, max_num_seqs)
    resolved = resolve(Settings.from_env(env), env, None)
    return dict(resolved.engine_config.engine_args)


def vllm_cli_args(engine_args: Mapping[str, Any]) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server` flags for the same engine arguments."""
    out: list[str] = []
    for key, value in engine_args.items():
        if key == "served_model_name":
            continue  # the benchmark names both servers "bench"
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    started: float = 0.0
    ready_s: float = 0.0
    timeline: dict[str, float] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) of the API process and of its children (EngineCore)."""
        api = _cpu(self.proc.pid)
        kids = sum(_cpu(pid) for pid in _children(self.proc.pid))
        return {"api": api, "engine": kids}


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Proc:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    return Proc(name=name, proc=proc, log=log, started=time.perf_counter())


def start_worker(model: Path, tmp: Path, max_model_len: int, max_num_seqs: int,
                 src: Path = REPO, extra_env: Mapping[str, str] | None = None) -> Proc:
    """`python -m worker serve`, from `src` (a checkout; the current one by default)."""
    port = free_port()
    env = base_env(tmp, HOST="127.0.0.1", PORT=str(port),
                   **worker_settings_env(model, max_model_len, max_num_seqs))
    env.update(extra_env or {})
    env["PYTHONPATH"] = str(src)
    p = _spawn("worker", [sys.executable, "-m", "worker", "serve"], env, tmp / "worker.log", src)
    p.url = f"http://127.0.0.1:{port}"
    return p


def start_vllm(model: Path, tmp: Path, engine_args: Mapping[str, Any]) -> Proc:
    port = free_port()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
            "--port", str(port), "--served-model-name", "bench", *vllm_cli_args(engine_args)]
    p = _spawn("vllm", argv, base_env(tmp), tmp / "vllm.log", tmp)
    p.url = f"http://127.0.0.1:{port}"
    return p


def start_runpod(model: Path, tmp: Path, queue_url: str, max_model_len: int,
                 max_num_seqs: int) -> Proc:
    env = base_env(
        tmp, RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", RUNPOD_SKIP_GPU_CHECK="true",
        RUNPOD_POD_ID="local",
        RUNPOD_WEBHOOK_GET_JOB=f"{queue_url}/job-take/$ID?gpu=test",
        RUNPOD_WEBHOOK_POST_OUTPUT=f"{queue_url}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
        RUNPOD_WEBHOOK_POST_STREAM=f"{queue_url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
        **worker_settings_env(model, max_model_len, max_num_seqs),
    )
    env["PYTHONPATH"] = str(REPO)
    return _spawn("runpod", [sys.executable, "-m", "worker", "runpod"], env, tmp / "runpod.log",
                  REPO)


def wait_ready(p: Proc, path: str, timeout: float = START_TIMEOUT) -> float:
    """Poll `path` every 50 ms until 200; returns seconds from spawn to ready."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
            try:
                r = client.get(p.url + path)
                if r.status_code == 200:
                    p.ready_s = time.perf_counter() - p.started
                    if path == "/ready":
                        p.timeline = dict(r.json().get("timeline") or {})
                    return p.ready_s
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{p.name} not ready in {timeout}s:\n{p.tail()}")


def stop(p: Proc, timeout: float = 30.0) -> None:
    """SIGTERM the process group we started (server and its EngineCore), then SIGKILL."""
    if p.proc.poll() is None:
        try:
            os.killpg(p.proc.pid, signal.SIGTERM)
            p.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()
        except ProcessLookupError:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.proc.pid, signal.SIGKILL)  # an EngineCore left behind in the group


def add_output_args(ap: argparse.ArgumentParser) -> None:
    """--cache (tiny checkpoints), --out (JSON results), --markdown (the page to update)."""
    ap.add_argument("--cache", default=os.environ.get("TINY_MODEL_CACHE")
                    or str(Path(tempfile.gettempdir()) / "bench-tiny-models"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"))
