"""The Files and Batches APIs on Modal: the store on a Modal Volume, one spawned call a batch.

The store (files, batch state, journal) lives on the `gpt-oss-batches` Volume, committed
after each write and as lines finish, reloaded before each read. Each batch runs in a
spawned `GptOss.run_batch` call, resumed by a new call when a poll finds its lease lapsed
(the container running it died). Batch ids are the store's own, so an id we did not issue
(a Modal FunctionCall id included) is a 404. No `modal` import here: the volume and the
spawn function are handed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class VolumeBatches:
    def __init__(self, runtime: Any, volume: Any, root: str,
                 spawn: Callable[[str], Any]) -> None:
        from worker.openai.batches.store import BatchStore
        from worker.openai.files.store import FileStore

        self.runtime, self.volume, self.spawn = runtime, volume, spawn
        self.files, self.batches = FileStore(Path(root)), BatchStore(Path(root))
        self.spawned: dict[str, float] = {}

    def api(self) -> Any:
        from worker.openai.batches.api import BatchAPI
        from worker.openai.batches.lines import ENDPOINTS

        return BatchAPI(self.batches, self.files, endpoints=ENDPOINTS, launch=self.launch,
                        adopt=self.adopt, persist=self.commit, refresh=self.reload)

    def launch(self, batch_id: str) -> None:
        self.spawned[batch_id] = time.time()
        self.spawn(batch_id)

    def adopt(self, batch_id: str) -> None:
        """A poll of an unfinished batch: a new call if nobody runs it (its call died)."""
        from worker.openai.batches.runner import LEASE_S
        from worker.openai.batches.store import Lease

        if time.time() - self.spawned.get(batch_id, 0.0) < 2 * LEASE_S:
            return  # spawned here lately: its call may not have taken the lease yet
        holder = Lease(self.batches.path(batch_id), {"id": ""}, LEASE_S).current()[1]
        if holder is None or float(holder.get("expires_at", 0)) <= time.time():
            log.info("batch %s has no live runner: spawning one to resume it", batch_id)
            self.launch(batch_id)

    def commit(self) -> None:
        self.volume.commit()

    def reload(self) -> None:
        try:
            self.volume.reload()
        except Exception as exc:  # open files in this container: read what we have
            log.debug("volume reload skipped: %s", exc)

    async def run(self, batch_id: str) -> dict[str, Any]:
        """What a spawned `run_batch` call does: run (or resume) the batch to its end."""
        from worker.openai.batches.api import public
        from worker.openai.batches.lines import chat_lines
        from worker.openai.batches.runner import BatchRunner
        from worker.platforms.http_files import batch_concurrency

        self.reload()
        state = self.runtime.state
        runner = BatchRunner(self.batches, self.files, chat_lines(state.ready_service),
                             concurrency=batch_concurrency(state.ready_service()),
                             persist=self.commit, refresh=self.reload)
        await self.runtime.engine_loop.call(runner.run(batch_id))
        return public(self.batches.record(batch_id), self.batches.cancel_requested(batch_id))
