"""`POST /v1/batch` on the shared FastAPI app: a small batch answered in one response.

OpenAI batch input lines in (JSONL, or JSON `{"lines": [...]}`), one JSONL output line per
input line out, in order; a bad line fails alone (see `worker.openai.batch`). For batches
that outlive a request, OpenAI's own Files and Batches APIs (`/v1/files`, `/v1/batches`)
are in `http_files`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from worker.openai.batch import run_batch
from worker.openai.bounds import loads
from worker.openai.errors import InvalidRequest, PayloadTooLarge
from worker.platforms.http_common import AppState, authorize, read_body, unless_disconnected

JSONL = "application/jsonl"
MAX_LINES = 4096  # MAX_BATCH_LINES' default
MAX_BODY_BYTES = 64 * 1024 * 1024

Lines = list[dict[str, Any]]


def add_batch_routes(app: FastAPI, state: AppState, *, max_lines: int = MAX_LINES,
                     max_body_bytes: int = MAX_BODY_BYTES) -> None:
    @app.post("/v1/batch", response_model=None)
    async def run(request: Request) -> Response:
        authorize(request, state)
        lines = parse_lines(await read_body(request, max_body_bytes), max_lines)
        service = state.ready_service()
        out = await unless_disconnected(request, run_batch(service, lines, max_lines=max_lines))
        return jsonl_response(out)


def parse_lines(raw: bytes, max_lines: int) -> Lines:
    """JSONL, or JSON `{"lines": [...]}`, into batch lines; a bad document is one 400."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    lines: list[Any] | None = None
    if text.lstrip().startswith("{"):
        try:
            whole = loads(text)
        except (ValueError, RecursionError):
            whole = None  # several lines, or a broken one: parsed line by line below
        if isinstance(whole, dict) and "lines" in whole:
            lines = whole["lines"]
            if not isinstance(lines, list):
                raise InvalidRequest("lines must be a list of batch lines", param="lines")
        elif isinstance(whole, dict):
            lines = [whole]  # a single line, possibly pretty-printed
    if lines is None:
        lines = [_parse_row(row, n) for n, row in enumerate(text.splitlines(), 1) if row.strip()]
    if not lines:
        raise InvalidRequest('the batch is empty: send JSONL (one request per line) or '
                             '{"lines": [...]}')
    if len(lines) > max_lines:
        raise PayloadTooLarge(f"a batch holds at most {max_lines} lines; this one has "
                              f"{len(lines)}", param="lines")
    return lines


def _parse_row(row: str, n: int) -> Any:
    try:
        return loads(row)
    except RecursionError:
        raise InvalidRequest(f"line {n} is nested too deeply", param=f"line {n}") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"line {n} is not valid JSON: {exc.msg} at column {exc.colno}",
                             param=f"line {n}") from None


def jsonl_response(lines: Lines) -> Response:
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return Response(body, media_type=JSONL)
