"""OpenAI's Batches API over the store: create, retrieve, list, cancel.

Platform-free: the HTTP routes (and Modal's) parse the request and call these; who runs a
batch is the platform's choice (`launch`: this process's `BatchRunner`, or a spawned
Modal call). Every id a client hands back is looked up in the store, so an id we did
not issue is a 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from worker.openai.batches.store import TERMINAL, BatchStore
from worker.openai.errors import Conflict, InvalidRequest, NotFound
from worker.openai.files.store import FileStore, page
from worker.openai.files.upload import EXPIRES_MAX, EXPIRES_MIN, MAX_BYTES, MAX_LINES

WINDOW_S = {"24h": 86_400}
CREATE_KEYS = {"input_file_id", "endpoint", "completion_window", "metadata",
               "output_expires_after"}


class BatchAPI:
    def __init__(self, batches: BatchStore, files: FileStore, *, endpoints: Collection[str],
                 launch: Callable[[str], None], adopt: Callable[[str], None] | None = None,
                 persist: Callable[[], None] | None = None,
                 refresh: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.batches, self.files, self.endpoints = batches, files, tuple(endpoints)
        self.launch = launch  # start running a new or cancelled batch
        self.adopt = adopt or (lambda batch_id: None)  # a poll of an unfinished batch
        self.persist = persist or (lambda: None)  # after a write (Modal: commit the volume)
        self.refresh = refresh or (lambda: None)  # before a call (Modal: reload the volume)
        self.clock = clock
        self.max_file_lines, self.max_file_bytes = MAX_LINES, MAX_BYTES

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        unknown = sorted(set(body) - CREATE_KEYS)
        if unknown:
            raise InvalidRequest(f"unknown parameter {unknown[0]!r}", param=unknown[0])
        endpoint = body.get("endpoint")
        if endpoint not in self.endpoints:
            raise InvalidRequest(f"endpoint must be one of {list(self.endpoints)}, not "
                                 f"{endpoint!r}", param="endpoint")
        window = body.get("completion_window")
        if window not in WINDOW_S:
            raise InvalidRequest(f"completion_window must be one of {list(WINDOW_S)}, not "
                                 f"{window!r}", param="completion_window")
        metadata = check_metadata(body.get("metadata"))
        expires = output_expiry(body.get("output_expires_after"))
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str):
            raise InvalidRequest("input_file_id is required: the id of a file uploaded with "
                                 "purpose batch", param="input_file_id")
        try:
            meta = self.files.record(file_id)
        except NotFound:
            raise NotFound(f"no file {file_id!r}", param="input_file_id",
                           code="file_not_found") from None
        if meta["purpose"] != "batch":
            raise InvalidRequest(f"file {file_id} has purpose {meta['purpose']!r}; a batch "
                                 "reads a file uploaded with purpose batch",
                                 param="input_file_id")
        others = sorted(set(meta["info"]["urls"]) - {endpoint})
        if others:
            raise InvalidRequest(f"file {file_id} has lines for {others}, but this batch's "
                                 f"endpoint is {endpoint}; a batch runs one endpoint",
                                 param="endpoint")
        now = int(self.clock())
        record = {
            "id": self.batches.new_id(), "object": "batch", "endpoint": endpoint,
            "errors": None, "input_file_id": file_id, "completion_window": window,
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + WINDOW_S[window],
            "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": meta["info"]["lines"], "completed": 0, "failed": 0},
            "metadata": metadata, "model": None, "usage": None,
            "info": {"output_expires_after": expires},
        }
        self.batches.create(record)
        self.persist()
        self.launch(record["id"])
        return public(record)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        rec = self.batches.record(batch_id)
        cancel_at = self.batches.cancel_requested(batch_id)
        if rec["status"] not in TERMINAL:
            self.adopt(batch_id)  # resumes (or ends, if cancelled) a batch whose worker is gone
        return public(rec, cancel_at)

    def list_page(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be from 1 to 100", param="limit")
        recs = sorted(self.batches.records(), key=lambda r: (r["created_at"], r["id"]),
                      reverse=True)
        return page([public(r, self.batches.cancel_requested(r["id"])) for r in recs],
                    after=after, limit=limit, param="after")

    def cancel(self, batch_id: str) -> dict[str, Any]:
        rec = self.batches.record(batch_id)
        if rec["status"] in ("completed", "failed", "expired"):
            raise Conflict(f"batch {batch_id} is {rec['status']}; only an unfinished batch can "
                           "be cancelled", param="batch_id", code="batch_finished")
        if rec["status"] != "cancelled":
            self.batches.request_cancel(batch_id)
            self.persist()
            self.adopt(batch_id)  # whoever runs it stops; if nobody does, this ends it
        return public(self.batches.record(batch_id), self.batches.cancel_requested(batch_id))

    def input_files(self) -> set[str]:
        """Input files of unfinished batches (they cannot be deleted)."""
        return {r["input_file_id"] for r in self.batches.records() if r["status"] not in TERMINAL}

    def delete_file(self, file_id: str) -> dict[str, Any]:
        if file_id in self.input_files():
            raise Conflict(f"file {file_id} is the input of an unfinished batch; cancel the "
                           "batch first", param="file_id", code="file_in_use")
        deleted = self.files.delete(file_id)
        self.persist()
        return deleted


def public(rec: dict[str, Any], cancel_at: int | None = None) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k != "info"}
    if cancel_at is not None and out["status"] not in TERMINAL:
        out.update(status="cancelling", cancelling_at=cancel_at)
    elif cancel_at is not None:
        out["cancelling_at"] = cancel_at
    return out


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise InvalidRequest("metadata must be an object of at most 16 string pairs",
                             param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise InvalidRequest("metadata keys are strings of at most 64 characters and "
                                 "values strings of at most 512", param=f"metadata.{key[:64]}")
    return dict(metadata)


def output_expiry(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise InvalidRequest("output_expires_after.anchor must be created_at",
                             param="output_expires_after.anchor")
    seconds = value.get("seconds")
    if (not isinstance(seconds, int) or isinstance(seconds, bool)
            or not EXPIRES_MIN <= seconds <= EXPIRES_MAX):
        raise InvalidRequest(f"output_expires_after.seconds must be from {EXPIRES_MIN} to "
                             f"{EXPIRES_MAX}", param="output_expires_after.seconds")
    unknown = sorted(set(value) - {"anchor", "seconds"})
    if unknown:
        raise InvalidRequest(f"unknown parameter {unknown[0]!r}",
                             param=f"output_expires_after.{unknown[0]}")
    return seconds
