"""The Modal class, run locally on the scripted tiny model with the real vLLM CPU engine.

Lifecycle as Modal drives it (enter -> web/chat/batch -> exit), with no Modal server:
`.local()` runs the sync enter hooks, and `web`'s ASGI app is served by uvicorn on
127.0.0.1 from a third event loop (neither the engine's nor pytest's), then driven by
the official `openai` client, streaming and tools included.
"""

from __future__ import annotations

import json
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
def worker(scripted_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("modal-local")
    env = engine_env(tmp, MODEL=str(scripted_model),
                     SERVED_MODEL_NAME=MODEL, API_KEY=KEY, MAX_NUM_SEQS="8",
                     VLLM_ENABLE_V1_MULTIPROCESSING="0", BATCH_DIR=str(tmp / "batches"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        import modal_app

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


def test_exit_shuts_the_engine_down(worker: Any, served: Served) -> None:
    runtime = worker.runtime
    served.stop()
    worker.shutdown()  # what @modal.exit() runs
    assert getattr(worker, "runtime", None) is None
    assert runtime.state.draining and runtime.engine_loop.loop.is_closed()
