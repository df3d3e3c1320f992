"""What every HTTP route shares: the app state, auth, bounded body reading, disconnects.

Kept apart from `http_app` so that route modules (batches, files, ...) and the app that
mounts them import it, not each other.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from pydantic import SecretStr

from worker.openai.bounds import json_pairs
from worker.openai.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PayloadTooLarge,
    Unavailable,
    to_openai_error,
)

T = TypeVar("T")


@dataclass
class AppState:
    """What the HTTP layer needs; the service appears once the engine is built."""

    service: Any | None = None  # worker.openai.chat.service.ChatService
    api_key: SecretStr | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_lines: int = 4096
    draining: bool = False
    inflight: int = 0  # /v1 requests whose response has not been fully sent
    startup_error: str | None = None
    timeline: dict[str, float] = field(default_factory=dict)
    batches: Any | None = None  # worker.openai.batches.api.BatchAPI: the Files and Batches APIs
    metrics: Any | None = None  # worker.openai.metrics.Metrics: GET /metrics and per-status counts

    def ready_service(self) -> Any:
        if self.draining:
            raise Unavailable("the worker is shutting down; retry on another replica")
        if self.service is None:
            raise Unavailable(self.startup_error or "the model is still loading; retry shortly")
        if self.service.engine.is_dead:
            raise Unavailable("the engine died; this worker is restarting")
        return self.service


AUTH_MESSAGE = "invalid or missing API key (Authorization: Bearer <key>)"


def authorize(request: Request, state: AppState) -> None:
    if state.api_key is not None and not _token_ok(request.headers.get("authorization", ""),
                                                   state.api_key):
        raise AuthenticationFailed(AUTH_MESSAGE)


# Paths anyone may call with API_KEY set: a bare liveness answer, nothing about the worker.
OPEN_PATHS = frozenset({"/health"})


class RequireApiKey:
    """ASGI middleware: with an API key set, every HTTP request but `OPEN_PATHS` needs
    `Authorization: Bearer <key>` (the `/v1` API, `/ready`, `/metrics`, the OpenAPI schema,
    unknown paths alike); otherwise 401 in the OpenAI error shape, before any route runs."""

    def __init__(self, app: Any, state: AppState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or self.state.api_key is None
                or scope["path"] in OPEN_PATHS or _bearer_ok(scope, self.state.api_key)):
            await self.app(scope, receive, send)
            return
        status, body = to_openai_error(AuthenticationFailed(AUTH_MESSAGE))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def _bearer_ok(scope: Any, key: SecretStr) -> bool:
    header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
    return _token_ok(header.decode("latin-1"), key)


def _token_ok(header: str, key: SecretStr) -> bool:
    scheme, _, token = header.partition(" ")
    expected = key.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return bytes(raw)


async def read_json(request: Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=json_pairs)
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it (and so its engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise asyncio.CancelledError()
