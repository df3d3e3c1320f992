"""The Modal app, run locally on the scripted tiny model with the real vLLM CPU engine.

Lifecycle as Modal drives it (enter -> web/chat/batch -> exit), with no Modal server:
`.local()` runs the sync enter hooks, and `web`'s ASGI app is served by uvicorn on
127.0.0.1 from a third event loop (neither the engine's nor pytest's), then driven by
the official `openai` client, streaming and tools included. The `download` function runs
for real in a fresh interpreter against a Hugging Face look-alike on 127.0.0.1, onto a
local folder standing in for the weights volume. Modal's volumes themselves (reload,
commit) exist only on Modal: their order is checked in tests/unit/test_modal_app.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import engine_env, free_port
from tests.integration.fake_hub import FakeHub
from worker.platforms import modal_support
from worker.tiny import scripted

KEY = "modal-key-123"
MODEL = "tiny-scripted"
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 100}
HI = [{"role": "user", "content": "Hi there"}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compile-volume")


@pytest.fixture(scope="module")
def worker(scripted_model: Path, compile_cache: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("modal-local")
    env = engine_env(tmp, MODEL=str(scripted_model),
                     SERVED_MODEL_NAME=MODEL, API_KEY=KEY, MAX_NUM_SEQS="8",
                     VLLM_ENABLE_V1_MULTIPROCESSING="0", BATCH_DIR=str(tmp / "batches"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in modal_support.compile_cache_env("/"):
            mp.delenv(name, raising=False)  # the runtime puts them on the cache volume
        import modal_app

        mp.setattr(modal_app, "COMPILE_CACHE", str(compile_cache))  # the volume's mount
        w = modal_app.GptOss()
        yield w
        w.shutdown()  # idempotent: test_exit_shuts_the_engine_down ran it already


@dataclass
class Served:
    """`web`'s ASGI app on uvicorn, on a thread (and event loop) of its own."""

    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.config.port}/v1"

    def stop(self) -> None:  # ASGI lifespan shutdown: Modal does it before the exit hooks
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def served(worker: Any) -> Iterator[Served]:
    import uvicorn

    asgi = worker.web.local()  # the sync enter hooks run here: the engine is built once
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    served = Served(server, threading.Thread(target=server.run, daemon=True))
    served.thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield served
    served.stop()


@pytest.fixture(scope="module")
def base_url(served: Served) -> str:
    return served.url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)


async def test_chat_method(worker: Any, base_url: str) -> None:
    reply = await worker.chat.local({"messages": HI, **GREEDY})
    msg = reply["choices"][0]["message"]
    assert msg["content"] == scripted.ANSWER and msg["reasoning"] == scripted.REASONING
    bad = await worker.chat.local({"messages": HI, "temperature": 9})
    assert bad["error"]["type"] == "invalid_request_error" and bad["error"]["param"]
    streamed = await worker.chat.local({"messages": HI, "stream": True})
    assert streamed["error"]["param"] == "stream"


