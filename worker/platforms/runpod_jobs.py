"""RunPod job input -> a typed request; service results -> job outputs.

No platform import here: `normalize_job_input` is a pure function, and
`run_job` is the whole job (parse -> service -> encode) as an async generator
of outputs, so both are tested with a fake engine and no HTTP.

Accepted inputs (docs/RUNPOD.md shows each):

- RunPod's OpenAI route, `{"openai_route": <one of ROUTES>, "openai_input": {...}}`:
  the body the `openai` client sent, verbatim. A stream is yielded as raw SSE text,
  which the route passes through unchanged. An unknown route fails the job listing
  the served ones.
- a chat request, `{"messages": [...], "sampling_params": {...}, ...}`, for native
  /run and /runsync; `sampling_params` (vLLM's names) map onto the chat request
  (worker.platforms.runpod_inputs).
- a raw text completion, `{"prompt": "...", "sampling_params": {...}}`: no chat
  template, as worker-vllm and vLLM's /v1/completions serve it (chat is the right
  shape for gpt-oss).
- a batch, `{"batch": [<OpenAI batch input lines>]}` (see worker/openai/batch.py); its
  output lines are yielded in order, in groups of at most ~512 KB (RunPod caps one
  streamed chunk at 1 MB), so the job's output is a list of lists of lines.

Outputs: a non-streamed result is yielded once. A stream is yielded in groups
(worker.platforms.runpod_stream: by time, or by worker-vllm's batching knobs). A
bad job yields `{"error": "<JSON error object>"}` (the SDK then fails the job
with that string); an error inside a started SSE stream is a `data: {"error": ...}`
event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from worker.openai import wire
from worker.openai.chat.protocol import ChatCompletionRequest, parse_chat_request
from worker.openai.completions.protocol import CompletionRequest, parse_completion_request
from worker.openai.completions.service import completions_service
from worker.openai.errors import InvalidRequest, NotFound, openai_error
from worker.openai.responses.protocol import ResponsesRequest
from worker.openai.responses.service import responses_service
from worker.openai.responses.validate import parse_request as parse_responses_request
from worker.platforms.runpod_inputs import chat_body, completion_body, rename
from worker.platforms.runpod_stream import (
    BY_TIME,
    MAX_YIELD_BYTES,
    BatchKnobs,
    by_size,
    coalesce,
    dump,
    knobs_of,
    sse_events,
)
from worker.platforms.runpod_stream import (
    FLUSH_INTERVAL as FLUSH_INTERVAL,
)
from worker.platforms.runpod_stream import SSE_DONE as SSE_DONE

log = logging.getLogger(__name__)

CHAT_ROUTE = "/v1/chat/completions"
COMPLETIONS_ROUTE = "/v1/completions"
RESPONSES_ROUTE = "/v1/responses"
MODELS_ROUTE = "/v1/models"


@dataclass(frozen=True)
class ChatJob:
    request: ChatCompletionRequest
    sse: bool  # RunPod's OpenAI route: stream raw SSE text (native callers get chunk dicts)
    renames: dict[str, str] = field(default_factory=dict)  # request field -> job key
    knobs: BatchKnobs = BY_TIME


@dataclass(frozen=True)
class CompletionJob:
    request: CompletionRequest
    sse: bool
    renames: dict[str, str] = field(default_factory=dict)
    knobs: BatchKnobs = BY_TIME


@dataclass(frozen=True)
class ModelsJob:
    pass


@dataclass(frozen=True)
class BatchJob:
    lines: list[Any]  # validated line by line by worker.openai.batch.run_batch


@dataclass(frozen=True)
class ResponsesJob:
    request: ResponsesRequest  # RunPod's OpenAI route; a stream is Responses SSE text
    knobs: BatchKnobs = BY_TIME


JobRequest = ChatJob | CompletionJob | ModelsJob | BatchJob | ResponsesJob


def _body(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(f"openai_input must be the {what} request object",
                             param="openai_input")
    return body


# The OpenAI routes a job may name: the route -> its job, from `openai_input` and the knobs.
ROUTES: dict[str, Callable[[Any, BatchKnobs], JobRequest]] = {
    CHAT_ROUTE: lambda body, knobs: ChatJob(
        parse_chat_request(_body(body, "chat")), sse=True, knobs=knobs),
    COMPLETIONS_ROUTE: lambda body, knobs: CompletionJob(
        parse_completion_request(_body(body, "completions")), sse=True, knobs=knobs),
    RESPONSES_ROUTE: lambda body, knobs: ResponsesJob(
        parse_responses_request(_body(body, "Responses")), knobs=knobs),
    MODELS_ROUTE: lambda body, knobs: ModelsJob(),  # a GET: its body is absent or {}
}


def normalize_job_input(job_input: Any) -> JobRequest:
    """Turn a job's `input` into a typed request; raise a WorkerError naming the field."""
    if not isinstance(job_input, dict):
        raise InvalidRequest(
            "job input must be a JSON object: a chat request ({\"messages\": [...]}), a "
            "prompt ({\"prompt\": \"...\"}), {\"openai_route\": ..., \"openai_input\": {...}} "
            "or {\"batch\": [...]}", param="input")
    if "openai_route" in job_input:
        route = job_input["openai_route"]
        path = route.rstrip("/") if isinstance(route, str) else route
        make = ROUTES.get(path) if isinstance(path, str) else None
        if make is None:
            raise NotFound(f"route {str(route)[:80]!r} is not served here; this worker serves "
                           f"{', '.join(ROUTES)}", param="openai_route")
        return make(job_input.get("openai_input"), knobs_of(job_input))
    if "batch" in job_input:
        lines = job_input["batch"]
        if not isinstance(lines, list) or not lines:
            raise InvalidRequest("batch must be a non-empty list of OpenAI batch lines",
                                 param="batch")
        return BatchJob(lines=lines)
    if "messages" in job_input:
        mapped = chat_body(job_input)
        knobs = knobs_of(job_input)
        try:
            return ChatJob(parse_chat_request(mapped.body), sse=False, renames=mapped.renames,
                           knobs=knobs)
        except Exception as exc:
            raise rename(exc, mapped.renames) from None
    if "prompt" in job_input:
        mapped = completion_body(job_input)
        knobs = knobs_of(job_input)
        try:
            return CompletionJob(parse_completion_request(mapped.body), sse=False,
                                 renames=mapped.renames, knobs=knobs)
        except Exception as exc:
            raise rename(exc, mapped.renames) from None
    raise InvalidRequest(
        "job input has none of messages, prompt, openai_route or batch: send a chat request "
        "({\"messages\": [...]}), a prompt, an OpenAI route job or {\"batch\": [...]}",
        param="messages",
    )


