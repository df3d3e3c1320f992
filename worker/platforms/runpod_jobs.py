"""RunPod job input -> a typed request; service results -> job outputs.

No platform import here: `normalize_job_input` is a pure function, and
`run_job` is the whole job (parse -> service -> encode) as an async generator
of outputs, so both are tested with a fake engine and no HTTP.

Accepted inputs:

- RunPod's OpenAI route, `{"openai_route": "/v1/chat/completions" | "/v1/responses" |
  "/v1/models",
  "openai_input": {...}}`: the body the `openai` client sent, verbatim. A
  stream is yielded as raw SSE text, which the route passes through unchanged.
- a plain chat request, `{"messages": [...], ...}`, for native /run and /runsync.
- a batch, `{"batch": [<OpenAI batch input lines>]}` (see worker/batch.py); its output
  lines are yielded in order, in groups of at most ~512 KB (RunPod caps one streamed
  chunk at 1 MB), so the job's output is a list of lists of lines.

Outputs: a non-streamed result is yielded once. A stream is yielded in groups
(each yield costs the worker an HTTP POST): whatever arrived while the last
group was being sent, at most one group per `flush_interval`, so a slow stream
goes out token by token and a fast one in bundles. A bad job yields
`{"error": "<JSON error object>"}` (the SDK then fails the job with that
string); an error inside a started SSE stream is a `data: {"error": ...}` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from worker.openai import wire
from worker.openai.chat.protocol import ChatCompletionRequest, parse_chat_request
from worker.openai.errors import (
    InvalidRequest,
    NotFound,
    openai_error,
)
from worker.openai.responses.protocol import ResponsesRequest
from worker.openai.responses.service import responses_service
from worker.openai.responses.validate import parse_request as parse_responses_request

log = logging.getLogger(__name__)
T = TypeVar("T")

CHAT_ROUTE = "/v1/chat/completions"
RESPONSES_ROUTE = "/v1/responses"
MODELS_ROUTE = "/v1/models"
SSE_DONE = "data: [DONE]\n\n"
FLUSH_INTERVAL = 0.05  # seconds between two stream POSTs of one job, at most
MAX_GROUP = 512  # events per stream POST, at most (RunPod caps a streamed chunk at 1 MB)
MAX_YIELD_BYTES = 512 * 1024  # a batch's output lines are yielded in groups of about this size


@dataclass(frozen=True)
class ChatJob:
    request: ChatCompletionRequest
    sse: bool  # RunPod's OpenAI route: stream raw SSE text (native callers get chunk dicts)


@dataclass(frozen=True)
class ModelsJob:
    pass


@dataclass(frozen=True)
class BatchJob:
    lines: list[Any]  # validated line by line by worker.openai.batch.run_batch


@dataclass(frozen=True)
class ResponsesJob:
    request: ResponsesRequest  # RunPod's OpenAI route; a stream is Responses SSE text


JobRequest = ChatJob | ModelsJob | BatchJob | ResponsesJob


def normalize_job_input(job_input: Any) -> JobRequest:
    """Turn a job's `input` into a typed request; raise a WorkerError naming the field."""
    if not isinstance(job_input, dict):
        raise InvalidRequest(
            "job input must be a JSON object: a chat request ({\"messages\": [...]}), "
            "{\"openai_route\": ..., \"openai_input\": {...}} or {\"batch\": [...]}",
            param="input",
        )
    if "openai_route" in job_input:
        route = job_input["openai_route"]
        body = job_input.get("openai_input")
        path = route.rstrip("/") if isinstance(route, str) else route
        if path == MODELS_ROUTE:
            return ModelsJob()  # a GET: its body is absent or {}
        if path == CHAT_ROUTE:
            if not isinstance(body, dict):
                raise InvalidRequest("openai_input must be the chat request object",
                                     param="openai_input")
            return ChatJob(request=parse_chat_request(body), sse=True)
        if path == RESPONSES_ROUTE:
            if not isinstance(body, dict):
                raise InvalidRequest("openai_input must be the Responses request object",
                                     param="openai_input")
            return ResponsesJob(request=parse_responses_request(body))
        raise NotFound(f"route {route!r} is not served here; this worker serves "
                       f"{CHAT_ROUTE}, {RESPONSES_ROUTE} and {MODELS_ROUTE}",
                       param="openai_route")
    if "batch" in job_input:
        lines = job_input["batch"]
        if not isinstance(lines, list) or not lines:
            raise InvalidRequest("batch must be a non-empty list of OpenAI batch lines",
                                 param="batch")
        return BatchJob(lines=lines)
    if "messages" in job_input:
        return ChatJob(request=parse_chat_request(job_input), sse=False)
    raise InvalidRequest(
        "job input has none of messages, openai_route or batch: send a chat request "
        "({\"messages\": [...]}), an OpenAI route job or {\"batch\": [...]}",
        param="messages",
    )



# ----------------------------------------------------------------------------- encoders