async def test_batch_method_keeps_order_and_per_line_errors(worker: Any, base_url: str) -> None:
    lines = [{"custom_id": "hi", "body": {"messages": HI, **GREEDY}},
             {"custom_id": "bad", "body": {"messages": HI, "n": 99}},
             {"custom_id": "tool", "body": {"messages": ASK_WEATHER, "tools": TOOLS, **GREEDY}}]
    out = await worker.batch.local(lines)
    assert [o["custom_id"] for o in out] == ["hi", "bad", "tool"]
    assert [o["response"]["status_code"] for o in out] == [200, 400, 200]
    call = out[2]["response"]["body"]["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == json.loads(scripted.TOOL_ARGS)


def test_openai_client_over_http(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    r = client.chat.completions.create(model=MODEL, messages=HI, **GREEDY)
    assert r.choices[0].message.content == scripted.ANSWER
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=str(client.base_url), api_key="wrong",
                      max_retries=0).models.list()


def test_streamed_tool_call_over_http(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK_WEATHER,
                                                 tools=TOOLS, stream=True, **GREEDY))
    name, args = "", ""
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            name += (tc.function.name or "") if tc.function else ""
            args += (tc.function.arguments or "") if tc.function else ""
    assert name == "get_weather" and json.loads(args) == json.loads(scripted.TOOL_ARGS)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_batch_over_http_sync_and_async(base_url: str) -> None:
    body = "".join(json.dumps({"custom_id": str(i), "body": {"messages": HI, **GREEDY}}) + "\n"
                   for i in range(3))
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as http:
        out = [json.loads(x) for x in http.post("/batch", content=body).text.splitlines()]
        assert [o["custom_id"] for o in out] == ["0", "1", "2"]
        assert {o["response"]["body"]["choices"][0]["message"]["content"] for o in out} == {
            scripted.ANSWER}

    # the Files and Batches APIs, with the official client (run locally: the server's runner)
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)
    lines = "".join(json.dumps({"custom_id": str(i), "method": "POST",
                                "url": "/v1/chat/completions",
                                "body": {"messages": HI, **GREEDY}}) + "\n" for i in range(3))
    f = client.files.create(file=("in.jsonl", lines.encode()), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None and batch.request_counts.completed == 3
    assert batch.output_file_id is not None
    out = client.files.content(batch.output_file_id).text.splitlines()
    assert [json.loads(x)["custom_id"] for x in out] == ["0", "1", "2"]


def test_compile_caches_go_to_the_cache_volume(served: Served, compile_cache: Path) -> None:
    assert {k: os.environ[k] for k in modal_support.compile_cache_env("/")} == \
        modal_support.compile_cache_env(compile_cache)


def test_ready_and_metrics_need_the_key_health_does_not(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{root}/health").json() == {"status": "ok"}
    for path in ("/ready", "/metrics"):
        assert httpx.get(f"{root}{path}").status_code == 401, path
    ready = httpx.get(f"{root}/ready", headers=auth).json()
    assert ready["status"] == "ready" and "engine" in ready["timeline"]
    metrics = httpx.get(f"{root}/metrics", headers=auth)
    assert metrics.status_code == 200  # the chats above were counted
    assert 'worker_chat_requests_total{status="200"}' in metrics.text


def test_snapshot_warm_up_on_the_real_engine(worker: Any, served: Served) -> None:
    assert worker.runtime.warm_up() == len(modal_support.WARMUP_REQUESTS)


DOWNLOAD = """
import sys, modal_app
modal_app.download.local(model=sys.argv[1])
"""


@pytest.fixture(scope="module")
def hub(scripted_model: Path) -> Iterator[FakeHub]:
    hub = FakeHub().start()
    tiny = {p.name: p.read_bytes() for p in scripted_model.iterdir() if p.is_file()}
    hub.add("openai/tiny-gpt-oss", {**tiny, "original/model.safetensors": b"x" * 1000})
    yield hub
    hub.stop()


def test_download_function_fills_the_volume_once(hub: FakeHub, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """`modal run modal_app.py::download`, then what a GPU container sees at start."""
    volume = tmp_path / "hf-volume"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "VLLM_", "MODEL", "MODAL_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"),
               MODEL_CACHE_DIR=str(volume), PYTHONPATH=str(Path(__file__).parents[2]))
    gpu_env = {"MODEL_CACHE_DIR": str(volume)}
    with caplog.at_level(logging.INFO, logger="modal_app"):
        assert not modal_support.report_volume(gpu_env, ["openai/tiny-gpt-oss"])
    assert "not on the volume" in caplog.text and "modal_app.py::download" in caplog.text

    hub.reset()
    out = subprocess.run([sys.executable, "-c", DOWNLOAD, "openai/tiny-gpt-oss"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fetched = hub.gets("openai/tiny-gpt-oss")
    assert "config.json" in fetched and set(fetched.values()) == {1}  # each file once
    assert not [s for s in hub.seen if "original" in s.path]

    caplog.clear()
    hub.reset()  # a GPU container: the weights are there, checked, loaded in place
    with caplog.at_level(logging.INFO, logger="modal_app"):
        assert modal_support.report_volume(gpu_env, ["openai/tiny-gpt-oss"])
    assert "loading them in place" in caplog.text and hub.seen == []
    found = modal_support.weights_on_volume(gpu_env, ["openai/tiny-gpt-oss"])
    snapshot = found["openai/tiny-gpt-oss"]
    assert snapshot is not None and {p.name for p in snapshot.iterdir()} == set(fetched)

    again = subprocess.run([sys.executable, "-c", DOWNLOAD, "openai/tiny-gpt-oss"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert hub.seen == []  # a second run finds it complete: no request at all


def test_exit_shuts_the_engine_down(worker: Any, served: Served) -> None:
    runtime = worker.runtime
    served.stop()
    worker.shutdown()  # what @modal.exit() runs
    assert getattr(worker, "runtime", None) is None
    assert runtime.state.draining and runtime.engine_loop.loop.is_closed()
