"""`python -m worker runpod`: the RunPod Serverless worker (the Docker image's command).

Start-up builds the warm engine *before* `runpod.serverless.start`, so no job
pays the cold start; each phase is logged with its duration.

The engine lives on its own event loop in a daemon thread. The SDK runs its
job loop (or its local API server) with `asyncio.run` on a loop of its own,
and vLLM's AsyncLLM is bound to the loop that built it, so each job is bridged:
`run_job` (parse -> service -> encode, worker/jobs.py) runs on the engine
loop and its outputs are handed to the SDK's loop. When the SDK cancels a job
(runpod >= 1.10 cancels the job's task), the bridge cancels the engine-side
task, which closes the service stream and aborts the engine request.

If the engine dies, the process exits non-zero so RunPod replaces the worker
instead of failing every job it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, NoReturn, TypeVar

from worker.bootstrap import Timeline, configure_logging, start
from worker.config import Settings, SettingsError
from worker.jobs import FLUSH_INTERVAL, run_job

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_MAX_LINES = 4096  # default of MAX_BATCH_LINES; RunPod caps a job's input at 10 MB anyway
EXIT_START_FAILED = 3
EXIT_ENGINE_DEAD = 4
_SDK_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR"}


class EngineLoop:
    """An event loop in a daemon thread; the engine is built and used only there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="engine-loop",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the engine loop and wait for it (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def stream(self, items: Callable[[], AsyncIterator[T]],
                     on_cancel: Callable[[], Coroutine[Any, Any, None]] | None = None,
                     ) -> AsyncGenerator[T, None]:
        """Iterate `items()` on the engine loop, from the caller's loop.

        Closing or cancelling this iterator cancels the engine-side task (so the
        engine request is aborted) and waits, briefly, for that clean-up.
        """
        here = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        closed = asyncio.Event()

        def send(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                here.call_soon_threadsafe(queue.put_nowait, (kind, value))

        async def produce() -> None:
            try:
                async for item in items():
                    send("item", item)
                send("end", None)
            except asyncio.CancelledError:
                if on_cancel is not None:
                    await on_cancel()
                raise
            except Exception as exc:
                send("error", exc)
            finally:
                with contextlib.suppress(RuntimeError):
                    here.call_soon_threadsafe(closed.set)

        future = asyncio.run_coroutine_threadsafe(produce(), self.loop)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "item":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            if not future.done():
                future.cancel()  # cancels the task on the engine loop
                try:
                    await asyncio.wait_for(closed.wait(), timeout=10)
                except (TimeoutError, asyncio.CancelledError):
                    log.warning("engine-side clean-up of a cancelled job took over 10 s")


def make_handler(engine_loop: EngineLoop, service: Any, *, max_batch_lines: int = BATCH_MAX_LINES,
                 flush_interval: float = FLUSH_INTERVAL) -> Callable[..., AsyncIterator[Any]]:
    """The SDK's handler: an async generator, one per job."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
        job_id = str(job.get("id"))

        async def on_cancel() -> None:
            left = await service.engine.num_unfinished()
            log.info("job %s cancelled: its engine request was aborted (engine requests "
                     "unfinished now: %d)", job_id, left)

        outputs = engine_loop.stream(
            lambda: run_job(service, job.get("input"), max_batch_lines=max_batch_lines,
                            flush_interval=flush_interval),
            on_cancel=on_cancel,
        )
        async with contextlib.aclosing(outputs):  # closed early: cancel the engine side now
            async for output in outputs:
                yield output

    return handler


async def watch_engine(engine: Any, exit_process: Callable[[int], None], *,
                       interval: float = 1.0, grace: float = 2.0) -> None:
    """Exit non-zero soon after the engine dies, so RunPod starts a fresh worker."""
    while True:  # the engine offers no death event: poll its flag
        await asyncio.sleep(interval)
        if engine.is_dead:
            break
    log.error("the engine died; exiting so RunPod replaces this worker")
    await asyncio.sleep(grace)  # let the jobs in flight post their errors first
    exit_process(EXIT_ENGINE_DEAD)


def _exit(code: int) -> NoReturn:
    logging.shutdown()
    os._exit(code)


def _where_jobs_come_from(argv: list[str], env: Mapping[str, str]) -> str | None:
    """The SDK's job source, or None when it would have none (checked before the slow load)."""
    if "--rp_serve_api" in argv:
        return "local API server (--rp_serve_api)"
    if env.get("RUNPOD_REALTIME_PORT"):
        return "realtime API"
    if env.get("RUNPOD_WEBHOOK_GET_JOB"):
        return "RunPod job queue"
    return None


def main(argv: list[str], env: Mapping[str, str]) -> int:
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = _where_jobs_come_from(argv, env)
    if source is None:
        print("error: no job source: on RunPod, RUNPOD_WEBHOOK_GET_JOB is set by the platform; "
              "locally pass --rp_serve_api [--rp_api_port 8000] (or use `python -m worker "
              "serve` for a plain OpenAI server)", file=sys.stderr)
        return 2
    configure_logging(settings)
    # The SDK logs every job's input and output at its default level, DEBUG: follow ours.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", _SDK_LEVELS[settings.log_level])
    timeline = Timeline()
    with timeline.phase("sdk_import"):
        import runpod

    engine_loop = EngineLoop()
    engine_loop.start()
    try:
        service = engine_loop.run(start(settings, env, timeline))
    except Exception as exc:
        log.error("start-up failed: %s: %s", type(exc).__name__, exc)
        _exit(EXIT_START_FAILED)
    engine_loop.spawn(watch_engine(service.engine, _exit))
    concurrency = settings.max_concurrency or service.engine.info.max_num_seqs
    log.info("READY: model %s, %d concurrent jobs, jobs from the %s; cold start %.1fs",
             service.model_names[0], concurrency, source, timeline.total)

    sys.argv = [sys.argv[0], *argv]  # the SDK reads its --rp_* flags from sys.argv
    # The job loop installs its own SIGTERM handler (drain, then return). uvicorn (the local
    # API server) re-raises SIGTERM after its shutdown: this keeps that from killing us
    # before the engine is shut down.
    signal.signal(signal.SIGTERM, lambda signum, _frame: log.info("signal %d: stopping", signum))
    runpod.serverless.start({
        "handler": make_handler(engine_loop, service, max_batch_lines=settings.max_batch_lines),
        # A dead engine takes no new jobs while the watcher lets the running ones fail.
        "concurrency_modifier": lambda _current: 0 if service.engine.is_dead else concurrency,
        "return_aggregate_stream": True,
    })
    # The SDK returns after SIGTERM/SIGINT, once the jobs in flight are done.
    log.info("worker loop ended; shutting the engine down")
    try:
        engine_loop.run(service.engine.shutdown(), timeout=30)
    except Exception:
        log.warning("engine shutdown failed", exc_info=True)
    _exit(0)  # skip interpreter teardown with the engine thread still holding its loop
