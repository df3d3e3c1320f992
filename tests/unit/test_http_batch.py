"""Batch over HTTP on a fake engine: JSONL in and out, per-line errors, submit/poll/cancel."""

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
from worker.platforms.http_batch import MemoryBatchJobs, add_batch_routes, parse_lines

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
    add_batch_routes(app, state, jobs=MemoryBatchJobs(state, max_jobs=2))
    add_batch_routes(app, state)  # a second call (the lead's create_app may add them) is a no-op
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
    for route in ("/v1/batch", "/v1/batches"):
        r = await client.post(route, content=body)
        assert r.status_code == status
        assert needle in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_too_many_lines_is_413_naming_the_limit() -> None:
    with pytest.raises(Exception, match="at most 2 lines") as info:
        parse_lines(jsonl(line("a"), line("b"), line("c")), 2)
    assert getattr(info.value, "status_code", None) == 413


async def test_every_batch_route_needs_the_api_key(client: httpx.AsyncClient) -> None:
    for method, url in [("POST", "/v1/batch"), ("POST", "/v1/batches"),
                        ("GET", "/v1/batches/x"), ("GET", "/v1/batches/x/output"),
                        ("POST", "/v1/batches/x/cancel")]:
        r = await client.request(method, url, content=jsonl(line("a")),
                                 headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, url
        assert r.json()["error"]["type"] == "authentication_error"


async def test_submit_poll_fetch(client: httpx.AsyncClient, engine: GatedEngine) -> None:
    engine.gate.clear()
    r = await client.post("/v1/batches", content=jsonl(line("a"), line("b", n=99)))
    batch = r.json()
    assert r.status_code == 200 and batch["status"] == "in_progress"
    assert batch["id"].startswith("batch_") and batch["request_counts"]["total"] == 2
    r = await client.get(f"/v1/batches/{batch['id']}/output")
    assert r.status_code == 409 and r.json()["error"]["code"] == "batch_not_completed"

    engine.gate.set()
    for _ in range(200):
        batch = (await client.get(f"/v1/batches/{batch['id']}")).json()
        if batch["status"] != "in_progress":
            break
        await asyncio.sleep(0.01)
    assert batch["status"] == "completed" and batch["completed_at"] >= batch["created_at"]
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    out = read_jsonl(await client.get(f"/v1/batches/{batch['id']}/output"))
    assert [o["custom_id"] for o in out] == ["a", "b"]
    assert out[1]["response"]["status_code"] == 400


async def test_cancel_stops_a_running_batch_and_its_engine_requests(
        client: httpx.AsyncClient, engine: GatedEngine) -> None:
    engine.gate.clear()
    batch = (await client.post("/v1/batches", content=jsonl(line("a")))).json()
    for _ in range(200):  # until it is generating, stopped at the gate
        if engine.running:
            break
        await asyncio.sleep(0.005)
    assert engine.running
    r = await client.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert engine.running == set()
    assert (await client.get(f"/v1/batches/{batch['id']}/output")).status_code == 409


async def test_jobs_are_bounded_oldest_finished_evicted_first(
        client: httpx.AsyncClient, engine: GatedEngine) -> None:
    first = (await client.post("/v1/batches", content=jsonl(line("a")))).json()["id"]
    await asyncio.sleep(0.05)  # the first finishes
    engine.gate.clear()
    second = (await client.post("/v1/batches", content=jsonl(line("b")))).json()["id"]
    third = (await client.post("/v1/batches", content=jsonl(line("c")))).json()["id"]
    assert (await client.get(f"/v1/batches/{first}")).status_code == 404
    r = await client.post("/v1/batches", content=jsonl(line("d")))
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_batches"
    engine.gate.set()
    for batch_id in (second, third):
        await client.post(f"/v1/batches/{batch_id}/cancel")
    r = await client.get("/v1/batches/batch_nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "batch_not_found"


async def test_not_ready_is_503(state: AppState, client: httpx.AsyncClient) -> None:
    state.service = None
    for route in ("/v1/batch", "/v1/batches"):
        r = await client.post(route, content=jsonl(line("a")))
        assert r.status_code == 503
