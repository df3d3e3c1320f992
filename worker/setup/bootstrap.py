"""Cold start, shared by every adapter: settings -> hardware -> plan -> engine -> service.

Each phase is timed; a bad configuration or an impossible fit stops here, in
seconds, before anything heavy loads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from worker.setup import engine_extras
from worker.setup.config import Settings, SettingsError
from worker.setup.weights import default_cache_dir

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "tiny-gpt-oss"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# xgrammar with compact JSON (a model must not spin on optional whitespace), applied from
# the first generated token: vLLM attaches its gpt-oss reasoning parser to structured
# outputs and would otherwise wait for `<|channel|>final<|message|>` before constraining,
# which never comes in our constrained phases (a tool call's arguments, a picked name).
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True,
                      "enable_in_reasoning": True}

DUMMY_BANNER = ("\n" + "!" * 78 + "\n  LOAD_FORMAT=dummy: RANDOM WEIGHTS. Every answer from this "
                "server is NOISE.\n  The model has the real shape, so speed and start-up "
                "cost are real; nothing else is.\n" + "!" * 78)


@dataclass
class Timeline:
    """Start-up phases and their durations in seconds, in order."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("start-up phase %s ...", name)
        try:
            yield
        finally:
            self.phases[name] = round(time.perf_counter() - t0, 3)
            log.info("start-up phase %s done in %.2fs", name, self.phases[name])

    def summary(self) -> str:
        return json.dumps({"event": "cold_start", **self.phases, "total": self.total})

    @property
    def total(self) -> float:
        """Top-level phases only: `engine.compile` is a part of `engine`."""
        return round(sum(v for k, v in self.phases.items() if "." not in k), 3)


@dataclass(frozen=True)
class Resolved:
    """What the plan decided: the model to load, its names and the engine config."""

    model: str
    served_names: tuple[str, ...]
    engine_config: Any  # worker.engine.vllm_engine.EngineConfig
    plan: Any  # worker.setup.plan.EnginePlan
    tiny: bool


def tiny_cache_dir(settings: Settings, env: Mapping[str, str]) -> Path:
    base = default_cache_dir(settings, env)
    if base is None:
        base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt-oss-worker"
    return base


def plan_request(settings: Settings) -> Any:
    """What the planner needs from the settings (a worker.setup.plan.PlanRequest)."""
    from worker.setup.plan import PlanRequest

    return PlanRequest(
        model=settings.model or "",
        max_model_len=settings.max_model_len,
        tensor_parallel_size=settings.tensor_parallel_size,
        data_parallel_size=settings.data_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        kv_cache_dtype=settings.kv_cache_dtype,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        attention_backend_override=settings.attention_backend_override,
        quantization=settings.quantization,
        max_cudagraph_capture_size=settings.max_cudagraph_capture_size,
        kv_cache_memory=settings.kv_cache_memory_bytes,
        load_format=settings.load_format,
        fastsafetensors=importlib.util.find_spec("fastsafetensors") is not None,
    )


AUTO = "auto"
AUTO_BANNER = ("\n" + "!" * 78 + "\n  MODEL=auto: serving {model}, the largest gpt-oss that "
               "fits THIS GPU ({why}).\n  Workers of one endpoint on different GPUs may serve "
               "DIFFERENT models under\n  different names and fail each other's requests: set "
               "MODEL to one model.\n" + "!" * 78)


def pick_model(model: str | None, gpu: Any, req: Any) -> str:
    """MODEL as set; unset: the one default model; `auto`: the largest that fits `gpu`."""
    from worker.setup.models_catalog import DEFAULT_MODEL
    from worker.setup.plan import choose_default_model

    if model is None:
        log.info("MODEL not set: serving the default %s (MODEL=auto picks the largest gpt-oss "
                 "that fits each GPU instead)", DEFAULT_MODEL)
        return DEFAULT_MODEL
    if model.lower() != AUTO:
        return model
    choice = choose_default_model(gpu, req)
    log.warning(AUTO_BANNER.format(model=choice.model, why=choice.reason))
    return choice.model


