"""Modal's answer to a request still running after 150 s (a cold start, a long batch): a
303 redirect to the same URL with `__modal_function_call_id`, whose GET returns the result
of the original call. The `openai` client must follow it; this checks that assumption.

`ModalLikeProxy` stands in for Modal's web proxy in front of the worker's real HTTP app
(fake engine) on 127.0.0.1: the first request to a path is answered with the 303 as if it
had hit the 150 s limit; the GET of the result URL is answered with the response the app
gave to the original request (method, body and headers as sent).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import openai
import pytest

from tests.unit.live_http import serving
from tests.unit.test_http_auth import KEY, app_state
from worker.platforms.http_app import create_app

PARAM = "__modal_function_call_id"


@dataclass
class ModalLikeProxy:
    app: Any
    calls: dict[str, tuple[Any, bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str, str, bool]] = field(default_factory=list)  # method, path,
    ids: Iterator[int] = field(default_factory=itertools.count)        # query, authorized

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        query = scope["query_string"].decode()
        headers = dict(scope["headers"])
        self.seen.append((scope["method"], scope["path"], query,
                          headers.get(b"authorization") == f"Bearer {KEY}".encode()))
        call_id = parse_qs(query).get(PARAM, [None])[0]
        if call_id is None:  # a new call: it "runs past 150 s"
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            call_id = f"fc-{next(self.ids)}"
            self.calls[call_id] = (scope, body)
            location = f"{scope['path']}?{PARAM}={call_id}"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        original, body = self.calls[call_id]  # the result URL: the original call's response
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:  # then whatever this GET's connection says (a disconnect, eventually)
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(original, replay, send)


@pytest.fixture(scope="module")
def proxy() -> ModalLikeProxy:
    return ModalLikeProxy(create_app(app_state(KEY)))


@pytest.fixture(scope="module")
def client(proxy: ModalLikeProxy) -> Iterator[openai.OpenAI]:
    with serving(proxy) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


HI = [{"role": "user", "content": "hi"}]


def test_openai_client_follows_the_303_to_the_result(proxy: ModalLikeProxy,
                                                     client: openai.OpenAI) -> None:
    proxy.seen.clear()
    reply = client.chat.completions.create(model="fake-gpt-oss", messages=HI, max_tokens=32)
    assert reply.choices[0].message.content == "done"
    assert [(m, p, q.split("=")[0], a) for m, p, q, a in proxy.seen] == [
        ("POST", "/v1/chat/completions", "", True),
        ("GET", "/v1/chat/completions", PARAM, True),  # same origin: the key goes along
    ]


def test_streams_follow_it_too(proxy: ModalLikeProxy, client: openai.OpenAI) -> None:
    proxy.seen.clear()
    chunks = list(client.chat.completions.create(model="fake-gpt-oss", messages=HI,
                                                 max_tokens=32, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "done" and [m for m, *_ in proxy.seen] == ["POST", "GET"]


def test_the_result_is_the_original_request_answered(proxy: ModalLikeProxy,
                                                      client: openai.OpenAI) -> None:
    """A bad request's 400 survives the redirect: the GET replays, it does not re-ask."""
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="fake-gpt-oss", messages=HI, temperature=9)
    assert json.dumps(err.value.body).count("temperature") >= 1
