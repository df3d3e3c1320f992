"""`/v1/batch` on a fake engine: JSONL in and out, per-line errors (the Files and Batches APIs
are in test_files_batches_http.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from openai_harmony import Message, Role
from pydantic import SecretStr

from tests.unit.fake_engine import FakeEngine
from worker.engine.api import GenerationDelta, SamplingOptions
from worker.harmony.tokens import RETURN, encode_text, encoding
from worker.openai.chat.service import ChatService
from worker.platforms.http_app import AppState, create_app
from worker.platforms.http_batch import parse_lines

KEY = "sk-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


def answer(_: list[int], __: SamplingOptions) -> list[int]:
    m = Message.from_role_and_content(Role.ASSISTANT, "done").with_channel("final")
    toks = encoding().render(m)
    return toks[len(encode_text("assistant")) + 1:-1] + [RETURN]


class GatedEngine(FakeEngine):
    """Generation stops after its first delta until `gate` is set: a batch caught mid-way."""

    def __init__(self) -> None:
        super().__init__(answer)
        self.gate = asyncio.Event()
        self.gate.set()

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncGenerator[GenerationDelta, None]:
        async for delta in super().generate(request_id, prompt_token_ids, options):
            yield delta
            await self.gate.wait()


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 32, **body}}


def jsonl(*lines: Any) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def read_jsonl(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.headers["content-type"].startswith("application/jsonl")
    return [json.loads(x) for x in r.text.splitlines()]


@pytest.fixture
def engine() -> GatedEngine:
    return GatedEngine()


@pytest.fixture
def state(engine: GatedEngine) -> AppState:
    svc = ChatService(engine, today=lambda: "2026-11-27")
    return AppState(service=svc, api_key=SecretStr(KEY))


@pytest.fixture
async def client(state: AppState) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(state)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
        yield c


async def test_sync_batch_answers_jsonl_in_order_with_per_line_errors(
        client: httpx.AsyncClient) -> None:
    body = jsonl(line("a"), line("b", temperature=9), ["not", "an", "object"], line("c"))
    r = await client.post("/v1/batch", content=body)
    assert r.status_code == 200
    out = read_jsonl(r)
    assert [o["custom_id"] for o in out] == ["a", "b", None, "c"]
    assert [o["response"]["status_code"] for o in out] == [200, 400, 400, 200]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "done"
    assert out[0]["error"] is None and out[1]["error"]["message"]


async def test_sync_batch_accepts_json_lines_and_a_pretty_printed_single_line(
        client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/batch", json={"lines": [line("x"), line("y")]})
    assert [o["custom_id"] for o in read_jsonl(r)] == ["x", "y"]
    r = await client.post("/v1/batch", content=json.dumps(line("z"), indent=2))
    assert [o["custom_id"] for o in read_jsonl(r)] == ["z"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b'{"custom_id": "a"}\n{oops\n', 400, "line 2 is not valid JSON"),
    (b"\n \n", 400, "the batch is empty"),
    (b'{"lines": 3}', 400, "lines must be a list"),
    (b"\xff\xfe", 400, "UTF-8"),
])
async def test_a_bad_document_is_one_openai_error(client: httpx.AsyncClient, body: bytes,
                                                  status: int, needle: str) -> None:
    r = await client.post("/v1/batch", content=body)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_too_many_lines_is_413_naming_the_limit() -> None:
    with pytest.raises(Exception, match="at most 2 lines") as info:
        parse_lines(jsonl(line("a"), line("b"), line("c")), 2)
    assert getattr(info.value, "status_code", None) == 413


async def test_every_batch_route_needs_the_api_key(client: httpx.AsyncClient) -> None:
    for method, url in [("POST", "/v1/batch"), ("POST", "/v1/batches"), ("GET", "/v1/batches"),
                        ("GET", "/v1/batches/x"), ("POST", "/v1/batches/x/cancel"),
                        ("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/x"),
                        ("GET", "/v1/files/x/content"), ("DELETE", "/v1/files/x")]:
        r = await client.request(method, url, content=jsonl(line("a")),
                                 headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, url
        assert r.json()["error"]["type"] == "authentication_error"


async def test_not_ready_is_503(state: AppState, client: httpx.AsyncClient) -> None:
    state.service = None
    for route in ("/v1/batch", "/v1/batches"):
        r = await client.post(route, content=jsonl(line("a")))
        assert r.status_code == 503, route