def job_error(exc: BaseException) -> dict[str, str]:
    """What a handler yields to fail its job: the error object as a JSON string."""
    return {"error": json.dumps(openai_error(exc)[1])}


# ----------------------------------------------------------------------------- one job


async def run_job(service: Any, job_input: Any, *, max_batch_lines: int,
                  flush_interval: float = FLUSH_INTERVAL,
                  knobs: BatchKnobs = BY_TIME) -> AsyncIterator[Any]:
    """The whole job: what a RunPod generator handler yields, in order. `knobs`: the
    environment's stream batching, under the job's own."""
    from worker.openai.batch import run_batch  # batch imports this module's error mapping

    renames: dict[str, str] = {}
    try:
        req = normalize_job_input(job_input)
        if isinstance(req, ModelsJob):
            yield dump(service.models())
            return
        if isinstance(req, ResponsesJob):
            async with aclosing(run_responses_job(
                    service, req.request, flush_interval=flush_interval,
                    knobs=req.knobs.over(knobs))) as outputs:
                async for output in outputs:
                    yield output
            return
        if isinstance(req, BatchJob):
            lines = await run_batch(service, req.lines, max_lines=max_batch_lines)
            for group in by_size(lines, MAX_YIELD_BYTES):
                yield group
            return
        renames = req.renames
        gen: Any = service if isinstance(req, ChatJob) else completions_service(service)
        prepared = await gen.admit(req.request)  # 4xx here, before anything is generated
        if not req.request.stream:
            yield dump(await gen.complete(prepared))
            return
    except Exception as exc:
        yield job_error(rename(exc, renames))
        return
    grouping = req.knobs.over(knobs)
    # aclosing: if our consumer stops early, close the stream now (aborting the engine
    # request), not whenever the abandoned generator is garbage-collected.
    if req.sse:
        events = sse_events(gen.stream(prepared))
        async with aclosing(coalesce(events, interval=flush_interval,
                                     knobs=grouping)) as groups:
            async for texts in groups:
                yield "".join(texts)
        return
    try:
        async with aclosing(coalesce(gen.stream(prepared), interval=flush_interval,
                                     knobs=grouping)) as chunks:
            async for group in chunks:
                yield [dump(c) for c in group]
    except Exception as exc:  # a native stream fails the job; what was sent stays sent
        yield job_error(exc)


async def run_responses_job(chat_service: Any, request: ResponsesRequest, *,
                            flush_interval: float = FLUSH_INTERVAL,
                            knobs: BatchKnobs = BY_TIME) -> AsyncGenerator[Any, None]:
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

    async with aclosing(coalesce(texts(), interval=flush_interval, knobs=knobs)) as groups:
        async for group in groups:
            yield "".join(group)
