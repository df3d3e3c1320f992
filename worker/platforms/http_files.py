"""OpenAI's Files (purpose batch) and Batches APIs on the shared FastAPI app.

- `POST /v1/files` (multipart: `file`, `purpose=batch`, optional `expires_after[anchor]`
  and `expires_after[seconds]`), `GET /v1/files`, `GET /v1/files/{id}`,
  `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`;
- `POST /v1/batches`, `GET /v1/batches`, `GET /v1/batches/{id}`,
  `POST /v1/batches/{id}/cancel`.

Parse, call `state.batches` (a `worker.openai.batches.api.BatchAPI` over the store on
BATCH_DIR), encode. The store does file I/O, so each call runs on a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from worker.openai.batches.api import BatchAPI
from worker.openai.batches.lines import ENDPOINTS, chat_lines
from worker.openai.batches.runner import BatchRunner
from worker.openai.batches.store import BatchStore
from worker.openai.errors import InvalidRequest, PayloadTooLarge, Unavailable
from worker.openai.files.store import FileStore
from worker.openai.files.upload import expires_after, store_batch_file
from worker.platforms.http_common import AppState, authorize, read_body

T = TypeVar("T")
FORM_FIELDS = {"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"}
FORM_SLACK = 64 * 1024  # multipart headers and the small fields around the file


def add_file_routes(app: FastAPI, state: AppState) -> None:
    def api(request: Request) -> Any:
        authorize(request, state)
        if state.batches is None:
            raise Unavailable("the Files and Batches APIs start with the engine; retry shortly")
        return state.batches

    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            if state.batches is not None:
                state.batches.refresh()  # others' writes (on Modal: reload the volume)
            return fn(*args, **kwargs)

        return await asyncio.to_thread(call)

    @app.post("/v1/files")
    async def upload(request: Request) -> JSONResponse:
        batches = api(request)
        form = await _form(request, batches.max_file_bytes)
        try:
            unknown = sorted(set(form.keys()) - FORM_FIELDS)
            if unknown:
                raise InvalidRequest(f"unknown field {unknown[0]!r}", param=unknown[0])
            purpose = form.get("purpose")
            if not isinstance(purpose, str):
                raise InvalidRequest("purpose is required: batch", param="purpose")
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise InvalidRequest("file is required: a JSONL file sent as multipart/form-data",
                                     param="file")
            anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
            expires = expires_after(anchor if isinstance(anchor, str) else None,
                                    seconds if isinstance(seconds, str) else None)
            obj = await run(store_batch_file, batches.files, file.file,
                            filename=file.filename or "batch.jsonl", purpose=purpose,
                            endpoints=batches.endpoints, expires=expires,
                            max_lines=batches.max_file_lines, max_bytes=batches.max_file_bytes)
            await run(batches.persist)
        finally:
            await form.close()
        return JSONResponse(obj)

    @app.get("/v1/files")
    async def list_files(request: Request) -> JSONResponse:
        files = api(request).files
        q = request.query_params
        return JSONResponse(await run(files.list_page, purpose=q.get("purpose"),
                                      after=q.get("after"), limit=_int(q, "limit", 10_000),
                                      order=q.get("order", "desc")))

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await run(api(request).files.get, file_id))

    @app.get("/v1/files/{file_id}/content", response_model=None)
    async def file_content(file_id: str, request: Request) -> FileResponse:
        path = await run(api(request).files.content_path, file_id)
        return FileResponse(path, media_type="application/jsonl")

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await run(api(request).delete_file, file_id))

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> JSONResponse:
        batches = api(request)
        raw = await read_body(request, 1024 * 1024)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidRequest("request body is not valid JSON") from None
        return JSONResponse(await run(batches.create, body))

    @app.get("/v1/batches")
    async def list_batches(request: Request) -> JSONResponse:
        q = request.query_params
        return JSONResponse(await run(api(request).list_page, after=q.get("after"),
                                      limit=_int(q, "limit", 20)))

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await run(api(request).retrieve, batch_id))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await run(api(request).cancel, batch_id))


def _int(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise InvalidRequest(f"{name} must be a whole number", param=name)
    return int(raw)


async def _form(request: Request, max_file_bytes: int) -> Any:
    """The multipart form, refused with 413 naming `file` as soon as it is larger than a
    file of `max_file_bytes` can make it."""
    limit = max_file_bytes + FORM_SLACK
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"file exceeds {max_file_bytes} bytes", param="file")
    seen = 0
    receive = request.receive

    async def counting() -> Any:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise PayloadTooLarge(f"file exceeds {max_file_bytes} bytes", param="file")
        return message

    try:
        return await Request(request.scope, counting).form(max_files=1, max_fields=8)
    except MultiPartException as exc:
        raise InvalidRequest(f"multipart body: {exc.message}", param="file") from None


def open_batches(state: AppState, batch_dir: str | Path, *, concurrency: int) -> BatchRunner:
    """The store on `batch_dir`, its runner (lines through `state`'s service at the batch
    priority) and the API the routes call, set on `state`. Start `runner.serve()`."""
    root = Path(batch_dir)
    files, batches = FileStore(root), BatchStore(root)
    runner = BatchRunner(batches, files, chat_lines(state.ready_service),
                         concurrency=concurrency)
    state.batches = BatchAPI(batches, files, endpoints=ENDPOINTS, launch=runner.kick,
                             adopt=runner.kick)
    return runner


def batch_concurrency(service: Any) -> int:
    """Lines a batch runs at once: half the engine's sequences, so live requests always
    find free slots (they are also scheduled first: see `lines.BATCH_PRIORITY`)."""
    return max(1, int(service.engine.info.max_num_seqs) // 2)
