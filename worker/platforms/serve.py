"""`python -m worker serve`: the HTTP server with the engine built at start-up."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from worker.openai.metrics import Metrics
from worker.platforms.http_app import AppState, create_app
from worker.platforms.http_files import batch_concurrency, open_batches
from worker.setup.bootstrap import Timeline, configure_logging, start
from worker.setup.config import Settings, load_settings
from worker.setup.progress import Progress
from worker.setup.startup_log import process_age
from worker.setup.weights import default_batch_dir

log = logging.getLogger(__name__)


def build_app(settings: Settings, env: Mapping[str, str],
              timeline: Timeline | None = None) -> Any:
    """The FastAPI app; its lifespan builds the engine and watches it."""
    state = AppState(api_key=settings.api_key, max_body_bytes=settings.max_request_bytes,
                     max_batch_lines=settings.max_batch_lines)
    timeline = timeline or Timeline()
    state.timeline = timeline.phases
    state.metrics = Metrics()
    progress = Progress(settings.show_loading_progress)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            service = await start(settings, env, timeline, progress, observer=state.metrics)
        except Exception as exc:
            log.error("start-up failed: %s: %s", type(exc).__name__, exc)
            _exit(3)
            raise
        state.service = service
        watcher = asyncio.create_task(_watch_engine(state))
        batch_dir = default_batch_dir(settings, env)
        runner = open_batches(state, batch_dir, concurrency=batch_concurrency(service))
        batches = asyncio.create_task(runner.serve())  # resumes unfinished batches
        log.info("files and batches in %s", batch_dir)
        url = f"http://{settings.host}:{settings.port}/v1"
        log.info("READY: model %s at %s", service.model_names[0], url)
        progress.ready(url, model=service.model_names[0], seconds=process_age())
        try:
            yield
        finally:
            state.draining = True
            watcher.cancel()
            batches.cancel()
            await runner.close()  # in-flight lines stop unjournaled; the batch resumes later
            await service.engine.shutdown()

    return create_app(state, lifespan=lifespan)


async def _watch_engine(state: AppState) -> None:
    """Exit non-zero soon after the engine dies, so the platform replaces this worker."""
    while True:
        await asyncio.sleep(1.0)
        if state.service is not None and state.service.engine.is_dead:
            log.error("the engine died; exiting so the platform starts a fresh worker")
            await asyncio.sleep(0.5)  # let in-flight requests receive their errors
            _exit(4)


def _exit(code: int) -> None:
    logging.shutdown()
    os._exit(code)


class DrainingServer:
    """uvicorn, with a drain on SIGTERM: new requests get 503 while in-flight ones finish."""

    def __init__(self, app: Any, settings: Settings):
        import uvicorn

        self.state: AppState = app.state.worker
        self.drain_seconds = settings.drain_seconds
        config = uvicorn.Config(app, host=settings.host, port=settings.port,
                                log_level=settings.log_level, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._uvicorn_exit = self.server.handle_exit
        self.server.handle_exit = self._on_signal  # type: ignore[method-assign]

    def _on_signal(self, sig: int, frame: Any) -> None:
        if self.state.draining or self.drain_seconds <= 0:
            self._uvicorn_exit(sig, frame)  # a second signal: stop now
            return
        self.state.draining = True
        log.info("signal %s: draining %d in-flight request(s) for up to %.0fs",
                 sig, self.state.inflight, self.drain_seconds)
        loop = asyncio.get_running_loop()  # the handler runs on the loop's thread
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(sig, frame)))

    async def _drain(self, sig: int, frame: Any) -> None:
        deadline = asyncio.get_running_loop().time() + self.drain_seconds
        while self.state.inflight > 0 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        log.info("drained (%d request(s) left); shutting down", self.state.inflight)
        # Not uvicorn's handle_exit: it would re-raise SIGTERM after shutdown (exit -15);
        # a drained worker exits 0.
        self.server.should_exit = True

    def run(self) -> None:
        self.server.run()


def main(argv: list[str], env: Mapping[str, str]) -> int:
    timeline = Timeline()
    timeline.phases["import"] = round(process_age() or 0.0, 3)  # interpreter + imports
    with timeline.phase("settings"):
        settings = load_settings(env)
    if settings is None:
        return 2
    configure_logging(settings)
    DrainingServer(build_app(settings, env, timeline), settings).run()
    return 0
