"""gpt-oss on Modal: `modal deploy modal_app.py` serves it as an OpenAI API (docs/MODAL.md).

One class, one warm vLLM engine per container, scaled to zero when idle:

- `web`: the worker's FastAPI app (chat with SSE streaming and tool calls, models, batch):
  `https://<workspace>--<app>-gptoss-web.modal.run/v1` is an OpenAI `base_url`;
- `chat(request) -> dict` and `batch(lines) -> list[dict]` for Python callers
  (`.remote()`, or `.spawn()` for a batch fetched later).

The engine lives on an event loop the class owns, on a thread of its own: vLLM's AsyncLLM
stays bound to the loop it first ran on, while Modal serves inputs on its loop (and
`.local()` has none), so a sync `@modal.enter()` builds the engine there and every engine
call, the ASGI app included, is handed to that loop. Deploy-time settings are environment
variables read here (`MODAL_*`, see `deploy_config`); importing this file needs only `modal`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import modal

from worker import VLLM_VERSION
from worker.engine.loop import ASGIApp, EngineLoop, on_loop

if TYPE_CHECKING:
    from worker.platforms.http_app import AppState

log = logging.getLogger("modal_app")

VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"  # the release's own image: vLLM, kernels, CUDA
PYPROJECT = Path(__file__).with_name("pyproject.toml")
HF_CACHE, VLLM_CACHE = "/root/.cache/huggingface", "/root/.cache/vllm"
# The Files and Batches APIs' store (uploads, batch state, journals, outputs): BATCH_DIR is
# this mount on Modal, so the setting is not forwarded.
BATCH_DIR = "/batches"
BATCH_VOLUME = modal.Volume.from_name("gpt-oss-batches", create_if_missing=True)
# Worker settings passed from the deploying shell to the containers (secrets go in Modal
# Secrets; HOST, PORT, MODEL_CACHE_DIR, MAX_CONCURRENCY, DRAIN_SECONDS and SSH keys mean
# nothing here: Modal drains inputs itself before the exit hook).
WORKER_VARS = ("MODEL", "MODEL_REVISION", "SERVED_MODEL_NAME", "MAX_MODEL_LEN",
               "TENSOR_PARALLEL_SIZE", "QUANTIZATION", "GPU_MEMORY_UTILIZATION", "KV_CACHE_DTYPE",
               "MAX_NUM_SEQS", "MAX_NUM_BATCHED_TOKENS", "ASYNC_SCHEDULING",
               "ENABLE_PREFIX_CACHING", "ENABLE_CHUNKED_PREFILL", "ENFORCE_EAGER",
               "VLLM_ATTENTION_BACKEND_OVERRIDE", "ENABLE_AUTO_TOOL_CHOICE", "TOOL_CALL_PARSER",
               "DEFAULT_REASONING_EFFORT", "LOG_LEVEL", "SHOW_LOADING_PROGRESS",
               "MAX_REQUEST_BYTES", "MAX_COMPLETION_TOKENS_LIMIT", "MAX_N", "MAX_MESSAGES",
               "MAX_BATCH_LINES")
DEPLOY_VARS = ("MODAL_APP_NAME", "MODAL_GPU", "MODAL_GPU_COUNT", "MODAL_TIMEOUT",
               "MODAL_STARTUP_TIMEOUT", "MODAL_SCALEDOWN_WINDOW", "MODAL_MIN_CONTAINERS",
               "MODAL_MAX_CONTAINERS", "MODAL_MAX_INPUTS", "MODAL_TARGET_INPUTS",
               "MODAL_HF_SECRET", "MODAL_API_KEY_SECRET", "MODAL_PROXY_AUTH", "MODAL_SNAPSHOT")


@dataclass(frozen=True)
class DeployConfig:
    app_name: str = "gpt-oss-worker"
    gpu: str | list[str] = "H100"
    timeout: int = 3600  # per input: a long batch or stream
    startup_timeout: int = 1800  # the first boot downloads the weights into the Volume
    scaledown_window: int = 300
    min_containers: int = 0
    max_containers: int | None = None
    max_inputs: int = 64  # the engine's MAX_NUM_SEQS: more would only queue inside vLLM
    target_inputs: int | None = None
    hf_secret: str | None = None
    api_key_secret: str | None = None
    proxy_auth: bool = True
    snapshot: bool = False
    container_env: dict[str, str] = field(default_factory=dict)


def deploy_config(env: Mapping[str, str]) -> DeployConfig:
    """Read the deploy-time variables; a bad value raises ValueError naming the variable."""
    d = DeployConfig()

    def get(name: str) -> str | None:
        return env.get(name, "").strip() or None

    def opt(name: str, lo: int, hi: int) -> int | None:
        raw = get(name)
        if raw is not None and (not raw.isdigit() or not lo <= int(raw) <= hi):
            raise ValueError(f"{name}={raw!r}: expected a whole number from {lo} to {hi}")
        return None if raw is None else int(raw)

    def num(name: str, default: int, lo: int, hi: int) -> int:
        value = opt(name, lo, hi)
        return default if value is None else value

    def flag(name: str, default: bool) -> bool:
        raw = (get(name) or str(default)).lower()
        if raw not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ValueError(f"{name}={raw!r}: expected true/false (or 1/0)")
        return raw in {"1", "true", "yes", "on"}

    count = num("MODAL_GPU_COUNT", 1, 1, 8)
    gpus = [g.strip() + (f":{count}" if count != 1 and ":" not in g else "")
            for g in (get("MODAL_GPU") or str(d.gpu)).split(",") if g.strip()]
    api_key_secret = get("MODAL_API_KEY_SECRET")
    snapshot = flag("MODAL_SNAPSHOT", d.snapshot)
    container_env = {k: env[k] for k in (*WORKER_VARS, *DEPLOY_VARS) if get(k) is not None}
    if snapshot:
        container_env["ENABLE_SLEEP_MODE"] = "1"  # vLLM sleep mode: sleep, snapshot, wake
    return DeployConfig(
        app_name=get("MODAL_APP_NAME") or d.app_name,
        gpu=gpus[0] if len(gpus) == 1 else gpus,
        timeout=num("MODAL_TIMEOUT", d.timeout, 10, 86_400),
        startup_timeout=num("MODAL_STARTUP_TIMEOUT", d.startup_timeout, 60, 86_400),
        scaledown_window=num("MODAL_SCALEDOWN_WINDOW", d.scaledown_window, 2, 3600),
        min_containers=num("MODAL_MIN_CONTAINERS", d.min_containers, 0, 1000),
        max_containers=opt("MODAL_MAX_CONTAINERS", 1, 1000),
        max_inputs=num("MODAL_MAX_INPUTS", num("MAX_NUM_SEQS", d.max_inputs, 1, 4096), 1, 4096),
        target_inputs=opt("MODAL_TARGET_INPUTS", 1, 4096),
        hf_secret=get("MODAL_HF_SECRET"), api_key_secret=api_key_secret,
        proxy_auth=flag("MODAL_PROXY_AUTH", api_key_secret is None), snapshot=snapshot,
        container_env=container_env,
    )


def cls_options(cfg: DeployConfig) -> dict[str, Any]:
    """Everything `@app.cls` gets but the image."""
    secrets = [modal.Secret.from_name(name, required_keys=[key])
               for name, key in ((cfg.hf_secret, "HF_TOKEN"), (cfg.api_key_secret, "API_KEY"))
               if name]
    return {
        "gpu": cfg.gpu, "timeout": cfg.timeout, "startup_timeout": cfg.startup_timeout,
        "scaledown_window": cfg.scaledown_window, "min_containers": cfg.min_containers,
        "max_containers": cfg.max_containers, "secrets": secrets, "env": cfg.container_env,
        "volumes": {
            HF_CACHE: modal.Volume.from_name("gpt-oss-hf-cache", create_if_missing=True),
            VLLM_CACHE: modal.Volume.from_name("gpt-oss-vllm-cache", create_if_missing=True),
            BATCH_DIR: BATCH_VOLUME,
        },
        "enable_memory_snapshot": cfg.snapshot,
        "experimental_options": {"enable_gpu_snapshot": True} if cfg.snapshot else None,
    }


CONFIG = deploy_config(os.environ)
image = (
    modal.Image.from_registry(
        VLLM_IMAGE, setup_dockerfile_commands=[
            'RUN command -v python || ln -s "$(command -v python3)" /usr/local/bin/python'],
    )
    .entrypoint([])  # not `vllm serve`
    .pip_install_from_pyproject(str(PYPROJECT))  # read at deploy time; vLLM is the image's
    .env({"HF_HOME": HF_CACHE, "VLLM_CACHE_ROOT": VLLM_CACHE, "HF_XET_HIGH_PERFORMANCE": "1",
          "TIKTOKEN_RS_CACHE_DIR": "/opt/harmony-vocab"})
    # The Harmony vocabulary must load with no network at serving time: prove it at build.
    .run_commands("python -c 'import openai_harmony as h; "
                  "h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)'")
    .add_local_python_source("worker")
)
app = modal.App(CONFIG.app_name, image=image)


class Runtime:
    """One container's engine, chat service and HTTP app, all on one `EngineLoop`."""

    def __init__(self, env: Mapping[str, str], *, exit_on_engine_death: bool = True) -> None:
        from worker.platforms.http_app import AppState
        from worker.setup.bootstrap import Timeline, configure_logging
        from worker.setup.config import Settings

        self.env = dict(env)
        self.settings = Settings.from_env(self.env)
        configure_logging(self.settings)
        self.timeline = Timeline()
        self.state: AppState = AppState(api_key=self.settings.api_key,
                                        max_body_bytes=self.settings.max_request_bytes,
                                        max_batch_lines=self.settings.max_batch_lines,
                                        timeline=self.timeline.phases)
        self.engine_loop = EngineLoop()
        self.exit_on_engine_death = exit_on_engine_death
        self.asleep = False
        self._asgi: ASGIApp | None = None
        self.volume_batches: VolumeBatches | None = None
        self.batch_runner: Any = None  # run locally: worker.openai.batches.runner.BatchRunner

    def start(self) -> None:
        from worker.setup.bootstrap import start

        try:
            self.state.service = self.engine_loop.run(start(self.settings, self.env, self.timeline))
        except BaseException:
            self.engine_loop.close()
            raise
        self.engine_loop.loop.call_soon_threadsafe(self.engine_loop.loop.create_task,
                                                   self._watch_engine())

    @property
    def engine(self) -> Any:
        return self.state.ready_service().engine

    def sleep(self) -> None:
        """vLLM sleep mode (weights to CPU memory, KV cache freed) before a memory snapshot."""
        if not hasattr(self.engine, "sleep"):
            log.warning("this engine has no sleep mode: the snapshot holds an awake engine")
            return
        self.engine_loop.run(self.engine.sleep(1))
        self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.engine_loop.run(self.engine.wake_up())
            self.asleep = False

    def asgi(self) -> ASGIApp:
        if self._asgi is None:
            from worker.platforms.http_app import create_app

            self.open_batches()
            self._asgi = on_loop(create_app(self.state), self.engine_loop)
        return self._asgi

    def open_batches(self) -> VolumeBatches | None:
        """The Files and Batches APIs: on Modal, the store on the batches Volume and a spawned
        call per batch; run locally (`.local()`, tests), the HTTP server's own runner."""
        if self.state.batches is not None:
            return self.volume_batches
        if modal.is_local():
            from worker.platforms.http_files import batch_concurrency, open_batches
            from worker.setup.weights import default_batch_dir

            runner = open_batches(self.state, default_batch_dir(self.settings, self.env),
                                  concurrency=batch_concurrency(self.state.ready_service()))
            self.batch_runner = runner
            self.engine_loop.loop.call_soon_threadsafe(self.engine_loop.loop.create_task,
                                                       runner.serve())
            return None
        self.volume_batches = VolumeBatches(
            self, BATCH_VOLUME, BATCH_DIR,
            spawn=lambda batch_id: GptOss().run_batch.spawn(batch_id))
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
        from worker.openai.chat.protocol import ChatCompletionRequest
        from worker.openai.errors import InvalidRequest, to_openai_error

        try:
            service = self.state.ready_service()
            req = ChatCompletionRequest.model_validate(body)
            if req.stream:
                raise InvalidRequest("chat() returns one completion; stream over HTTP (web)",
                                     param="stream")
            result = await service.complete(service.prepare(req))
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


