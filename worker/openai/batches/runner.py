"""Runs stored batches: lines through the live service, at most `concurrency` at a time
(and at the engine's batch priority, below live requests), each finished line journaled
before the next is counted; a batch is resumed wherever it stopped.

A worker scans the store every `scan_s` (and is kicked when a batch is created or polled
here), takes the lease of each unfinished batch nobody holds, and runs it; a batch held by
a live worker is left alone. Ending: every line journaled -> `completed`; a cancel
-> in-flight lines aborted, `cancelled`; past `expires_at` -> `expired` (the lines not run
go to the error file as `batch_expired`). Output and error files are written from the
journal in input order. An engine that becomes unavailable stops the run without
finishing the batch: it resumes on the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from worker.openai.batches.outputs import counts, dump_line, expired_line, finished_at, usage
from worker.openai.batches.store import KEEP_FINISHED_S, TERMINAL, BatchStore, Lease
from worker.openai.errors import NotFound, Unavailable
from worker.openai.files.store import FileStore

log = logging.getLogger(__name__)

LineRunner = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
LEASE_S = 30.0
SCAN_S = 5.0
PROGRESS_S = 1.0
REFRESH_S = 5.0


class Stop(Exception):
    """Why a run stops early: `cancelled`, `expired`, or `lost` (the lease or the engine)."""


class BatchRunner:
    def __init__(self, batches: BatchStore, files: FileStore, run_line: LineRunner, *,
                 concurrency: int, lease_s: float = LEASE_S, scan_s: float = SCAN_S,
                 persist: Callable[[], None] | None = None,
                 refresh: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.batches, self.files, self.run_line = batches, files, run_line
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self.concurrency = max(1, concurrency)
        self.lease_s, self.scan_s, self.clock = lease_s, scan_s, clock
        self.persist = persist or (lambda: None)  # Modal: commit the volume
        self.refresh = refresh  # Modal: reload it, to see a cancel asked elsewhere
        self.owner = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._declined: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._serving: asyncio.Task[Any] | None = None

    # -- scheduling ------------------------------------------------------------------
    async def serve(self) -> None:
        """Scan, sweep and run until cancelled."""
        self.loop = asyncio.get_running_loop()
        self._serving = asyncio.current_task()
        while True:
            try:
                self.scan()
            except Exception:
                log.exception("batch scan failed")
            await asyncio.sleep(self.scan_s)

    def scan(self) -> None:
        keep: set[str] = set()
        for rec in self.batches.records():
            if rec["status"] not in TERMINAL:
                keep.add(rec["input_file_id"])
                self._start(rec["id"])
            elif self.clock() - finished_at(rec) > KEEP_FINISHED_S:
                self.batches.remove(rec["id"])
        for file_id in self.files.sweep(keep=keep):
            log.info("deleted expired file %s", file_id)

    def kick(self, batch_id: str) -> None:
        """Run `batch_id` here unless it runs here already or another worker holds it.
        Safe from any thread (the API runs on threads); before `serve` starts, the first
        scan picks the batch up instead."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._start, batch_id)

    def _start(self, batch_id: str) -> None:
        task = self._tasks.get(batch_id)
        if task is None or task.done():
            self._tasks[batch_id] = asyncio.get_running_loop().create_task(self.run(batch_id))

    def running(self, batch_id: str) -> bool:
        task = self._tasks.get(batch_id)
        return task is not None and not task.done()

    async def close(self) -> None:
        """Stop scanning and stop the batches running here (their leases are released)."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        if self._serving is not None and self._serving is not asyncio.current_task():
            tasks.append(self._serving)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one batch -------------------------------------------------------------------
    async def run(self, batch_id: str) -> None:
        """Run one batch to its end here, if its lease is free."""
        try:
            lease = Lease(self.batches.path(batch_id), self.owner, self.lease_s, self.clock)
        except NotFound:
            return
        holder = lease.acquire()
        if holder is not None:
            if batch_id not in self._declined:
                self._declined.add(batch_id)
                log.info("batch %s is run by worker %s; not here", batch_id, holder.get("id"))
            return
        try:
            await self._run(batch_id, lease)
        except Exception:
            log.exception("batch %s stopped on an error; it resumes on the next start",
                          batch_id)
        finally:
            lease.release()
            self.persist()

    async def _run(self, batch_id: str, lease: Lease) -> None:
        rec = self.batches.record(batch_id)
        if rec["status"] in TERMINAL:
            return
        if rec["status"] == "finalizing":
            await asyncio.to_thread(self._finalize, rec, rec["info"]["ending"])
            return
        try:
            lines = self._input(rec)
        except (OSError, ValueError, NotFound) as exc:
            self._fail(rec, f"the input file {rec['input_file_id']} can no longer be read "
                            f"({type(exc).__name__})")
            return
        self.batches.repair_journal(batch_id)
        done = self.batches.journal(batch_id)
        log.info("batch %s: running %d of %d lines on worker %s", batch_id,
                 len(lines) - len(done), len(lines), self.owner["id"])
        now = int(self.clock())
        rec.update(status="in_progress", in_progress_at=rec.get("in_progress_at") or now)
        self._progress(rec, done)
        todo = iter([line for line in lines if line["custom_id"] not in done])
        ending = await self._lines(rec, lease, todo, done)
        if ending == "lost":
            log.warning("batch %s: stopped before its end; it resumes elsewhere or on the "
                        "next start", batch_id)
            self._progress(rec, done)
            return
        await asyncio.to_thread(self._finalize, rec, ending)

    async def _lines(self, rec: dict[str, Any], lease: Lease, todo: Any,
                     done: dict[str, dict[str, Any]]) -> str:
        """Run the lines; returns `completed`, `cancelled`, `expired` or `lost`."""
        batch_id = rec["id"]

        def stop_reason() -> str | None:
            if self.batches.cancel_requested(batch_id) is not None:
                return "cancelled"
            if self.clock() >= rec["expires_at"]:
                return "expired"
            return None if lease.held() else "lost"

        async def worker() -> None:
            for line in todo:
                async with self.slots:
                    reason = stop_reason()
                    if reason is not None:
                        raise Stop(reason)
                    try:
                        out = await self.run_line(line)
                    except Unavailable as exc:
                        raise Stop("lost") from exc
                    if not lease.held():
                        raise Stop("lost")
                    await asyncio.to_thread(self.batches.append, batch_id, out)
                    done.setdefault(line["custom_id"], out)

        workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
        watcher = asyncio.create_task(self._watch(rec, lease, done, stop_reason))
        pending = {*workers, watcher}
        reason = "completed"
        try:
            while pending - {watcher}:
                finished, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                stopped = next((t for t in finished if t.exception() is not None), None)
                if stopped is not None:
                    exc = stopped.exception()
                    if not isinstance(exc, Stop):
                        raise exc  # type: ignore[misc]
                    reason = str(exc)
                    break
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return reason

    async def _watch(self, rec: dict[str, Any], lease: Lease, done: dict[str, Any],
                     stop_reason: Callable[[], str | None]) -> None:
        """Renew the lease, save progress, and stop the run on a cancel, expiry or loss."""
        renewed = refreshed = self.clock()
        while True:
            await asyncio.sleep(PROGRESS_S)
            if self.clock() - renewed >= self.lease_s / 3:
                await asyncio.to_thread(lease.renew)
                renewed = self.clock()
            if self.refresh is not None and self.clock() - refreshed >= REFRESH_S:
                await asyncio.to_thread(self._progress, rec, done)  # commit before a reload
                await asyncio.to_thread(self.refresh)
                refreshed = self.clock()
            reason = stop_reason()
            if reason is not None:
                raise Stop(reason)
            if rec["request_counts"]["completed"] + rec["request_counts"]["failed"] != len(done):
                await asyncio.to_thread(self._progress, rec, done)

    # -- records -----------------------------------------------------------------------
    def _input(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        path = self.files.content_path(rec["input_file_id"])
        with path.open("rb") as f:
            return [json.loads(raw) for raw in f if raw.strip()]

    def _progress(self, rec: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
        rec["request_counts"] = counts(rec["request_counts"]["total"], done.values())
        self.batches.save(rec)
        self.persist()

    def _fail(self, rec: dict[str, Any], message: str) -> None:
        rec.update(status="failed", failed_at=int(self.clock()),
                   errors={"object": "list", "data": [
                       {"code": "input_unreadable", "message": message, "param": "input_file_id",
                        "line": None}]})
        self.batches.save(rec)
        log.error("batch %s failed: %s", rec["id"], message)

    def _finalize(self, rec: dict[str, Any], ending: str) -> None:
        """Output and error files from the journal, in input order; then the final status.
        The file ids are chosen and saved first, so a crash here is finished the same way."""
        info = rec.setdefault("info", {})
        if rec["status"] != "finalizing":
            info.update(ending=ending, output_file_id=FileStore.new_id(),
                        error_file_id=FileStore.new_id())
            rec.update(status="finalizing", finalizing_at=int(self.clock()))
            self.batches.save(rec)
        done = self.batches.journal(rec["id"])
        order = [line["custom_id"] for line in self._input(rec)]
        outputs = [done[cid] for cid in order if cid in done]
        ok = [o for o in outputs if not o.get("error")]
        bad = [o for o in outputs if o.get("error")]
        if ending == "expired":
            bad += [expired_line(cid) for cid in order if cid not in done]
        expires = info.get("output_expires_after")
        for key, rows, kind in (("output_file_id", ok, "output"), ("error_file_id", bad, "error")):
            if rows:
                self.files.write(info[key], (dump_line(o) for o in rows),
                                 filename=f"{rec['id']}_{kind}.jsonl", expires_after=expires)
                rec[key] = info[key]
        rec["request_counts"] = counts(rec["request_counts"]["total"], outputs)
        if ending == "expired":
            rec["request_counts"]["failed"] += len(order) - len(outputs)
        rec["usage"] = usage(outputs)
        now = int(self.clock())
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at",
                 "expired": "expired_at"}[ending]
        rec.update(status=ending, **{stamp: now})
        self.batches.save(rec)
        self.persist()
        log.info("batch %s %s: %s", rec["id"], ending, rec["request_counts"])
