"""Fuzzing outside the schema: valid requests with one field turned hostile (tests/hostile.py).

Every endpoint on the fake engine, in process: chat, completions and responses over the
real FastAPI app (ASGI transport), a line of `/v1/batch` (chat and completions), and RunPod
jobs through the job normaliser (a plain chat job, a prompt job, the chat, completions and
responses routes, a batch job). Property: never a 5xx, a 4xx names the
mutated field in `param`, and a normal request is answered right after. A fixed seed
and at least 2,000 cases; FUZZ_HOSTILE_EXAMPLES raises the count.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from tests.hostile import (
    TEMPLATES,
    Answer,
    Case,
    check_answer,
    encode,
    error_answer,
    family_cases,
    mutate,
    plain,
)
from tests.unit.fake_engine import FakeEngine
from worker.harmony import tokens
from worker.openai.chat.service import ChatService
from worker.platforms.http_app import create_app
from worker.platforms.http_common import AppState
from worker.platforms.runpod_jobs import run_job

EXAMPLES = int(os.environ.get("FUZZ_HOSTILE_EXAMPLES", "2200"))
# endpoint -> the request family its bodies are (tests/hostile.py FAMILIES)
FAMILY = {"http chat": "chat", "http batch line": "chat", "runpod chat": "chat",
          "runpod openai route": "chat", "runpod batch line": "chat",
          "http completions": "completions", "http completions batch line": "completions",
          "runpod completions route": "completions", "runpod prompt job": "prompt job",
          "http responses": "responses", "runpod responses route": "responses"}
ENDPOINTS = tuple(FAMILY)
SEEN: set[tuple[str, Case]] = set()
T = TypeVar("T")


def _script(prompt: list[int], options: Any) -> list[int]:
    if options.json_schema is not None or options.json_object:
        return [*tokens.encode_text('{"a": "b"}'), tokens.RETURN]
    return [*tokens.encoding().encode("<|channel|>final<|message|>ok", allowed_special="all"),
            tokens.RETURN]


ENGINE = FakeEngine(_script, max_model_len=8192)
SERVICE = ChatService(ENGINE, today=lambda: "2026-12-01")
LOOP = asyncio.new_event_loop()


def run(work: Awaitable[T]) -> T:
    return LOOP.run_until_complete(work)


async def _client() -> httpx.AsyncClient:
    app = create_app(AppState(service=SERVICE))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


CLIENT = run(_client())
NORMAL = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
NORMALS = {"chat": NORMAL, "completions": {"prompt": "Hello", "max_tokens": 8},
           "prompt job": {"prompt": "Hello", "sampling_params": {"max_tokens": 8}},
           "responses": {"input": "Hello", "max_output_tokens": 16}}


def normal_for(endpoint: str) -> dict[str, Any]:
    return NORMALS[FAMILY[endpoint]]


async def http_chat(body: Any) -> Answer:
    r = await CLIENT.post("/v1/chat/completions", content=encode(body).encode(),
                          headers={"content-type": "application/json"})
    if r.status_code < 400 and r.headers["content-type"].startswith("text/event-stream"):
        assert '"error"' not in r.text, r.text[:300]  # no error event inside a 200 stream
        return Answer(r.status_code)
    return error_answer(r.status_code, r.json())


async def http_post(path: str, body: Any) -> Any:
    return await CLIENT.post(path, content=encode(body).encode(),
                             headers={"content-type": "application/json"})


async def http_completions(body: Any) -> Answer:
    r = await http_post("/v1/completions", body)
    if r.status_code < 400 and r.headers["content-type"].startswith("text/event-stream"):
        assert '"error"' not in r.text, r.text[:300]
        return Answer(r.status_code)
    return error_answer(r.status_code, r.json())


async def http_responses(body: Any) -> Answer:
    r = await http_post("/v1/responses", body)
    if r.status_code < 400 and r.headers["content-type"].startswith("text/event-stream"):
        assert "response.failed" not in r.text, r.text[:300]
        return Answer(r.status_code)
    return error_answer(r.status_code, r.json())


async def http_batch_line(body: Any, url: str = "/v1/chat/completions") -> Answer:
    line = {"custom_id": "c1", "method": "POST", "url": url, "body": body}
    r = await CLIENT.post("/v1/batch", content=encode(line).encode(),
                          headers={"content-type": "application/jsonl"})
    if r.status_code >= 400:
        return error_answer(r.status_code, r.json())
    out = [json.loads(x) for x in r.text.splitlines()]
    assert len(out) == 1, r.text[:300]
    resp = out[0]["response"]
    return error_answer(resp["status_code"], resp["body"])


async def job(job_input: Any) -> list[Any]:
    return [o async for o in run_job(SERVICE, job_input, max_batch_lines=8)]


def job_answer(outputs: list[Any]) -> Answer:
    assert outputs, "a job yields at least once"
    first = outputs[0]
    if isinstance(first, dict) and set(first) == {"error"}:
        err = json.loads(first["error"])  # a JSON string, never a Python repr
        status = 404 if err.get("code") == "model_not_found" else 400
        assert err["type"] != "server_error", err
        return Answer(status, err.get("param"), err["message"])
    for out in outputs:
        text = out if isinstance(out, str) else json.dumps(out)
        assert "server_error" not in text, text[:300]
    return Answer(200)


async def runpod_chat(body: Any) -> Answer:
    return job_answer(await job(plain(body)))


async def runpod_route(body: Any) -> Answer:
    return job_answer(await job({"openai_route": "/v1/chat/completions",
                                 "openai_input": plain(body)}))


def route(path: str) -> Callable[[Any], Awaitable[Answer]]:
    async def send(body: Any) -> Answer:
        outputs = await job({"openai_route": path, "openai_input": plain(body)})
        if outputs and isinstance(outputs[0], str):  # a stream: no error inside it
            text = "".join(outputs)
            assert 'data: {"error"' not in text and "event: response.failed" not in text, \
                text[:300]
        return job_answer(outputs)

    return send


async def runpod_batch_line(body: Any) -> Answer:
    line = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
            "body": plain(body)}
    outputs = await job({"batch": [line]})
    assert len(outputs) == 1 and len(outputs[0]) == 1, outputs
    resp = outputs[0][0]["response"]
    return error_answer(resp["status_code"], resp["body"])


SENDERS: dict[str, Callable[[Any], Awaitable[Answer]]] = {
    "http chat": http_chat, "http batch line": http_batch_line, "runpod chat": runpod_chat,
    "runpod openai route": runpod_route, "runpod batch line": runpod_batch_line,
    "http completions": http_completions,
    "http completions batch line": lambda body: http_batch_line(body, "/v1/completions"),
    "runpod completions route": route("/v1/completions"), "runpod prompt job": runpod_chat,
    "http responses": http_responses, "runpod responses route": route("/v1/responses"),
}


def template_for(endpoint: str, name: str) -> dict[str, Any]:
    """A batch line cannot stream: its templates leave the stream fields out."""
    template = TEMPLATES[name]
    if "batch" in endpoint:
        return {k: v for k, v in template.items() if k not in ("stream", "stream_options")}
    return template


def applies(endpoint: str, case: Case) -> bool:
    # A job input is a parsed object already: a key cannot appear twice in it.
    if endpoint.startswith("runpod") and case.kind == "duplicated key":
        return False
    # batch templates hold no stream fields: nothing inside them to mutate
    return not ("batch" in endpoint and len(case.path) > 1
                and case.path[0] in ("stream", "stream_options"))


def cases_for(endpoint: str) -> list[Case]:
    return [c for c in family_cases(FAMILY[endpoint]) if applies(endpoint, c)]


PAIRS = [(endpoint, case) for endpoint in ENDPOINTS for case in cases_for(endpoint)]


@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(pair=st.sampled_from(PAIRS))
def test_hostile_values_get_a_4xx_naming_the_field(pair: tuple[str, Case]) -> None:
    endpoint, case = pair
    SEEN.add((endpoint, case))
    body = mutate(template_for(endpoint, case.template), case.path, case.kind)
    answer = run(SENDERS[endpoint](body))
    check_answer(answer, case)
    after = run(SENDERS[endpoint](normal_for(endpoint)))  # the worker still answers
    assert after.status == 200, (endpoint, after)


def test_the_fuzzing_covered_enough_cases() -> None:
    # runs after the test above (file order): distinct (endpoint, case) pairs sent
    floor = 2000 if EXAMPLES >= 2200 else 0
    assert len(SEEN) >= floor, len(SEEN)
    assert {e for e, _ in SEEN} == set(ENDPOINTS)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_kind_reaches_every_endpoint_through_one_field(endpoint: str) -> None:
    """A deterministic sweep: each hostile kind on `seed` and on the prompt's text."""
    from tests.hostile import KINDS

    name, paths = {
        "chat": ("plain", (("seed",), ("messages", 1, "content"))),
        "completions": ("text", (("seed",), ("prompt",))),
        "prompt job": ("prompt job", (("sampling_params", "seed"), ("prompt",))),
        "responses": ("responses", (("temperature",), ("input", 0, "content"))),
    }[FAMILY[endpoint]]
    for kind in KINDS:
        for path in paths:
            case = Case(name, path, kind)
            if not applies(endpoint, case):
                continue
            answer = run(SENDERS[endpoint](mutate(template_for(endpoint, name), path, kind)))
            check_answer(answer, case)