class VolumeBatches:
    """The Files and Batches APIs on Modal: the store (files, batch state, journal) on the
    `gpt-oss-batches` Volume, committed after each write and as lines finish, reloaded
    before each read; each batch runs in a spawned `GptOss.run_batch` call, resumed by a
    new call when a poll finds its lease lapsed (the container running it died). Batch ids
    are the store's own, so an id we did not issue (a FunctionCall id included) is a 404."""

    def __init__(self, runtime: Runtime, volume: Any, root: str,
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
        from worker.openai.batches.lines import chat_lines
        from worker.openai.batches.runner import BatchRunner
        from worker.platforms.http_files import batch_concurrency

        self.reload()
        state = self.runtime.state
        runner = BatchRunner(self.batches, self.files, chat_lines(state.ready_service),
                             concurrency=batch_concurrency(state.ready_service()),
                             persist=self.commit, refresh=self.reload)
        await self.runtime.engine_loop.call(runner.run(batch_id))
        from worker.openai.batches.api import public

        return public(self.batches.record(batch_id), self.batches.cancel_requested(batch_id))


@app.cls(**cls_options(CONFIG))
@modal.concurrent(max_inputs=CONFIG.max_inputs, target_inputs=CONFIG.target_inputs)
class GptOss:
    """gpt-oss behind the OpenAI API (`web`) and for Python callers (`chat`, `batch`)."""

    @modal.enter(snap=CONFIG.snapshot)
    def start(self) -> None:
        self.boot()
        if CONFIG.snapshot:
            self.runtime.sleep()  # the snapshot holds the warm engine, asleep

    @modal.enter()
    def resume(self) -> None:
        self.runtime.wake()  # after a restore (a no-op without snapshots)
        limit = min(CONFIG.max_inputs, self.runtime.engine.info.max_num_seqs)
        if limit < CONFIG.max_inputs and not modal.is_local():
            log.info("input concurrency %d -> %d (the engine's max_num_seqs)",
                     CONFIG.max_inputs, limit)
            modal.experimental.set_local_input_concurrency(limit)

    @modal.exit()
    def stop(self) -> None:
        self.shutdown()

    def boot(self) -> None:
        """What the enter hooks run: build the engine once, on this instance's own loop."""
        if getattr(self, "runtime", None) is None:
            self.runtime = Runtime(os.environ)
            self.runtime.start()

    def shutdown(self) -> None:
        """What `@modal.exit()` runs: drain and shut the engine down."""
        if getattr(self, "runtime", None) is not None:
            self.runtime.stop()
            del self.runtime

    @modal.asgi_app(requires_proxy_auth=CONFIG.proxy_auth)
    def web(self) -> ASGIApp:
        return self.runtime.asgi()

    @modal.method()
    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """One chat completion (non-streaming); a bad request returns its `{"error": ...}`."""
        return await (await self._ready()).chat(request)

    @modal.method()
    async def batch(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OpenAI batch input lines -> output lines, in order, each with its own error."""
        return await (await self._ready()).batch(lines)

    @modal.method()
    async def run_batch(self, batch_id: str) -> dict[str, Any]:
        """Run (or resume) a stored batch to its end; spawned by `POST /v1/batches`."""
        runtime = await self._ready()
        batches = await asyncio.to_thread(runtime.open_batches)
        if batches is None:
            raise RuntimeError("run_batch runs on Modal; locally the server's runner runs it")
        return await batches.run(batch_id)

    async def _ready(self) -> Runtime:
        if getattr(self, "runtime", None) is None:  # `.local()` of an async method skips enter
            await asyncio.to_thread(self.boot)
        return self.runtime  # type: ignore[no-any-return]


@app.local_entrypoint()
def smoke(deployed: bool = False) -> None:
    """`modal run modal_app.py [--deployed]`: one chat and a two-line batch."""
    cls = modal.Cls.from_name(CONFIG.app_name, "GptOss") if deployed else GptOss
    worker = cls()
    hello = {"messages": [{"role": "user", "content": "Say hello in five words."}],
             "max_tokens": 256, "reasoning_effort": "low"}
    reply = worker.chat.remote(hello)
    assert "error" not in reply, reply
    print("chat:", reply["choices"][0]["message"]["content"])
    lines = [{"custom_id": "ok", "body": hello},
             {"custom_id": "bad", "body": {**hello, "temperature": 9}}]
    out = worker.batch.remote(lines)
    print("batch:", [(o["custom_id"], o["response"]["status_code"]) for o in out])
    assert [o["response"]["status_code"] for o in out] == [200, 400], out
    if not deployed:
        print("web:", f"{worker.web.get_web_url()}/v1")
