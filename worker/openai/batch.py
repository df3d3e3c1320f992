"""OpenAI batch lines in, OpenAI batch output lines out; shared by every adapter.

Each input line (`{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body": {...}}`, or `"url": "/v1/completions"` with a completions body) is validated on
its own; every good line runs at once on the
engine (which batches them); the output holds one line per input line, in
input order, in the shape of OpenAI's batch output file:

    {"id", "custom_id", "response": {"status_code": 200, "request_id", "body": <completion>},
     "error": null}

A bad line fails alone, with the status and error body the endpoint would
have answered, and `error` set to its code and message:

    {"id", "custom_id", "response": {"status_code": 400, "request_id",
     "body": {"error": {...}}}, "error": {"code", "message"}}
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from worker.engine.api import EngineError
from worker.openai.bounds import check_body, is_text
from worker.openai.chat.protocol import parse_chat_request
from worker.openai.completions.protocol import parse_completion_request
from worker.openai.completions.service import completions_service
from worker.openai.errors import InvalidRequest, PayloadTooLarge, Unavailable, openai_error

BATCH_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
# The urls a line may name, and how each one's body is read and which service runs it
# (given the chat service).
LINE_URLS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    BATCH_URL: (parse_chat_request, lambda chat: chat),
    COMPLETIONS_URL: (parse_completion_request, completions_service),
}


async def run_batch(service: Any, lines: list[Any], *, max_lines: int) -> list[dict[str, Any]]:
    """Run every valid line concurrently; one output line per input line, in order."""
    if len(lines) > max_lines:
        raise PayloadTooLarge(f"a batch holds at most {max_lines} lines; this one has "
                              f"{len(lines)}", param="batch")
    ids = Counter(_custom_id(line) for line in lines)
    return list(await asyncio.gather(*(run_line(service, line, index=i, ids=ids)
                                       for i, line in enumerate(lines))))


async def run_line(service: Any, line: Any, *, index: int = 0, ids: Counter[Any] | None = None,
                   priority: int = 0, fail_unavailable: bool = True) -> dict[str, Any]:
    """One batch line through the service: its output line, a failure included. With
    `fail_unavailable=False` an unavailable engine raises instead (the line did not run: a
    stored batch runs it again later). `priority` > 0 runs it behind live requests."""
    custom_id = _custom_id(line)
    try:
        url, req = _validate_line(line, index, ids or Counter([custom_id]))
        service = LINE_URLS[url][1](service)
        prepared = await service.admit(req)
        if priority:
            prepared = at_priority(prepared, priority)
        result = await service.complete(prepared)
    except (Unavailable, EngineError) as exc:
        if not fail_unavailable:
            raise
        return _failed(custom_id, exc)
    except Exception as exc:
        return _failed(custom_id, exc)
    return {
        "id": _new_id(),
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": _request_id(),
            "body": result if isinstance(result, dict)
            else result.model_dump(mode="json", exclude_none=True),
        },
        "error": None,
    }


def at_priority(prepared: Any, priority: int) -> Any:
    """The same prepared request, scheduled at engine `priority` (lower runs first)."""
    return replace(prepared, plans=tuple(
        replace(plan, options=replace(plan.options, priority=priority))
        for plan in prepared.plans))


def _custom_id(line: Any) -> str | None:
    """The line's custom_id when it can be echoed back (a string of valid Unicode)."""
    custom_id = line.get("custom_id") if isinstance(line, dict) else None
    return custom_id if isinstance(custom_id, str) and is_text(custom_id) else None


def _validate_line(line: Any, index: int, ids: Counter[Any]) -> tuple[str, Any]:
    if not isinstance(line, dict):
        raise InvalidRequest(f"batch line {index} is not a JSON object", param=None)
    check_body({k: v for k, v in line.items() if k != "body"})
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequest("custom_id is required: a non-empty string", param="custom_id")
    if ids[custom_id] > 1:
        raise InvalidRequest(f"custom_id {custom_id!r} is used by {ids[custom_id]} lines of "
                             "this batch; it must be unique", param="custom_id")
    if line.get("method", "POST") != "POST":
        raise InvalidRequest(f"method must be POST, not {line.get('method')!r:.80}", param="method")
    url = line.get("url", BATCH_URL)
    url = url.rstrip("/") if isinstance(url, str) else url
    if url not in LINE_URLS:
        raise InvalidRequest(f"url must be one of {list(LINE_URLS)}, not {url!r:.80}",
                             param="url")
    body = line.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest(f"body must be the request object of {url}", param="body")
    req = LINE_URLS[url][0](body)  # its errors name the field inside the body
    if req.stream:
        raise InvalidRequest("stream must be false in a batch line", param="stream")
    return url, req


def _failed(custom_id: str | None, exc: BaseException) -> dict[str, Any]:
    status, err = openai_error(exc)
    return {
        "id": _new_id(),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": _request_id(), "body": {"error": err}},
        "error": {"code": err.get("code") or err["type"], "message": err["message"]},
    }


def _new_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex}"