def job_error(exc: BaseException) -> dict[str, str]:
    """What a handler yields to fail its job: the error object as a JSON string."""
    return {"error": json.dumps(openai_error(exc)[1])}


def dump(model: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True) if isinstance(model, BaseModel) \
        else model


def sse_event(payload: BaseModel | dict[str, Any]) -> str:
    text = (payload.model_dump_json(exclude_none=True) if isinstance(payload, BaseModel)
            else wire.encode(payload).decode())
    return f"data: {text}\n\n"


async def sse_events(chunks: AsyncIterator[Any]) -> AsyncIterator[str]:
    """One SSE event per chunk, then [DONE]; an error becomes an error event first."""
    try:
        async for chunk in chunks:
            yield sse_event(chunk)
    except Exception as exc:  # the stream has started: report in-band, as OpenAI does
        yield sse_event({"error": openai_error(exc)[1]})
    yield SSE_DONE


async def coalesce(source: AsyncIterator[T], *, interval: float = FLUSH_INTERVAL,
                   max_items: int = MAX_GROUP) -> AsyncGenerator[list[T], None]:
    """Group items: flush what has arrived, at most once per `interval` seconds.

    The first item goes out at once; later ones wait at most `interval`. The
    source runs in its own task, so it keeps producing while a group is sent.
    Closing this generator cancels the source (and so its engine requests) and
    waits for its clean-up.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait((True, item))
        except Exception as exc:
            queue.put_nowait((False, exc))
        else:
            queue.put_nowait((False, None))

    task = asyncio.create_task(pump())
    last_flush = float("-inf")
    try:
        end: tuple[bool, Any] | None = None
        while end is None:
            ok, item = await queue.get()
            group: list[T] = []
            if ok:
                group.append(item)
                wait = last_flush + interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            else:
                end = (ok, item)
            while end is None and len(group) < max_items and not queue.empty():
                ok, item = queue.get_nowait()
                if ok:
                    group.append(item)
                else:
                    end = (ok, item)
            if group:
                yield group
                last_flush = loop.time()
        if end[1] is not None:
            raise end[1]
    finally:
        if not task.done():
            task.cancel()
        await asyncio.wait([task])


def by_size(items: list[Any], limit: int) -> list[list[Any]]:
    """Consecutive groups of items whose JSON stays under `limit` bytes (one item at least)."""
    groups: list[list[Any]] = [[]]
    size = 0
    for item in items:
        n = len(json.dumps(item))
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += n
    return groups


# ----------------------------------------------------------------------------- one job


async def run_job(service: Any, job_input: Any, *, max_batch_lines: int,
                  flush_interval: float = FLUSH_INTERVAL) -> AsyncIterator[Any]:
    """The whole job: what a RunPod generator handler yields, in order."""
    from worker.openai.batch import run_batch  # batch imports this module's error mapping

    try:
        req = normalize_job_input(job_input)
        if isinstance(req, ModelsJob):
            yield dump(service.models())
            return
        if isinstance(req, ResponsesJob):
            async with aclosing(run_responses_job(service, req.request,
                                                  flush_interval=flush_interval)) as outputs:
                async for output in outputs:
                    yield output
            return
        if isinstance(req, BatchJob):
            lines = await run_batch(service, req.lines, max_lines=max_batch_lines)
            for group in by_size(lines, MAX_YIELD_BYTES):
                yield group
            return
        prepared = await service.admit(req.request)  # 4xx here, before anything is generated
        if not req.request.stream:  # (a chat job from here on)
            yield dump(await service.complete(prepared))
            return
    except Exception as exc:
        yield job_error(exc)
        return
    # aclosing: if our consumer stops early, close the stream now (aborting the engine
    # request), not whenever the abandoned generator is garbage-collected.
    if req.sse:
        events = sse_events(service.stream(prepared))
        async with aclosing(coalesce(events, interval=flush_interval)) as groups:
            async for texts in groups:
                yield "".join(texts)
        return
    try:
        async with aclosing(coalesce(service.stream(prepared), interval=flush_interval)) as chunks:
            async for group in chunks:
                yield [dump(c) for c in group]
    except Exception as exc:  # a native stream fails the job; what was sent stays sent
        yield job_error(exc)


async def run_responses_job(chat_service: Any, request: ResponsesRequest, *,
                            flush_interval: float = FLUSH_INTERVAL) -> AsyncGenerator[Any, None]:
    """A `/v1/responses` job: the response object, or its stream as SSE text (named events,
    no [DONE], errors in-band as the service reports them)."""
    service = responses_service(chat_service)
    try:
        prepared = await service.admit(request)
        if not request.stream:
            yield await service.complete(prepared)
            return
    except Exception as exc:
        yield job_error(exc)
        return

    async def texts() -> AsyncGenerator[str, None]:
        async with aclosing(service.stream(prepared)) as events:
            async for event in events:
                yield wire.named_sse(event["type"], event).decode()

    async with aclosing(coalesce(texts(), interval=flush_interval)) as groups:
        async for group in groups:
            yield "".join(group)