def model_shape(settings: Settings, env: Mapping[str, str], model: str) -> Any:
    """The planner's ModelShape of MODEL: catalogued, a local checkpoint, or any gpt-oss repo
    on the Hub (its config.json read first, from the cache when there)."""
    from worker.setup.checkpoint import describe, require_gpt_oss
    from worker.setup.models_catalog import known_model, shape_from_dir

    shape = known_model(model)
    if shape is not None:
        return shape
    folder = Path(model).expanduser()
    if (folder / "config.json").is_file():
        require_gpt_oss(json.loads((folder / "config.json").read_text(encoding="utf-8")), model)
        return shape_from_dir(folder)
    if not HUB_ID.fullmatch(model):
        raise SettingsError(f"MODEL={model!r} is neither a Hub repo id (ORG/NAME) nor a local "
                            "checkpoint directory with a config.json")
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    return describe(model, revision=settings.model_revision, token=token,
                    cache_dir=default_cache_dir(settings, env), endpoint=env.get("HF_ENDPOINT"))


def resolve(settings: Settings, env: Mapping[str, str], gpu: Any) -> Resolved:
    """Pick the model and plan the engine. Raises PlanError when it cannot fit."""
    from worker.engine.vllm_engine import EngineConfig
    from worker.setup.plan import engine_args, plan_engine

    tiny = False
    req = plan_request(settings)
    model = settings.model
    if (model is None or model.lower() == AUTO) and gpu is None:
        from worker.tiny import ensure_tiny_model

        model = str(ensure_tiny_model("random", tiny_cache_dir(settings, env)))
        tiny = True
        log.warning("no GPU and no MODEL set: serving a tiny RANDOM gpt-oss on the CPU "
                    "engine; its output is gibberish (set MODEL to serve a real model)")
    else:
        model = pick_model(model, gpu, req)
    if settings.load_format == "dummy":  # (unset: the plan's choice, never dummy)
        if not (Path(model) / "config.json").is_file():
            raise SettingsError(
                f"LOAD_FORMAT=dummy builds the model from a local config.json alone, and "
                f"MODEL={model!r} is no such folder: write one with `python -m worker.tiny "
                "--kind shape-20b --cache DIR` (or shape-120b) and set MODEL to it")
        log.warning(DUMMY_BANNER)
    shape = model_shape(settings, env, model)
    plan = plan_engine(gpu, shape, replace(req, model=model))
    for warning in plan.warnings:
        log.warning("%s", warning)
    served = (settings.served_model_name or (TINY_MODEL_NAME if tiny else model),)
    cache = default_cache_dir(settings, env)
    args: dict[str, Any] = {
        **engine_args(plan),
        "model": model,
        "served_model_name": list(served),
        "revision": settings.model_revision,
        "download_dir": str(cache) if cache else None,
        "max_num_seqs": settings.max_num_seqs,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "enable_chunked_prefill": settings.enable_chunked_prefill,
        "enforce_eager": settings.enforce_eager or plan.device == "cpu",
        "generation_config": "auto",
        "disable_log_stats": True,
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS),
        **engine_extras.modelled_args(settings),
    }
    if plan.device == "cpu":
        args["dtype"] = "bfloat16"
    else:
        args["async_scheduling"] = settings.async_scheduling
        if settings.enable_sleep_mode:
            args["enable_sleep_mode"] = True
    env_extra = dict(plan.env)
    # a serverless worker reports nothing home (vLLM's usage stats: a thread and a subprocess
    # at start); set VLLM_NO_USAGE_STATS=0 to send them
    env_extra.setdefault("VLLM_NO_USAGE_STATS", env.get("VLLM_NO_USAGE_STATS", "1"))
    if plan.device == "cpu":
        # AsyncLLM always runs its engine core in a child process; on the CPU this also
        # keeps the model executor inside that process instead of a third one.
        env_extra.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if settings.hf_token is not None:
        env_extra["HF_TOKEN"] = settings.hf_token.get_secret_value()
    config = EngineConfig(
        model=model, served_model_names=served, device=plan.device,
        engine_args={k: v for k, v in args.items() if v is not None}, env=env_extra,
        load_format=plan.load_format, cudagraph_capture_sizes=plan.cudagraph_capture_sizes,
        **engine_extras.passthrough(settings),
    )
    return Resolved(model=model, served_names=served, engine_config=config, plan=plan, tiny=tiny)


