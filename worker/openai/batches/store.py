"""Batches on a directory: `<root>/batches/<id>/` holds

- `batch.json`: the batch object (OpenAI's fields) and what the runner needs (`info`);
- `journal.jsonl`: one output line per finished request, appended and fsynced as each
  finishes; keyed by `custom_id` (the first line of an id wins), so a batch resumed after
  a crash runs only what is missing and the output holds every id exactly once;
- `cancel`: written by any worker asked to cancel; the runner stops at it;
- `lease.<n>`: who runs the batch, until when (see `Lease`).

The object is written by whoever creates the batch, then only by the lease holder.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.openai.errors import NotFound
from worker.openai.files import disk

BATCH_ID = re.compile(r"batch_[0-9a-f]{32}")
TERMINAL = ("completed", "failed", "expired", "cancelled")
KEEP_FINISHED_S = 30 * 86_400  # a finished batch's object is kept this long


class BatchStore:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time):
        self.dir = Path(root) / "batches"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock

    @staticmethod
    def new_id() -> str:
        return f"batch_{uuid.uuid4().hex}"

    def path(self, batch_id: str) -> Path:
        """The batch's directory; NotFound unless it is one we issued and still hold."""
        where = self.dir / batch_id
        if not BATCH_ID.fullmatch(batch_id) or not (where / "batch.json").is_file():
            raise NotFound(f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")
        return where

    def create(self, record: dict[str, Any]) -> None:
        where = self.dir / record["id"]
        where.mkdir()
        disk.write_json(where / "batch.json", record)
        disk.fsync_dir(self.dir)

    def record(self, batch_id: str) -> dict[str, Any]:
        rec = disk.read_json(self.path(batch_id) / "batch.json")
        if not isinstance(rec, dict):
            raise NotFound(f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")
        return rec

    def save(self, record: dict[str, Any]) -> None:
        disk.write_json(self.path(record["id"]) / "batch.json", record)

    def records(self) -> Iterator[dict[str, Any]]:
        for path in self.dir.glob("batch_*/batch.json"):
            rec = disk.read_json(path)
            if isinstance(rec, dict) and BATCH_ID.fullmatch(str(rec.get("id"))):
                yield rec

    # -- the journal ---------------------------------------------------------------
    def journal(self, batch_id: str) -> dict[str, dict[str, Any]]:
        """Finished lines by custom_id; the first of an id wins, torn or odd lines are skipped."""
        done: dict[str, dict[str, Any]] = {}
        for raw in disk.read_lines(self.path(batch_id) / "journal.jsonl"):
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                    done.setdefault(line["custom_id"], line)
        return done

    def repair_journal(self, batch_id: str) -> int:
        return disk.repair_tail(self.path(batch_id) / "journal.jsonl")

    def append(self, batch_id: str, line: dict[str, Any]) -> None:
        data = json.dumps(line, separators=(",", ":")).encode()
        disk.append_line(self.dir / batch_id / "journal.jsonl", data)

    # -- cancellation --------------------------------------------------------------
    def request_cancel(self, batch_id: str) -> None:
        marker = self.path(batch_id) / "cancel"
        if not marker.exists():
            disk.write_json(marker, {"at": int(self.clock())})

    def cancel_requested(self, batch_id: str) -> int | None:
        """When a cancel was asked for, or None."""
        marker = disk.read_json(self.dir / batch_id / "cancel")
        return int(marker["at"]) if isinstance(marker, dict) else None

    def remove(self, batch_id: str) -> None:
        shutil.rmtree(self.path(batch_id), ignore_errors=True)
        disk.fsync_dir(self.dir)


class Lease:
    """Who runs a batch: files `lease.<n>` in its directory, `n` counting up.

    Taking a lease creates `lease.<n+1>` with O_EXCL after `lease.<n>` expired (or was
    left by a process of this host that is gone): of two workers racing for it, exactly one
    creates the file. The holder renews by rewriting its own file, and knows it lost the
    lease when a `lease.<n+1>` appears (a worker that took over after it stopped renewing)
    or when its own expiry passed; it then stops starting lines. A finished line written
    twice in such a hand-over is harmless: the journal keeps the first per custom_id.
    """

    def __init__(self, where: Path, owner: dict[str, Any], ttl: float,
                 clock: Callable[[], float] = time.time):
        self.where, self.owner, self.ttl, self.clock = where, owner, ttl, clock
        self.number = 0
        self.expires = 0.0

    def current(self) -> tuple[int, dict[str, Any] | None]:
        numbers = [int(p.name.split(".")[1]) for p in self.where.glob("lease.*")
                   if p.name.split(".")[1].isdigit()]
        if not numbers:
            return 0, None
        top = max(numbers)
        holder = disk.read_json(self.where / f"lease.{top}")
        return top, holder if isinstance(holder, dict) else {"expires_at": 0}

    def acquire(self) -> dict[str, Any] | None:
        """Take the lease; None when taken, else who holds it."""
        top, holder = self.current()
        if holder is not None and not self._lapsed(holder):
            return holder
        self.expires = self.clock() + self.ttl
        body = json.dumps({**self.owner, "expires_at": self.expires}).encode()
        try:
            with (self.where / f"lease.{top + 1}").open("xb") as f:
                f.write(body)
        except FileExistsError:
            return self.current()[1] or {}
        self.number = top + 1
        for older in range(max(0, top - 2), top + 1):
            with contextlib.suppress(FileNotFoundError):
                (self.where / f"lease.{older}").unlink()
        return None

    def renew(self) -> bool:
        if not self.held():
            return False
        self.expires = self.clock() + self.ttl
        disk.write_json(self.where / f"lease.{self.number}",
                        {**self.owner, "expires_at": self.expires})
        return self.held()

    def held(self) -> bool:
        return (self.number > 0 and self.clock() < self.expires
                and not (self.where / f"lease.{self.number + 1}").exists())

    def release(self) -> None:
        if self.held():
            with contextlib.suppress(FileNotFoundError):
                (self.where / f"lease.{self.number}").unlink()
        self.number = 0

    def _lapsed(self, holder: dict[str, Any]) -> bool:
        if float(holder.get("expires_at", 0)) <= self.clock():
            return True
        # A holder on this host whose process is gone (or whose pid is now ours) is dead.
        if holder.get("host") == self.owner.get("host") and holder.get("id") != self.owner["id"]:
            pid = holder.get("pid")
            return isinstance(pid, int) and not _alive(pid)
        return False


def _alive(pid: int) -> bool:
    import os

    if pid == os.getpid():
        return False  # the pid is ours now: its old holder is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
