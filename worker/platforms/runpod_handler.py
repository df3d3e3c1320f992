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
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NoReturn, TypeVar

from worker.engine.loop import EngineLoop
from worker.platforms.runpod_jobs import FLUSH_INTERVAL, run_job
from worker.platforms.runpod_stream import BY_TIME, BatchKnobs
from worker.setup.bootstrap import Timeline, configure_logging, start
from worker.setup.config import load_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_MAX_LINES = 4096  # default of MAX_BATCH_LINES; RunPod caps a job's input at 10 MB anyway
EXIT_START_FAILED = 3
EXIT_ENGINE_DEAD = 4
_SDK_LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR"}


def make_handler(engine_loop: EngineLoop, service: Any, *, max_batch_lines: int = BATCH_MAX_LINES,
                 flush_interval: float = FLUSH_INTERVAL,
                 knobs: BatchKnobs = BY_TIME) -> Callable[..., AsyncIterator[Any]]:
    """The SDK's handler: an async generator, one per job. `knobs`: the environment's
    stream batching (DEFAULT_BATCH_SIZE...), under each job's own."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
        job_id = str(job.get("id"))

        async def on_cancel() -> None:
            left = await service.engine.num_unfinished()
            log.info("job %s cancelled: its engine request was aborted (engine requests "
                     "unfinished now: %d)", job_id, left)

        outputs = engine_loop.stream(
            lambda: run_job(service, job.get("input"), max_batch_lines=max_batch_lines,
                            flush_interval=flush_interval, knobs=knobs),
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
    settings = load_settings(env)
    if settings is None:
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
        "handler": make_handler(engine_loop, service, max_batch_lines=settings.max_batch_lines,
                                knobs=BatchKnobs(settings.default_batch_size,
                                                 settings.default_min_batch_size,
                                                 settings.default_batch_size_growth_factor)),
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
