"""One Modal container's engine, chat service and HTTP app, all on one `EngineLoop`.

`modal_app.GptOss` drives it from Modal's lifecycle hooks: `start` (volumes reloaded,
compile caches on their volume, engine built, volumes committed), `warm_up` + `sleep`
before a memory snapshot, `wake` (and a reseed) after a restore, `stop` at exit. Nothing
here imports `modal`: the volumes are handed in (anything with `reload()` and `commit()`),
so the lifecycle runs the same on the CPU engine in tests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from worker.engine.loop import ASGIApp, EngineLoop, on_loop
from worker.platforms.modal_support import (
    compile_cache_env,
    report_volume,
    reseed,
    warm_up,
)

if TYPE_CHECKING:
    from worker.platforms.http_common import AppState

log = logging.getLogger("modal_app")


class Volume(Protocol):
    def reload(self) -> None: ...

    def commit(self) -> None: ...


class Runtime:
    """The engine and what serves it, for one container (see the module docstring)."""

    def __init__(self, env: Mapping[str, str], *, exit_on_engine_death: bool = True,
                 volumes: Sequence[Volume] = (), cache_root: str | Path | None = None,
                 models: Sequence[str] = ()) -> None:
        from worker.openai.metrics import Metrics
        from worker.platforms.http_common import AppState
        from worker.setup.bootstrap import Timeline, configure_logging
        from worker.setup.config import Settings

        self.env = dict(env)
        self.settings = Settings.from_env(self.env)
        configure_logging(self.settings)
        self.timeline = Timeline()
        self.state: AppState = AppState(api_key=self.settings.api_key,
                              max_body_bytes=self.settings.max_request_bytes,
                              max_batch_lines=self.settings.max_batch_lines,
                              timeline=self.timeline.phases, metrics=Metrics())
        self.engine_loop = EngineLoop()
        self.exit_on_engine_death = exit_on_engine_death
        self.volumes = tuple(volumes)
        self.cache_root = cache_root
        self.models = tuple(models) or ((self.settings.model,) if self.settings.model else ())
        self.asleep = False
        self._asgi: ASGIApp | None = None
        self.volume_batches: Any = None  # worker.platforms.modal_batches.VolumeBatches
        self.batch_runner: Any = None  # run locally: worker.openai.batches.runner.BatchRunner

    def start(self) -> None:
        """Reload the volumes (the `download` function's commit shows now), put the compile
        caches on theirs, build the engine, then commit: the next cold start skips the
        download and the compilation."""
        from worker.setup.bootstrap import start

        self._each_volume("reload")
        if self.cache_root is not None:
            os.environ.update(compile_cache_env(self.cache_root))  # read by vLLM at import
        if self.models:
            report_volume(self.env, self.models)
        try:
            self.state.service = self.engine_loop.run(
                start(self.settings, self.env, self.timeline, observer=self.state.metrics))
        except BaseException:
            self.engine_loop.close()
            raise
        self._each_volume("commit")
        self.engine_loop.loop.call_soon_threadsafe(self.engine_loop.loop.create_task,
                                                   self._watch_engine())

    def _each_volume(self, action: str) -> None:
        """Reload or commit every volume; a failure is logged, never fatal: the container
        still serves (a failed commit costs the next cold start a download or a compile)."""
        for volume in self.volumes:
            try:
                getattr(volume, action)()
            except Exception as exc:
                log.warning("volume %s: %s failed (%s: %s)", getattr(volume, "name", "?"),
                            action, type(exc).__name__, exc)

    @property
    def engine(self) -> Any:
        return self.state.ready_service().engine

    def warm_up(self) -> int:
        """A few real chat requests before a snapshot (Modal's guide): returns how many."""
        count = self.engine_loop.run(warm_up(self.state.ready_service()))
        log.info("warmed up with %d chat requests before the snapshot", count)
        return count

    def sleep(self) -> None:
        """vLLM sleep mode (weights to CPU memory, KV cache freed) before a memory snapshot."""
        if not hasattr(self.engine, "sleep"):
            log.warning("this engine has no sleep mode: the snapshot holds an awake engine")
            return
        self.engine_loop.run(self.engine.sleep(1))
        self.asleep = True

    def wake(self) -> None:
        """After a restore: wake the engine, and draw fresh random state (every container
        restored from one snapshot would share it) here and in the engine-core process."""
        if self.asleep:
            self.engine_loop.run(self.engine.wake_up())
            self.asleep = False
            seed = reseed()
            if hasattr(self.engine, "reseed"):
                self.engine_loop.run(self.engine.reseed(seed))
            log.info("woke from the snapshot with fresh random state")

    def asgi(self, batches: Any = None) -> ASGIApp:
        """The shared HTTP app on the engine loop. `batches` (a `(volume, root, spawn)` triple)
        puts the Files and Batches APIs on a Modal Volume; None runs them as the HTTP server
        does, under BATCH_DIR."""
        if self._asgi is None:
            from worker.platforms.http_app import create_app

            self.open_batches(batches)
            self._asgi = on_loop(create_app(self.state), self.engine_loop)
        return self._asgi

    def open_batches(self, batches: Any = None) -> Any:
        """The Files and Batches APIs: on Modal the store on the batches Volume and a spawned
        call per batch (returns the VolumeBatches); locally the HTTP server's own runner."""
        if self.state.batches is not None:
            return self.volume_batches
        if batches is None:
            from worker.platforms.http_files import batch_concurrency, open_batches
            from worker.setup.weights import default_batch_dir

            runner = open_batches(self.state, default_batch_dir(self.settings, self.env),
                                  concurrency=batch_concurrency(self.state.ready_service()))
            self.batch_runner = runner
            self.engine_loop.loop.call_soon_threadsafe(self.engine_loop.loop.create_task,
                                                       runner.serve())
            return None
        from worker.platforms.modal_batches import VolumeBatches

        volume, root, spawn = batches
        self.volume_batches = VolumeBatches(self, volume, root, spawn)
        self.state.batches = self.volume_batches.api()
        return self.volume_batches

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.engine_loop.call(self._chat(body))

    async def batch(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from worker.openai.batch import run_batch

        service = self.state.ready_service()
        limit = self.settings.max_batch_lines
        return await self.engine_loop.call(run_batch(service, lines, max_lines=limit))

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        from worker.openai.chat.protocol import parse_chat_request
        from worker.openai.errors import InvalidRequest, to_openai_error

        try:
            service = self.state.ready_service()
            req = parse_chat_request(body)
            if req.stream:
                raise InvalidRequest("chat() returns one completion; stream over HTTP (web)",
                                     param="stream")
            result = await service.complete(await service.admit(req))
        except Exception as exc:
            status, error = to_openai_error(exc)
            if status >= 500:
                log.exception("chat failed")
            return error
        return result.model_dump(mode="json", exclude_none=True)

    async def _watch_engine(self) -> None:
        """Exit soon after the engine dies, so Modal replaces this container."""
        while True:
            await asyncio.sleep(1.0)
            service = self.state.service
            if service is not None and service.engine.is_dead and self.exit_on_engine_death:
                log.error("the engine died; exiting so Modal starts a fresh container")
                await asyncio.sleep(0.5)
                os._exit(4)

    def stop(self) -> None:
        self.state.draining = True
        service = self.state.service
        if self.batch_runner is not None:
            self.engine_loop.run(self.batch_runner.close(), timeout=60)
        if service is not None:
            self.engine_loop.run(service.engine.shutdown(), timeout=60)
            self.state.service = None  # let the engine go now, not at interpreter exit
        self.engine_loop.close()
        gc.collect()
