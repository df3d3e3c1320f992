"""Batch over HTTP, on the shared FastAPI app: OpenAI batch lines in, JSONL out.

- `POST /v1/batch` runs a batch and answers with its output, one JSONL line per
  input line, in order; a bad line fails alone (see `worker.openai.batch`).
- `POST /v1/batches` starts one in the background and answers a batch object
  (`{"id", "status": "in_progress", ...}`); `GET /v1/batches/{id}` polls it,
  `GET /v1/batches/{id}/output` fetches the JSONL once it is completed and
  `POST /v1/batches/{id}/cancel` stops it.

A body is JSONL (one OpenAI batch input line per line) or JSON `{"lines": [...]}`.
Where jobs live is pluggable (`BatchJobs`): in memory by default, bounded (the
oldest finished job is evicted first; finished jobs expire); the Modal adapter
swaps in jobs that are Modal function calls, which outlive a container.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from worker.openai.batch import BATCH_URL, run_batch
from worker.openai.bounds import loads
from worker.openai.errors import (
    BatchNotFinished,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TooManyBatches,
    is_expected,
    to_openai_error,
)
from worker.platforms.http_common import AppState, authorize, read_body, unless_disconnected

log = logging.getLogger(__name__)

JSONL = "application/jsonl"
MAX_LINES = 4096  # MAX_BATCH_LINES' default
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_JOBS = 64
JOB_TTL_S = 3600.0

Lines = list[dict[str, Any]]


class BatchJobs(Protocol):
    """Where asynchronous batches run and wait to be fetched."""

    async def submit(self, lines: Lines) -> dict[str, Any]: ...

    async def describe(self, batch_id: str) -> dict[str, Any]: ...

    async def output(self, batch_id: str) -> Lines: ...

    async def cancel(self, batch_id: str) -> dict[str, Any]: ...


def batch_object(batch_id: str, status: str, *, total: int, output: Lines | None = None,
                 created_at: int | None = None, completed_at: int | None = None,
                 error: str | None = None) -> dict[str, Any]:
    """The batch object answered by every /v1/batches route (a subset of OpenAI's)."""
    failed = sum(1 for line in output or () if line.get("error"))
    body: dict[str, Any] = {
        "id": batch_id, "object": "batch", "endpoint": BATCH_URL, "status": status,
        "created_at": created_at, "completed_at": completed_at,
        "request_counts": {"total": total, "completed": len(output or ()) - failed,
                           "failed": failed},
    }
    if error is not None:
        body["errors"] = {"object": "list", "data": [{"code": "batch_failed", "message": error}]}
    return body


@dataclass
class _Job:
    id: str
    total: int
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "in_progress"  # -> completed | failed | cancelled
    output: Lines | None = None
    error: str | None = None
    completed_at: int | None = None
    finished: float | None = None  # monotonic
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return batch_object(self.id, self.status, total=self.total, output=self.output,
                            created_at=self.created_at, completed_at=self.completed_at,
                            error=self.error)


class MemoryBatchJobs:
    """Jobs as tasks on this process's event loop; at most `max_jobs` kept."""

    def __init__(self, state: AppState, *, max_lines: int = MAX_LINES, max_jobs: int = MAX_JOBS,
                 ttl: float = JOB_TTL_S):
        self._state = state
        self._max_lines = max_lines
        self._max_jobs = max_jobs
        self._ttl = ttl
        self._jobs: OrderedDict[str, _Job] = OrderedDict()

    async def submit(self, lines: Lines) -> dict[str, Any]:
        service = self._state.ready_service()
        self._make_room()
        job = _Job(id=f"batch_{uuid.uuid4().hex}", total=len(lines))
        job.task = asyncio.create_task(self._run(job, service, lines))
        job.task.add_done_callback(lambda task: self._settle(job, task))
        self._jobs[job.id] = job
        return job.describe()

    async def describe(self, batch_id: str) -> dict[str, Any]:
        return self._get(batch_id).describe()

    async def output(self, batch_id: str) -> Lines:
        job = self._get(batch_id)
        if job.output is None:
            raise BatchNotFinished(f"batch {batch_id} is {job.status}; poll GET "
                                   f"/v1/batches/{batch_id} until it is completed",
                                   code="batch_not_completed")
        return job.output

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        job = self._get(batch_id)
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.wait({job.task}, timeout=10)  # its engine requests are aborted
        return job.describe()

    async def _run(self, job: _Job, service: Any, lines: Lines) -> None:
        try:
            job.output = await run_batch(service, lines, max_lines=self._max_lines)
            job.status = "completed"
        except Exception as exc:
            if not is_expected(exc):
                log.exception("batch %s failed", job.id)
            job.status, job.error = "failed", to_openai_error(exc)[1]["error"]["message"]

    @staticmethod
    def _settle(job: _Job, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # also when cancelled before it ever ran
            job.status = "cancelled"
        job.completed_at, job.finished = int(time.time()), time.monotonic()

    def _get(self, batch_id: str) -> _Job:
        self._expire()
        job = self._jobs.get(batch_id)
        if job is None:
            raise NotFound(f"no batch {batch_id!r} here (finished batches are kept "
                           f"{int(self._ttl)} s)", param="batch_id", code="batch_not_found")
        return job

    def _expire(self) -> None:
        now = time.monotonic()
        for job in list(self._jobs.values()):
            if job.finished is not None and now - job.finished > self._ttl:
                del self._jobs[job.id]

    def _make_room(self) -> None:
        self._expire()
        while len(self._jobs) >= self._max_jobs:
            oldest = next((j for j in self._jobs.values() if j.finished is not None), None)
            if oldest is None:
                raise TooManyBatches(f"{len(self._jobs)} batches are running; retry when one "
                                     "has finished", code="too_many_batches")
            del self._jobs[oldest.id]


def add_batch_routes(app: FastAPI, state: AppState, *, jobs: BatchJobs | None = None,
                     max_lines: int = MAX_LINES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Add the batch routes to `app` (once; a second call only swaps `jobs` if given)."""
    if getattr(app.state, "batch_jobs", None) is not None:
        if jobs is not None:
            app.state.batch_jobs = jobs
        return
    app.state.batch_jobs = jobs or MemoryBatchJobs(state, max_lines=max_lines)

    def jobs_of(request: Request) -> BatchJobs:
        authorize(request, state)
        return request.app.state.batch_jobs  # type: ignore[no-any-return]

    @app.post("/v1/batch", response_model=None)
    async def run(request: Request) -> Response:
        authorize(request, state)
        lines = parse_lines(await read_body(request, max_body_bytes), max_lines)
        service = state.ready_service()
        out = await unless_disconnected(request, run_batch(service, lines, max_lines=max_lines))
        return jsonl_response(out)

    @app.post("/v1/batches")
    async def submit(request: Request) -> JSONResponse:
        jobs = jobs_of(request)
        lines = parse_lines(await read_body(request, max_body_bytes), max_lines)
        return JSONResponse(await jobs.submit(lines))

    @app.get("/v1/batches/{batch_id}")
    async def describe(batch_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await jobs_of(request).describe(batch_id))

    @app.get("/v1/batches/{batch_id}/output", response_model=None)
    async def output(batch_id: str, request: Request) -> Response:
        return jsonl_response(await jobs_of(request).output(batch_id))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await jobs_of(request).cancel(batch_id))


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
