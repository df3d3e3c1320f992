"""The OpenAI-compatible HTTP adapter (FastAPI), shared by `serve` and Modal.

Parse the body, call the service, encode the result; nothing else. Errors
are mapped once, by `worker.openai.errors.to_openai_error`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.engine.api import EngineError
from worker.openai import wire
from worker.openai.chat.protocol import ChatCompletionRequest, parse_chat_request
from worker.openai.completions.protocol import parse_completion_request
from worker.openai.completions.service import completions_service
from worker.openai.errors import (
    Unavailable,
    WorkerError,
    error_body,
    is_expected,
    to_openai_error,
)
from worker.openai.responses.service import responses_service
from worker.openai.responses.validate import parse_request
from worker.platforms.http_common import (
    AppState,
    RequireApiKey,
    authorize,
    read_json,
    unless_disconnected,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
COMPLETIONS_PATH = "/v1/completions"


def create_app(state: AppState, *, lifespan: Any = None) -> FastAPI:
    app = FastAPI(title="gpt-oss worker", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.worker = state
    # With API_KEY set, only /health answers without it (the counters around it see the 401).
    app.add_middleware(RequireApiKey, state=state)
    app.add_middleware(InflightCounter, state=state)
    app.add_middleware(ChatStatusCounter, state=state)

    @app.exception_handler(WorkerError)
    async def _worker_error(_: Request, exc: WorkerError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), error_type=kind), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error_response(exc)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        body: dict[str, Any] = {"timeline": state.timeline, "inflight": state.inflight}
        try:
            service = state.ready_service()
        except Unavailable as exc:
            return JSONResponse({**body, "status": "unavailable", "reason": exc.message}, 503)
        return JSONResponse({
            **body, "status": "ready", "model": service.model_names[0],
            "engine_requests": await service.engine.num_unfinished(),
        })

    @app.get("/metrics")
    async def metrics() -> Response:
        m = state.metrics
        if m is None:
            raise StarletteHTTPException(404, "metrics are not enabled")
        m.set_cold_start(state.timeline)
        await m.refresh(state.service.engine if state.service is not None else None)
        return Response(m.render(), media_type=m.content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request, state)
        return _json(state.ready_service().models())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        authorize(request, state)
        body = await read_json(request, state.max_body_bytes)
        return await _generate(request, state.ready_service(), parse_chat_request(body), _sse,
                               _json)

    @app.post(COMPLETIONS_PATH, response_model=None)
    async def completions(request: Request) -> Response:
        authorize(request, state)
        body = await read_json(request, state.max_body_bytes)
        return await _generate(request, completions_service(state.ready_service()),
                               parse_completion_request(body), _sse, _encoded)

    @app.post(RESPONSES_PATH, response_model=None)
    async def responses(request: Request) -> Response:
        authorize(request, state)
        body = await read_json(request, state.max_body_bytes)
        return await _generate(request, responses_service(state.ready_service()),
                               parse_request(body), _named_sse, _encoded)

    from worker.platforms.http_batch import add_batch_routes
    from worker.platforms.http_files import add_file_routes

    add_batch_routes(app, state, max_lines=state.max_batch_lines,
                     max_body_bytes=state.max_body_bytes)
    add_file_routes(app, state)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the chat request body (parsed by hand, so FastAPI can't see it)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    body = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components["ChatCompletionRequest"] = body
    post = schema["paths"]["/v1/chat/completions"]["post"]
    post["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}}
    app.openapi_schema = schema
    return schema


class InflightCounter:
    """Counts /v1 requests until their last body byte is sent (streams included)."""

    def __init__(self, app: Any, state: AppState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        self.state.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.inflight -= 1


class ChatStatusCounter:
    """Reports each chat, responses or completions request's final status to `state.metrics`:
    the status sent once the body is complete, 499 when the client went away first, 500 for an
    unhandled error."""

    def __init__(self, app: Any, state: AppState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        metrics = self.state.metrics
        counted = scope["type"] == "http" and scope["path"] in (CHAT_PATH, RESPONSES_PATH,
                                                                    COMPLETIONS_PATH)
        if metrics is None or not counted:
            await self.app(scope, receive, send)
            return
        status: int | None = None
        complete = False

        async def counting_send(message: Any) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        outcome = 499
        try:
            await self.app(scope, receive, counting_send)
            if complete and status is not None:
                outcome = status
        except Exception:
            outcome = 500 if status is None else 499
            raise
        finally:
            metrics.response(outcome)


def _error_response(exc: BaseException) -> JSONResponse:
    status, body = to_openai_error(exc)
    return JSONResponse(body, status_code=status)


async def _generate(request: Request, service: Any, req: Any,
                    sse: Callable[[AsyncIterator[Any]], AsyncIterator[bytes]],
                    encode: Callable[[Any], Response]) -> Response:
    """Every generating route: admit (4xx before any byte is streamed), then stream as
    `sse` or answer once, encoded by `encode`; a client that leaves aborts the work."""
    prepared = await service.admit(req)
    if req.stream:
        return StreamingResponse(sse(service.stream(prepared)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return encode(await unless_disconnected(request, service.complete(prepared)))


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


def _encoded(result: Any) -> Response:
    return Response(wire.encode(result), media_type="application/json")


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield wire.sse(chunk)
    except Exception as exc:  # after the 200 is sent, errors travel as an SSE event
        if not is_expected(exc):
            log.exception("error while streaming")
        _, body = to_openai_error(exc)
        yield b"data: " + json.dumps(body).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"




async def _named_sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Responses API events: `event: TYPE` lines, no [DONE]; the service reports its own
    errors in-band (an `error` event, then `response.failed`)."""
    async for event in events:
        yield wire.named_sse(event["type"], event)
