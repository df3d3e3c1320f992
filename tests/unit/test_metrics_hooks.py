"""The metrics hooks: ChatService reports tokens, the HTTP adapter statuses, GET /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.unit.fake_engine import FakeEngine
from worker.harmony.tokens import RETURN, encode_text
from worker.openai.chat.protocol import ChatCompletionRequest
from worker.openai.chat.service import ChatService
from worker.openai.metrics import Metrics
from worker.platforms.http_app import AppState, create_app

ANSWER = encode_text("<|channel|>final<|message|>Hi there friend") + [RETURN]
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 50}


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def answer(prompt: list[int], options: object) -> list[int]:
    return list(ANSWER)


@pytest.fixture
def state() -> AppState:
    metrics = Metrics()
    svc = ChatService(FakeEngine(answer, chunk=2), today=lambda: "2026-11-27", observer=metrics)
    return AppState(service=svc, api_key=SecretStr("k"), metrics=metrics,
                    timeline={"probe": 0.01, "engine": 12.5})


@pytest.fixture
async def client(state: AppState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": "Bearer k"}) as c:
        yield c


async def test_service_reports_tokens_once_per_request() -> None:
    metrics = Metrics()
    svc = ChatService(FakeEngine(answer, chunk=2), today=lambda: "2026-11-27", observer=metrics)
    p = svc.prepare(ChatCompletionRequest.model_validate({**HELLO, "stream": True}))
    chunks = [c async for c in svc.stream(p)]
    done = await svc.complete(svc.prepare(ChatCompletionRequest.model_validate(HELLO)))
    v = values(metrics.render().decode())
    usage = done.usage
    assert usage is not None and chunks
    assert v[("worker_completion_tokens_total", ())] == 2 * usage.completion_tokens
    assert v[("worker_prompt_tokens_total", ())] == 2 * usage.prompt_tokens
    assert v[("worker_time_to_first_token_seconds_count", ())] == 2
    # chunk=2: every delta but the first of a request is one inter-token gap per token
    assert v[("worker_inter_token_latency_seconds_count", ())] == 2 * (len(ANSWER) - 2)
    assert v[("worker_requests_in_flight", ())] == 0


async def test_http_statuses_and_scrape(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200
    r = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    assert (await client.post("/v1/chat/completions", content=b"{")).status_code == 400
    assert (await client.post("/v1/chat/completions", json=HELLO,
                              headers={"Authorization": "Bearer no"})).status_code == 401
    assert (await client.post("/v1/chat/completions",
                              json={**HELLO, "model": "nope"})).status_code == 404
    await client.get("/v1/models")  # not a chat request: not counted
    assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401
    r = await client.get("/metrics")  # behind the API key, like the API
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    v = values(r.text)
    for status, n in (("200", 2), ("400", 1), ("401", 1), ("404", 1)):
        assert v[("worker_chat_requests_total", (("status", status),))] == n
    assert v[("worker_cold_start_seconds", (("phase", "engine"),))] == 12.5
    assert v[("worker_engine_requests_running", ())] == 0
    assert v[("worker_engine_up", ())] == 1


async def test_metrics_off_is_404() -> None:
    app = create_app(AppState())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/metrics")).status_code == 404
