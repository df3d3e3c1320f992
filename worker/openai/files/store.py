"""OpenAI Files on a directory: `<root>/files/<id>.jsonl` (content) and `<id>.json` (the
file object, plus what the batch API needs to know about the lines, kept out of answers).

Content is written first, under a temporary name, then renamed; the object is written
last, so a file either is listed whole or not at all (see `disk`). Ids are ours, random,
and checked against their pattern before they touch a path: anything else is a 404.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from worker.openai.errors import InvalidRequest, NotFound
from worker.openai.files import disk

FILE_ID = re.compile(r"file-[0-9a-f]{32}")
PURPOSES = ("batch", "batch_output")
DAY = 86_400
DEFAULT_TTL_S = 30 * DAY  # OpenAI: files with purpose batch expire after 30 days
TEMP_TTL_S = 6 * 3600  # a temporary upload older than this is left over from a crash


class FileStore:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time):
        self.dir = Path(root) / "files"
        self.tmp = Path(root) / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.clock = clock

    # -- writing -----------------------------------------------------------------
    def temp_path(self) -> Path:
        """Where an upload is received before it is validated and `adopt`ed."""
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def adopt(self, temp: Path, *, filename: str, purpose: str, expires_after: int | None,
              info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make the fsynced temporary file `temp` a stored file; returns its object."""
        file_id = f"file-{uuid.uuid4().hex}"
        now = int(self.clock())
        obj = {
            "id": file_id, "object": "file", "bytes": temp.stat().st_size, "created_at": now,
            "expires_at": now + (expires_after or DEFAULT_TTL_S), "filename": filename,
            "purpose": purpose, "status": "processed", "status_details": None,
        }
        os.replace(temp, self._content(file_id))
        disk.fsync_dir(self.dir)
        disk.write_json(self._meta(file_id), {**obj, "info": info or {}})
        return obj

    def write(self, file_id: str, lines: Iterable[bytes], *, filename: str,
              expires_after: int | None = None) -> dict[str, Any]:
        """Write an output file under an id chosen beforehand (a finalising batch picks its
        output ids first, so a second attempt after a crash rewrites the same file)."""
        now = int(self.clock())
        content = b"".join(line.rstrip(b"\n") + b"\n" for line in lines)
        disk.write_atomic(self._content(file_id), content)
        obj = {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": now,
            "expires_at": now + (expires_after or DEFAULT_TTL_S), "filename": filename,
            "purpose": "batch_output", "status": "processed", "status_details": None,
        }
        disk.write_json(self._meta(file_id), {**obj, "info": {}})
        return obj

    @staticmethod
    def new_id() -> str:
        return f"file-{uuid.uuid4().hex}"

    # -- reading -----------------------------------------------------------------
    def record(self, file_id: str) -> dict[str, Any]:
        """The stored object with its `info`; NotFound for an id we never issued."""
        meta = disk.read_json(self._meta(file_id)) if FILE_ID.fullmatch(file_id) else None
        if not isinstance(meta, dict):
            raise NotFound(f"no file {file_id!r}", param="file_id", code="file_not_found")
        return meta

    def get(self, file_id: str) -> dict[str, Any]:
        return public(self.record(file_id))

    def content_path(self, file_id: str) -> Path:
        self.record(file_id)
        return self._content(file_id)

    def list_page(self, *, purpose: str | None = None, after: str | None = None,
                  limit: int = 10_000, order: str = "desc") -> dict[str, Any]:
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be asc or desc", param="order")
        if not 1 <= limit <= 10_000:
            raise InvalidRequest("limit must be from 1 to 10000", param="limit")
        metas = [m for m in (disk.read_json(p) for p in self.dir.glob("file-*.json"))
                 if isinstance(m, dict) and (purpose is None or m.get("purpose") == purpose)]
        metas.sort(key=lambda m: (m["created_at"], m["id"]), reverse=order == "desc")
        return page([public(m) for m in metas], after=after, limit=limit, param="after")

    # -- removing ----------------------------------------------------------------
    def delete(self, file_id: str) -> dict[str, Any]:
        self.record(file_id)
        self._remove(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def sweep(self, *, keep: Collection[str] = ()) -> list[str]:
        """Delete expired files (but those in `keep`: inputs of unfinished batches) and
        temporary uploads left over from a crash; returns the ids deleted."""
        now = self.clock()
        gone = []
        for path in self.dir.glob("file-*.json"):
            meta = disk.read_json(path)
            if (isinstance(meta, dict) and meta.get("id") not in keep
                    and meta.get("expires_at") is not None and meta["expires_at"] <= now):
                self._remove(meta["id"])
                gone.append(meta["id"])
        for part in self.tmp.glob("*.part"):
            with contextlib.suppress(OSError):
                if now - part.stat().st_mtime > TEMP_TTL_S:
                    part.unlink()
        return gone

    def _remove(self, file_id: str) -> None:
        for path in (self._meta(file_id), self._content(file_id)):  # the object first
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        disk.fsync_dir(self.dir)

    def _meta(self, file_id: str) -> Path:
        return self.dir / f"{file_id}.json"

    def _content(self, file_id: str) -> Path:
        return self.dir / f"{file_id}.jsonl"


def public(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "info"}


def page(items: list[dict[str, Any]], *, after: str | None, limit: int,
         param: str) -> dict[str, Any]:
    """OpenAI's cursor page: the items after the one with id `after`, at most `limit`."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"{param}={after!r} is not an id of this list", param=param)
        start = ids.index(after) + 1
    data = items[start:start + limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": start + limit < len(items)}