async def start(settings: Settings, env: Mapping[str, str], timeline: Timeline,
                progress: Any = None, observer: Any = None) -> Any:
    """Build the warm engine and the chat service; returns worker.openai.chat.service.ChatService.

    `observer` (a worker.openai.metrics.Observer, e.g. Metrics) sees every chat request's tokens."""
    from worker.setup.gpu import probe
    from worker.setup.progress import Progress
    from worker.setup.startup_log import VllmStartupLog
    from worker.setup.weights import ensure_weights

    progress = progress or Progress(settings.show_loading_progress)
    with timeline.phase("probe"):
        gpu = probe(env)
    with timeline.phase("plan"):
        resolved = resolve(settings, env, gpu)
        log.info("plan: %s", resolved.plan)
        engine_extras.check(resolved.engine_config)  # ENGINE_ARGS against the pinned vLLM
    cache = default_cache_dir(settings, env)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    from worker.engine.vllm_engine import VllmEngine, prefetch
    from worker.openai.chat.service import ChatService

    # vLLM imports while the weights download (the engine phase waits for what is left)
    importing = prefetch(replace(resolved.engine_config,
                                 env=engine_env(resolved.engine_config, cache)))
    with timeline.phase("download"), progress.phase("download"):
        weights = ensure_weights(resolved.model, revision=settings.model_revision,
                                 cache_dir=cache, token=token, progress=progress)
        config = engine_extras.local_draft(resolved.engine_config, lambda model, rev: (
            ensure_weights(model, revision=rev, cache_dir=cache, token=token, progress=progress)))

    config = load_local(config, weights, cache)
    parts: dict[str, float] = {}
    with timeline.phase("engine"):
        t0 = time.perf_counter()
        importing.join()  # what is left of the import after the download: its critical path
        parts["vllm_import"] = round(time.perf_counter() - t0, 3)
        engine = await VllmEngine.build(config, phases=parts,
                                         monitor=VllmStartupLog(progress))
    timeline.phases.update({f"engine.{name}": seconds for name, seconds in parts.items()})
    service = ChatService(engine, default_effort=settings.default_reasoning_effort,
                          limits=limits_from(settings), observer=observer)
    log.info("%s", timeline.summary())
    return service


def limits_from(settings: Settings) -> Any:
    from worker.openai.chat.service import Limits

    return Limits(max_n=settings.max_n, max_messages=settings.max_messages,
                  max_completion_tokens=settings.max_completion_tokens_limit,
                  max_stop_sequences=settings.max_stop_sequences,
                  max_stop_chars=settings.max_stop_chars,
                  max_schema_bytes=settings.max_schema_bytes,
                  schema_compile_seconds=settings.schema_compile_seconds)


def load_local(config: Any, weights: Path, cache: Path | None) -> Any:
    """vLLM loads the local snapshot, offline; the hub id stays the model's served name."""
    args = {k: v for k, v in config.engine_args.items() if k not in ("revision", "download_dir")}
    env = {**engine_env(config, cache), "HF_HUB_OFFLINE": "1"}
    return replace(config, engine_args={**args, "model": str(weights)}, env=env)


def engine_env(config: Any, cache: Path | None) -> dict[str, str]:
    """The engine's environment: the plan's and the compile caches', never HF_TOKEN (the
    worker downloads; vLLM loads offline)."""
    from worker.setup.weights import cache_env

    return {k: v for k, v in {**cache_env(cache), **config.env}.items() if k != "HF_TOKEN"}


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("VLLM_LOGGING_LEVEL", settings.log_level.upper())
