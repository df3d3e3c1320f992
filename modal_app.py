"""gpt-oss on Modal: `modal deploy modal_app.py` serves it as an OpenAI API (docs/MODAL.md).

One class, one warm vLLM engine per container, scaled to zero when idle:

- `web`: the worker's FastAPI app (chat with SSE streaming and tool calls, models, batch):
  `https://<workspace>--<app>-gptoss-web.modal.run/v1` is an OpenAI `base_url`;
- `chat(request) -> dict` and `batch(lines) -> list[dict]` for Python callers
  (`.remote()`, or `.spawn()` for a batch fetched later);
- `download`, a CPU function that puts the weights on the volume once
  (`modal run modal_app.py::download`), so GPU containers load them in place.

The engine lives on an event loop the class owns, on a thread of its own: vLLM's AsyncLLM
stays bound to the loop it first ran on, while Modal serves inputs on its loop (and
`.local()` has none), so a sync `@modal.enter()` builds the engine there and every engine
call, the ASGI app included, is handed to that loop (`worker.platforms.modal_runtime`).
Deploy-time settings are environment variables (`MODAL_*`, read by
`worker.platforms.modal_support.deploy_config`); importing this file needs only `modal`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import modal

from worker import VLLM_VERSION
from worker.engine.loop import ASGIApp, EngineLoop
from worker.platforms.modal_runtime import Runtime
from worker.platforms.modal_support import (
    CACHE_VOLUME,
    COMPILE_CACHE,
    HF_CACHE,
    WEIGHTS_VOLUME,
    WORKER_VARS,
    DeployConfig,
    deploy_config,
    image_env,
)

__all__ = ["WORKER_VARS", "DeployConfig", "EngineLoop", "Runtime", "deploy_config"]
log = logging.getLogger("modal_app")

VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"  # the release's own image: vLLM, kernels, CUDA
ROOT = Path(__file__).parent
PYPROJECT = ROOT / "pyproject.toml"
INSTALL = "scripts/image-install.sh"  # the Dockerfile's install step, shared
SRC = "/opt/gpt-oss-worker"


def cls_options(cfg: DeployConfig) -> dict[str, Any]:
    """Everything `@app.cls` gets but the image."""
    return {
        "gpu": cfg.gpu, "timeout": cfg.timeout, "startup_timeout": cfg.startup_timeout,
        "scaledown_window": cfg.scaledown_window, "min_containers": cfg.min_containers,
        "max_containers": cfg.max_containers, "secrets": secrets(cfg), "env": cfg.container_env,
        "volumes": {**VOLUMES, BATCH_DIR: BATCH_VOLUME}, "memory": cfg.memory_mib,
        "enable_memory_snapshot": cfg.snapshot,
        "experimental_options": {"enable_gpu_snapshot": True} if cfg.snapshot else None,
    }


def secrets(cfg: DeployConfig, *, api_key: bool = True) -> list[modal.Secret]:
    wanted = [(cfg.hf_secret, "HF_TOKEN"), (cfg.api_key_secret if api_key else None, "API_KEY")]
    return [modal.Secret.from_name(name, required_keys=[key]) for name, key in wanted if name]


CONFIG = deploy_config(os.environ)
VOLUMES = {HF_CACHE: modal.Volume.from_name(WEIGHTS_VOLUME, create_if_missing=True),
           COMPILE_CACHE: modal.Volume.from_name(CACHE_VOLUME, create_if_missing=True)}
# The Files and Batches APIs' store (uploads, batch state, journals, outputs): BATCH_DIR is
# this mount on Modal, so the setting is not forwarded.
BATCH_DIR = "/batches"
BATCH_VOLUME = modal.Volume.from_name("gpt-oss-batches", create_if_missing=True)
# The install step the Dockerfile runs too: the worker's dependencies under the engine
# stack's constraints, then the pinned-vLLM and offline-vocabulary checks.
BUILD = [f"cd {SRC} && bash {INSTALL} deps loaders", f"cd {SRC} && bash {INSTALL} check"]
image = (
    modal.Image.from_registry(
        VLLM_IMAGE, setup_dockerfile_commands=[
            'RUN command -v python || ln -s "$(command -v python3)" /usr/local/bin/python'],
    )
    .entrypoint([])  # not `vllm serve`
    .env({"PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
          "PIP_BREAK_SYSTEM_PACKAGES": "1"})
    .add_local_file(PYPROJECT, f"{SRC}/pyproject.toml", copy=True)
    .add_local_file(ROOT / INSTALL, f"{SRC}/{INSTALL}", copy=True)
    .run_commands(*BUILD)
    .env(image_env(CONFIG.snapshot))
    .add_local_python_source("worker")
)
app = modal.App(CONFIG.app_name, image=image)


@app.cls(**cls_options(CONFIG))
@modal.concurrent(max_inputs=CONFIG.max_inputs, target_inputs=CONFIG.target_inputs)
class GptOss:
    """gpt-oss behind the OpenAI API (`web`) and for Python callers (`chat`, `batch`)."""

    @modal.enter(snap=CONFIG.snapshot)
    def start(self) -> None:
        self.boot()
        if CONFIG.snapshot:  # the snapshot holds an engine that served real requests, asleep
            self.runtime.warm_up()
            self.runtime.sleep()

    @modal.enter()
    def resume(self) -> None:
        self.runtime.wake()  # after a restore, with a reseed (a no-op without snapshots)
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
            volumes = () if modal.is_local() else tuple(VOLUMES.values())
            self.runtime = Runtime(os.environ, volumes=volumes, cache_root=COMPILE_CACHE,
                                   models=CONFIG.models)
            self.runtime.start()

    def shutdown(self) -> None:
        """What `@modal.exit()` runs: drain and shut the engine down."""
        if getattr(self, "runtime", None) is not None:
            self.runtime.stop()
            del self.runtime

    @modal.asgi_app(requires_proxy_auth=CONFIG.proxy_auth)
    def web(self) -> ASGIApp:
        # On Modal the Files and Batches APIs live on a Volume and each batch runs in a
        # spawned `run_batch` call, so it outlives this container; locally, the server's runner.
        if modal.is_local():
            return self.runtime.asgi()
        return self.runtime.asgi(
            (BATCH_VOLUME, BATCH_DIR, lambda batch_id: GptOss().run_batch.spawn(batch_id)))

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
        batches = await asyncio.to_thread(
            runtime.open_batches,
            (BATCH_VOLUME, BATCH_DIR, lambda bid: GptOss().run_batch.spawn(bid)))
        return await batches.run(batch_id)  # type: ignore[no-any-return]

    async def _ready(self) -> Runtime:
        if getattr(self, "runtime", None) is None:  # `.local()` of an async method skips enter
            await asyncio.to_thread(self.boot)
        return self.runtime  # type: ignore[no-any-return]


@app.function(volumes=VOLUMES, secrets=secrets(CONFIG, api_key=False), env=CONFIG.container_env,
              cpu=4.0, memory=8192, timeout=CONFIG.startup_timeout)
def download(model: str = "") -> None:
    """`modal run modal_app.py::download [--model ID]`: the weights onto the volume, checked and
    committed, on a CPU container (MODEL, else what the containers will pick for MODAL_GPU)."""
    from worker.platforms.modal_support import download_weights

    for name, path in download_weights(os.environ, [model] if model else CONFIG.models).items():
        print(f"{name}: {path}")
    if not modal.is_local():
        VOLUMES[HF_CACHE].commit()


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
