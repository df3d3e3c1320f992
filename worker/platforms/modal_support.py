"""Modal, as pure functions: deploy-time settings, snapshot guards, memory, caches, weights.

`modal_app.py` (the thin adapter `modal deploy` imports) reads its whole configuration
here. Importing this module needs neither `modal` nor vLLM, torch, FastAPI or pydantic:
heavy pieces load inside the functions that run in a container.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.engine.reseed import reseed_process

log = logging.getLogger("modal_app")

GiB = 1024**3
# Volumes and where they are mounted: the weights (Hugging Face cache) and the compile
# caches (vLLM, torch inductor, Triton), apart so each can be cleared on its own.
WEIGHTS_VOLUME, CACHE_VOLUME = "gpt-oss-hf-cache", "gpt-oss-vllm-cache"
HF_CACHE, COMPILE_CACHE = "/root/.cache/huggingface", "/root/.cache/vllm"
# Host memory a snapshotting container holds besides the weights vLLM's sleep mode moves
# there: two Python processes (API, engine core) with torch, CUDA and the tokenizer.
SNAPSHOT_OVERHEAD_GIB = 8
# Worker settings passed from the deploying shell to the containers (secrets go in Modal
# Secrets; HOST, PORT, MODEL_CACHE_DIR, MAX_CONCURRENCY, DRAIN_SECONDS and SSH keys mean
# nothing here: Modal drains inputs itself before the exit hook).
WORKER_VARS = ("MODEL", "MODEL_REVISION", "SERVED_MODEL_NAME", "MAX_MODEL_LEN",
               "TENSOR_PARALLEL_SIZE", "DATA_PARALLEL_SIZE", "QUANTIZATION",
               "GPU_MEMORY_UTILIZATION", "KV_CACHE_DTYPE", "MAX_NUM_SEQS",
               "MAX_NUM_BATCHED_TOKENS", "MAX_CUDAGRAPH_CAPTURE_SIZE", "LOAD_FORMAT",
               "KV_CACHE_MEMORY_BYTES",
               "ASYNC_SCHEDULING",
               "ENABLE_PREFIX_CACHING", "ENABLE_CHUNKED_PREFILL", "ENFORCE_EAGER",
               "VLLM_ATTENTION_BACKEND_OVERRIDE", "ENABLE_AUTO_TOOL_CHOICE", "TOOL_CALL_PARSER",
               "DEFAULT_REASONING_EFFORT", "LOG_LEVEL", "SHOW_LOADING_PROGRESS",
               "MAX_REQUEST_BYTES", "MAX_COMPLETION_TOKENS_LIMIT", "MAX_N", "MAX_MESSAGES",
               "MAX_BATCH_LINES", "MAX_STOP_SEQUENCES", "MAX_STOP_CHARS", "MAX_SCHEMA_BYTES",
               "SCHEMA_COMPILE_SECONDS", "SPECULATIVE_CONFIG", "SEED", "MAX_LOGPROBS",
               "ENABLE_EXPERT_PARALLEL", "ENGINE_ARGS")
DEPLOY_VARS = ("MODAL_APP_NAME", "MODAL_GPU", "MODAL_GPU_COUNT", "MODAL_TIMEOUT",
               "MODAL_STARTUP_TIMEOUT", "MODAL_SCALEDOWN_WINDOW", "MODAL_MIN_CONTAINERS",
               "MODAL_MAX_CONTAINERS", "MODAL_MAX_INPUTS", "MODAL_TARGET_INPUTS",
               "MODAL_HF_SECRET", "MODAL_API_KEY_SECRET", "MODAL_PROXY_AUTH", "MODAL_SNAPSHOT",
               "MODAL_MEMORY")
# Chat requests run before a memory snapshot, so the restored engine has served real
# traffic (tokenizer, Harmony rendering, sampling, a tool call, structured output) already.
WARMUP_MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
WARMUP_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
WARMUP_REQUESTS: tuple[dict[str, Any], ...] = (
    {"messages": WARMUP_MESSAGES, "max_tokens": 32, "reasoning_effort": "low"},
    {"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
     "tools": [WARMUP_TOOL], "tool_choice": "required", "max_tokens": 64,
     "reasoning_effort": "low"},
    {"messages": WARMUP_MESSAGES, "max_tokens": 32, "stream": True, "temperature": 1.0},
)


@dataclass(frozen=True)
class DeployConfig:
    app_name: str = "gpt-oss-worker"
    gpu: str | list[str] = "H100"
    timeout: int = 3600  # per input: a long batch or stream
    startup_timeout: int = 1800  # a start without the `download` function downloads
    scaledown_window: int = 300
    min_containers: int = 0
    max_containers: int | None = None
    max_inputs: int = 64  # the engine's MAX_NUM_SEQS: more would only queue inside vLLM
    target_inputs: int | None = None
    hf_secret: str | None = None
    api_key_secret: str | None = None
    proxy_auth: bool = True
    snapshot: bool = False
    memory_mib: int | None = None  # host memory reserved (snapshots: the weights asleep)
    models: tuple[str, ...] = ("openai/gpt-oss-20b",)  # what `download` puts on the volume
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
    models = default_models(get("MODEL"), gpus)
    if snapshot:
        refuse_multi_gpu_snapshot(gpus, get("TENSOR_PARALLEL_SIZE"), get("DATA_PARALLEL_SIZE"))
    memory_gib = opt("MODAL_MEMORY", 1, 2048)
    if memory_gib is None and snapshot:
        memory_gib = snapshot_memory_gib(get("MODEL"), models, gpus)
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
        memory_mib=None if memory_gib is None else memory_gib * 1024, models=models,
        container_env=container_env,
    )


def gpu_count(gpu: str) -> int:
    """`H100:2` -> 2 (a bad count is Modal's to refuse: 1 here)."""
    _, _, count = gpu.partition(":")
    return int(count) if count.strip().isdigit() else 1


def refuse_multi_gpu_snapshot(gpus: Sequence[str], tensor_parallel: str | None,
                              data_parallel: str | None = None) -> None:
    """GPU memory snapshots hold one GPU's state: Modal's guide rules out multi-GPU."""
    many = [g for g in gpus if gpu_count(g) > 1]
    if many:
        raise ValueError(
            f"MODAL_SNAPSHOT=1 with MODAL_GPU={','.join(gpus)}: GPU memory snapshots are "
            "incompatible with more than one GPU per container (Modal's memory snapshot "
            "guide). Use one GPU (MODAL_GPU_COUNT=1), or turn snapshots off")
    for name, value in (("TENSOR_PARALLEL_SIZE", tensor_parallel),
                        ("DATA_PARALLEL_SIZE", data_parallel)):
        if value is not None and value != "1":
            raise ValueError(
                f"MODAL_SNAPSHOT=1 with {name}={value}: GPU memory snapshots need one GPU "
                f"per container; unset {name}")


def default_models(model: str | None, gpus: Sequence[str]) -> tuple[str, ...]:
    """What containers will serve: MODEL; unset, the default model on every GPU; `auto`, the
    planner's choice for each GPU type listed (the largest gpt-oss that fits; an unknown card
    counts as the largest model)."""
    from worker.setup.models_catalog import DEFAULT_MODEL, GPT_OSS_120B

    if not model:
        return (DEFAULT_MODEL,)
    if model.lower() != "auto":
        return (model,)
    from worker.setup.gpu import lookup_gpu
    from worker.setup.plan import PlanRequest, choose_default_model

    chosen: list[str] = []
    for g in gpus:
        name, _, _ = g.partition(":")
        try:
            card = lookup_gpu(name, gpu_count(g))
        except ValueError:
            choice = GPT_OSS_120B.name
        else:
            choice = choose_default_model(card, PlanRequest(model="")).model
        if choice not in chosen:
            chosen.append(choice)
    return tuple(chosen)


def snapshot_memory_gib(model: str | None, models: Sequence[str], gpus: Sequence[str]) -> int:
    """Host memory for a snapshotting container: the weights as the plan puts them on the GPU
    (sleep mode level 1 moves them to host memory) plus the processes around them."""
    from worker.setup.gpu import lookup_gpu
    from worker.setup.models_catalog import known_model
    from worker.setup.plan import PlanError, PlanRequest, plan_engine

    need = 0
    for name in models:
        shape = known_model(name)
        if shape is None:
            raise ValueError(
                f"MODAL_SNAPSHOT=1 with MODEL={model!r}: the worker cannot size the host "
                "memory a sleeping engine needs for a model it does not know; set "
                "MODAL_MEMORY (GiB, about the weights' size plus "
                f"{SNAPSHOT_OVERHEAD_GIB})")
        weights = shape.weight_bytes
        for g in gpus:
            try:
                card = lookup_gpu(g.partition(":")[0])
                plan = plan_engine(card, shape, PlanRequest(model=name, tensor_parallel_size=1))
                weights = max(weights, plan.fit.weights_bytes_per_gpu)
            except (ValueError, PlanError):
                pass  # unknown card or no fit: the checkpoint's own size
        need = max(need, math.ceil(weights / GiB) + SNAPSHOT_OVERHEAD_GIB)
    return need


def compile_cache_env(root: str | Path) -> dict[str, str]:
    """vLLM's torch.compile cache, torch inductor's and Triton's kernels, all on one volume."""
    root = Path(root)
    return {"VLLM_CACHE_ROOT": str(root), "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
            "TRITON_CACHE_DIR": str(root / "triton")}


def image_env(snapshot: bool) -> dict[str, str]:
    """Environment baked into the image (what a container needs before any code runs)."""
    env = {"HF_HOME": HF_CACHE, "HF_XET_HIGH_PERFORMANCE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           **compile_cache_env(COMPILE_CACHE)}
    if snapshot:  # compile workers (subprocesses) would make snapshot creation fail
        env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    return env


def weights_on_volume(env: Mapping[str, str], models: Sequence[str]) -> dict[str, Path | None]:
    """For each model: its complete local snapshot on the weights volume, or None. No network."""
    from worker.setup.config import Settings
    from worker.setup.weights import complete_snapshot, default_cache_dir

    settings = Settings.from_env(env)
    cache = default_cache_dir(settings, env)
    return {m: complete_snapshot(m, revision=settings.model_revision, cache_dir=cache)
            for m in models}


def report_volume(env: Mapping[str, str], models: Sequence[str]) -> bool:
    """Log whether a GPU container loads the weights in place or must download them."""
    found = weights_on_volume(env, models)
    for model, path in found.items():
        if path is not None:
            log.info("weights of %s are on the volume %s: loading them in place (%s)",
                     model, WEIGHTS_VOLUME, path)
        else:
            log.warning("weights of %s are not on the volume %s: this GPU container downloads "
                        "them now; `modal run modal_app.py::download` fills the volume once, "
                        "off the GPU", model, WEIGHTS_VOLUME)
    return all(path is not None for path in found.values())


def download_weights(env: Mapping[str, str], models: Sequence[str]) -> dict[str, Path]:
    """Fill the weights volume (the `download` function): each model complete and checked."""
    from worker.setup.config import Settings
    from worker.setup.progress import Progress
    from worker.setup.weights import default_cache_dir, ensure_weights

    settings = Settings.from_env(env)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    progress = Progress(True)
    out: dict[str, Path] = {}
    for model in models:
        with progress.phase("download"):
            out[model] = ensure_weights(model, revision=settings.model_revision, token=token,
                                        cache_dir=default_cache_dir(settings, env),
                                        progress=progress, endpoint=env.get("HF_ENDPOINT"))
        log.info("weights of %s on the volume: %s", model, out[model])
    return out


async def warm_up(service: Any, requests: Sequence[dict[str, Any]] = WARMUP_REQUESTS) -> int:
    """Run real chat requests through the service (streamed ones too); returns how many."""
    from worker.openai.chat.protocol import ChatCompletionRequest

    for body in requests:
        prepared = service.prepare(ChatCompletionRequest.model_validate(body))
        if body.get("stream"):
            async for _ in service.stream(prepared):
                pass
        else:
            await service.complete(prepared)
    return len(requests)


def reseed() -> int:
    """Fresh random state in this process after a snapshot restore (every restored container
    would otherwise draw the same numbers); returns the seed, for the engine core too."""
    seed = int.from_bytes(os.urandom(8), "little")
    reseed_process(seed)
    return seed
