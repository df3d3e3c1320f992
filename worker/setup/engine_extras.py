"""The engine arguments beyond the plan: SPECULATIVE_CONFIG, SEED, MAX_LOGPROBS,
ENABLE_EXPERT_PARALLEL, and the ones passed through (ENGINE_ARGS, worker-vllm's
variables), with the variable behind each argument the worker sets, so a conflict
names both. The speculative draft model is fetched like the weights and loaded offline.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from worker.setup.config import Settings, SettingsError

log = logging.getLogger(__name__)

# Engine argument -> the variable the worker sets it from (ENGINE_ARGS may not set these).
ARG_OWNERS = {
    "model": "MODEL", "tokenizer": "MODEL", "revision": "MODEL_REVISION",
    "download_dir": "MODEL_CACHE_DIR", "served_model_name": "SERVED_MODEL_NAME",
    "max_model_len": "MAX_MODEL_LEN", "max_num_seqs": "MAX_NUM_SEQS",
    "max_num_batched_tokens": "MAX_NUM_BATCHED_TOKENS",
    "gpu_memory_utilization": "GPU_MEMORY_UTILIZATION",
    "tensor_parallel_size": "TENSOR_PARALLEL_SIZE", "data_parallel_size": "DATA_PARALLEL_SIZE",
    "kv_cache_dtype": "KV_CACHE_DTYPE",
    "attention_backend": "VLLM_ATTENTION_BACKEND_OVERRIDE", "quantization": "QUANTIZATION",
    "enable_prefix_caching": "ENABLE_PREFIX_CACHING",
    "enable_chunked_prefill": "ENABLE_CHUNKED_PREFILL", "async_scheduling": "ASYNC_SCHEDULING",
    "enforce_eager": "ENFORCE_EAGER", "enable_sleep_mode": "ENABLE_SLEEP_MODE",
    "load_format": "LOAD_FORMAT", "compilation_config": "MAX_CUDAGRAPH_CAPTURE_SIZE",
    "kv_cache_memory_bytes": "KV_CACHE_MEMORY_BYTES",
    "seed": "SEED", "max_logprobs": "MAX_LOGPROBS", "speculative_config": "SPECULATIVE_CONFIG",
    "enable_expert_parallel": "ENABLE_EXPERT_PARALLEL",
    "structured_outputs_config": "the worker itself (its constrained Harmony phases)",
    "generation_config": "the worker itself (the model's generation_config.json)",
    "scheduling_policy": "the worker itself (priority: live requests before batches)",
    "disable_log_stats": "the worker itself", "dtype": "the worker itself (bfloat16)",
}


def modelled_args(settings: Settings) -> dict[str, Any]:
    """The engine arguments of the modelled variables above (unset ones: vLLM's default)."""
    args: dict[str, Any] = {"seed": settings.seed, "max_logprobs": settings.max_logprobs,
                            "speculative_config": settings.speculative_config}
    if settings.enable_expert_parallel:
        args["enable_expert_parallel"] = True
    return {k: v for k, v in args.items() if v is not None}


def passthrough(settings: Settings) -> dict[str, Any]:
    """EngineConfig's keyword arguments for the passed-through engine arguments."""
    extra = dict(settings.engine_args or {})
    return {"extra_args": extra, "arg_owners": ARG_OWNERS,
            "extra_sources": {k: settings.engine_arg_source(k) for k in extra}}


def check(config: Any) -> None:
    """Every passed-through engine argument exists in the installed vLLM and none is one
    the worker sets (SettingsError naming it); imports vLLM only when there are some."""
    if not config.extra_args:
        return
    from worker.engine.extra_args import EngineArgsError
    from worker.engine.vllm_engine import check_config

    try:
        check_config(config)
    except EngineArgsError as exc:
        raise SettingsError(f"invalid configuration: {exc}") from None


def local_draft(config: Any, fetch: Any) -> Any:
    """`config` with the speculative draft model replaced by its local snapshot, fetched by
    `fetch(model, revision)` like the weights (vLLM then loads it offline)."""
    spec = dict(config.engine_args.get("speculative_config") or {})
    draft = spec.get("model")
    if not isinstance(draft, str) or not draft or Path(draft).expanduser().is_dir():
        return config
    path = fetch(draft, spec.pop("revision", None))
    log.info("speculative draft model %s at %s", draft, path)
    spec["model"] = str(path)
    return replace(config, engine_args={**config.engine_args, "speculative_config": spec})
