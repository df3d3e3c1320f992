"""API key rules over real HTTP: with API_KEY set, only a bare /health is open.

The shared HTTP app (what `python -m worker serve` and Modal's `web` both serve) runs on
uvicorn on 127.0.0.1 with a fake engine; requests go over the socket with httpx and the
official openai client.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from pydantic import SecretStr

from tests.unit.fake_engine import FakeEngine
from tests.unit.live_http import serving
from tests.unit.test_http_batch import answer
from worker.openai.chat.service import ChatService
from worker.openai.metrics import Metrics
from worker.platforms.http_app import AppState, create_app

KEY = "sk-auth-test-123"
GUARDED = [("GET", "/ready"), ("GET", "/metrics"), ("GET", "/v1/models"),
           ("POST", "/v1/chat/completions"), ("POST", "/v1/batch"), ("POST", "/v1/batches"),
           ("GET", "/v1/batches/batch_x"), ("GET", "/openapi.json"), ("GET", "/docs"),
           ("GET", "/no/such/path")]


def app_state(api_key: str | None) -> AppState:
    state = AppState(api_key=SecretStr(api_key) if api_key else None,
                     timeline={"engine": 12.5})
    state.service = ChatService(FakeEngine(answer), today=lambda: "2026-12-02")
    state.metrics = Metrics()
    return state


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serving(create_app(app_state(KEY))) as base:
        yield base


@pytest.fixture(scope="module")
def open_url() -> Iterator[str]:
    with serving(create_app(app_state(None))) as base:
        yield base


def test_health_is_open_and_says_nothing_else(url: str) -> None:
    r = httpx.get(f"{url}/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", KEY, "Bearer"])
def test_everything_else_needs_the_key(url: str, method: str, path: str,
                                       header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = httpx.request(method, f"{url}{path}", headers=headers, content=b"{}")
    assert r.status_code == 401, (path, r.status_code, r.text)
    error = r.json()["error"]
    assert error["type"] == "authentication_error" and "Bearer" in error["message"]
    assert KEY not in r.text and "12.5" not in r.text  # neither the key nor the timeline
    assert r.headers["www-authenticate"] == "Bearer"


def test_with_the_key_ready_and_metrics_answer(url: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    ready = httpx.get(f"{url}/ready", headers=auth)
    assert ready.status_code == 200 and ready.json()["timeline"] == {"engine": 12.5}
    metrics = httpx.get(f"{url}/metrics", headers=auth)
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    assert httpx.get(f"{url}/no/such/path", headers=auth).status_code == 404


def test_openai_client_with_and_without_the_key(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(model="fake-gpt-oss",
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "done"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()


def test_without_an_api_key_nothing_asks_for_one(open_url: str) -> None:
    for path in ("/health", "/ready", "/metrics", "/v1/models"):
        assert httpx.get(f"{open_url}{path}").status_code == 200, path
