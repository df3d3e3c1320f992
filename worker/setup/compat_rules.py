"""The rule for each of worker-vllm's variables (see `worker.setup.compat`).

A note is both the docs table's text and, for a refused value, the start-up error after
`NAME='value': `, so it says why and what to use instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from worker.setup.compat_model import (
    OFF,
    ON,
    CompatError,
    Rule,
    Translation,
    builtin,
    engine,
    reject,
    supported,
    to,
)
from worker.setup.compat_model import lowered as _v
from worker.setup.compat_refused import SERVER, refused

LIBRARY = frozenset({"PYTORCH_ALLOC_CONF", "VLLM_USE_DEEP_GEMM"})  # read by torch / vLLM
# Old stream-grouping knobs and the variable of ours each becomes once the settings model
# has it; until then only worker-vllm's defaults pass.
BATCH_KNOBS = {
    "DEFAULT_BATCH_SIZE": ("DEFAULT_BATCH_SIZE", "50"),
    "DEFAULT_MIN_BATCH_SIZE": ("DEFAULT_MIN_BATCH_SIZE", "1"),
    "DEFAULT_BATCH_SIZE_GROWTH_FACTOR": ("DEFAULT_BATCH_SIZE_GROWTH_FACTOR", "3"),
    "MIN_BATCH_SIZE": ("DEFAULT_MIN_BATCH_SIZE", "1"),
    "BATCH_SIZE_GROWTH_FACTOR": ("DEFAULT_BATCH_SIZE_GROWTH_FACTOR", "3"),
}
# The speculative-decoding variables of worker-vllm's previous generation, folded into
# SPECULATIVE_CONFIG: variable -> (key, type); 0 means unset for the numbers.
SPECULATIVE_FIELDS: dict[str, tuple[str, type]] = {
    "SPECULATIVE_METHOD": ("method", str), "SPECULATIVE_MODEL": ("model", str),
    "NUM_SPECULATIVE_TOKENS": ("num_speculative_tokens", int),
    "NGRAM_PROMPT_LOOKUP_MAX": ("prompt_lookup_max", int),
    "NGRAM_PROMPT_LOOKUP_MIN": ("prompt_lookup_min", int),
    "SPECULATIVE_DRAFT_TENSOR_PARALLEL_SIZE": ("draft_tensor_parallel_size", int),
    "SPECULATIVE_MAX_MODEL_LEN": ("max_model_len", int),
    "SPECULATIVE_DISABLE_BY_BATCH_SIZE": ("disable_by_batch_size", int),
    "SPECULATIVE_QUANTIZATION": ("quantization", str),
    "SPECULATIVE_MODEL_REVISION": ("revision", str),
    "SPECULATIVE_ENFORCE_EAGER": ("enforce_eager", bool),
}

_TEXT_ONLY = "gpt-oss is a text-only decoder: nothing to act on (accepted, no effect)"
_LORA = "the worker serves no LoRA adapters; without ENABLE_LORA this asks nothing (accepted)"


def _tool_parser(value: str, env: Mapping[str, str]) -> str:
    if value.lower() in ("openai", "openai_gptoss"):
        return "openai"
    raise CompatError(f"TOOL_CALL_PARSER={value!r}: gpt-oss writes its tool calls in Harmony, "
                      "which the worker parses itself (`openai`); that parser is for another "
                      "model family: unset TOOL_CALL_PARSER")


def _same_as(*names: str) -> Callable[[str, Mapping[str, str]], bool]:
    def check(value: str, env: Mapping[str, str]) -> bool:
        return any((env.get(n) or "").strip() == value for n in names)
    return check


def _fixed() -> list[Rule]:
    return [
        # --- supported, with worker-vllm's special values -----------------------------
        supported("MAX_MODEL_LEN", "`auto` or `0` means unset: the largest context that "
                  "fits the GPU", unset=_v("auto", "0")),
        supported("MAX_NUM_BATCHED_TOKENS", "`0` means unset: chosen per GPU", unset=_v("0")),
        supported("QUANTIZATION", "`None` means unset (`auto`: the checkpoint's own MXFP4)",
                  unset=_v("none", "null")),
        supported("TOOL_CALL_PARSER", "`openai` (or `openai_gptoss`); another parser is "
                  "refused: gpt-oss writes its tool calls in Harmony", convert=_tool_parser),
        *(supported(n, "read by PyTorch / vLLM themselves in the worker's process, as in "
                    "worker-vllm") for n in sorted(LIBRARY)),
        # --- mapped onto ours ------------------------------------------------------------
        to("OPENAI_SERVED_MODEL_NAME_OVERRIDE", "SERVED_MODEL_NAME", "wins over "
           "SERVED_MODEL_NAME, which an image with baked weights sets to its model's name",
           wins=True),
        to("ATTENTION_BACKEND", "VLLM_ATTENTION_BACKEND_OVERRIDE", "the worker's override"),
        to("VLLM_API_KEY", "API_KEY", "the key `python -m worker serve` requires (RunPod "
           "authenticates callers itself)", secret=True),
        builtin("VLLM_EXTRA_ARGS", "each `--flag value` in it is ruled like the variable of "
                "the same name in this table (and wins over that variable, as it did there)"),
        *(to(n, "SPECULATIVE_CONFIG", "folded into SPECULATIVE_CONFIG (`0` means unset)",
             unset=_v("0") if SPECULATIVE_FIELDS[n][1] is int else frozenset())
          for n in SPECULATIVE_FIELDS),
        # --- the worker's own behaviour -----------------------------------------------------
        builtin("REASONING_PARSER", "`openai_gptoss` (or `openai`) passes: the worker parses "
                "Harmony's analysis channel into `reasoning` itself; a parser for another model "
                "family is refused", unset=_v("openai_gptoss", "openai")),
        builtin("RAW_OPENAI_OUTPUT", "`1`/`true` passes: the OpenAI route's stream is the SSE "
                "text OpenAI clients read; for chunk objects send the native input "
                "(`messages`, `stream: true`) instead", unset=_v("1", "true")),
        builtin("DISABLE_LOG_STATS", "vLLM's periodic stats lines stay off; the HTTP server "
                "serves Prometheus metrics at /metrics (accepted)"),
        builtin("DISABLE_LOG_REQUESTS", "the worker never logs request contents (accepted)"),
        builtin("MAX_LOG_LEN", "the worker never logs prompts (accepted)"),
        builtin("VLLM_PORT", "there is no internal vLLM server: the engine runs in the "
                "worker's process (accepted)"),
        builtin("VLLM_STARTUP_TIMEOUT", "start-up has no separate time limit: a bad setting "
                "stops it in seconds, a download shows progress (accepted)"),
        builtin("DISABLE_FRONTEND_MULTIPROCESSING", "no vLLM front-end process (accepted)"),
        builtin("DISABLE_FASTAPI_DOCS", SERVER + " (accepted; its /docs are off)"),
        builtin("DISABLE_UVICORN_ACCESS_LOG", SERVER + " (accepted)"),
        builtin("UVICORN_LOG_LEVEL", SERVER + " (accepted; LOG_LEVEL sets the worker's)"),
        builtin("H11_MAX_HEADER_COUNT", SERVER + " (accepted)"),
        builtin("H11_MAX_INCOMPLETE_EVENT_SIZE", SERVER + " (accepted)"),
        builtin("ENABLE_SERVER_LOAD_TRACKING", SERVER + " (accepted)"),
        builtin("ENABLE_REQUEST_ID_HEADERS", SERVER + " (accepted)"),
        builtin("LOG_ERROR_STACK", SERVER + " (accepted)"),
        builtin("EXCLUDE_TOOLS_WHEN_TOOL_CHOICE_NONE", "`true` passes: the worker always "
                "leaves tools out of the prompt for `tool_choice: none`", unset=ON),
        builtin("TOKENIZER", "the same as MODEL passes; gpt-oss uses the o200k_harmony "
                "vocabulary the worker has built in: unset it", unset=frozenset(),
                accept=_same_as("MODEL", "MODEL_NAME")),
        builtin("TOKENIZER_NAME", "as TOKENIZER", unset=frozenset(),
                accept=_same_as("MODEL", "MODEL_NAME")),
        builtin("TOKENIZER_REVISION", "`main` or the same as MODEL_REVISION passes; the "
                "vocabulary is built in: unset it", unset=_v("main"),
                accept=_same_as("MODEL_REVISION", "REVISION")),
        builtin("BASE_PATH", "`/runpod-volume` passes (the default); else set MODEL_CACHE_DIR",
                unset=_v("/runpod-volume")),
        *(builtin(n, _TEXT_ONLY) for n in (
            "ALLOWED_LOCAL_MEDIA_PATH", "ALLOWED_MEDIA_DOMAINS", "DISABLE_CHUNKED_MM_INPUT",
            "INTERLEAVE_MM_STRINGS", "LIMIT_MM_PER_PROMPT", "MEDIA_IO_KWARGS",
            "MM_ENCODER_TP_MODE", "MM_PROCESSOR_CACHE_GB", "MM_PROCESSOR_CACHE_TYPE",
            "MM_PROCESSOR_KWARGS", "MM_SHM_CACHE_MAX_OBJECT_SIZE_MB", "SKIP_MM_PROFILING",
            "VIDEO_PRUNING_RATE", "MAMBA_CACHE_DTYPE", "MAMBA_SSM_CACHE_DTYPE",
            "DISABLE_MM_PREPROCESSOR_CACHE", "ENABLE_MULTIMODAL_ENCODER_DATA_PARALLEL",
            "OVERRIDE_POOLER_CONFIG", "POOLER_CONFIG", "IO_PROCESSOR_PLUGIN")),
        *(builtin(n, _LORA) for n in (
            "MAX_LORAS", "MAX_LORA_RANK", "LORA_DTYPE", "MAX_CPU_LORAS", "FULLY_SHARDED_LORAS",
            "DEFAULT_MM_LORAS")),
        *refused(),
        # --- engine arguments passed through ----------------------------------------------
        engine("BLOCK_SIZE", unset=_v("16")),
        engine("CPU_OFFLOAD_GB", unset=_v("0")),
        engine("PIPELINE_PARALLEL_SIZE", unset=_v("1")),
        engine("DECODE_CONTEXT_PARALLEL_SIZE", unset=_v("1")),
        engine("DISTRIBUTED_EXECUTOR_BACKEND", unset=_v("mp")),
        engine("STREAM_INTERVAL", unset=_v("1")),
        engine("LONG_PREFILL_TOKEN_THRESHOLD", unset=_v("0")),
        *(engine(n) for n in (
            "ADDITIONAL_CONFIG", "CODE_REVISION", "COLLECT_DETAILED_TRACES",
            "COMPILATION_CONFIG", "CONFIG_FORMAT", "DATA_PARALLEL_ADDRESS",
            "DATA_PARALLEL_BACKEND", "DATA_PARALLEL_RANK", "DATA_PARALLEL_RPC_PORT",
            "DATA_PARALLEL_SIZE_LOCAL", "DATA_PARALLEL_START_RANK",
            "DBO_DECODE_TOKEN_THRESHOLD", "DBO_PREFILL_TOKEN_THRESHOLD", "EPLB_CONFIG",
            "EXPERT_PLACEMENT_STRATEGY", "HF_CONFIG_PATH", "HF_OVERRIDES", "IGNORE_PATTERNS",
            "KV_EVENTS_CONFIG", "KV_OFFLOADING_BACKEND",
            "KV_OFFLOADING_SIZE", "KV_TRANSFER_CONFIG", "LOGITS_PROCESSORS", "LOGPROBS_MODE",
            "LOG_CONFIG_FILE", "MAX_PARALLEL_LOADING_WORKERS", "MODEL_IMPL",
            "MODEL_LOADER_EXTRA_CONFIG", "NUM_GPU_BLOCKS_OVERRIDE", "OTLP_TRACES_ENDPOINT",
            "OVERRIDE_GENERATION_CONFIG", "PREFIX_CACHING_HASH_ALGO", "PT_LOAD_MAP_LOCATION",
            "SAFETENSORS_LOAD_STRATEGY", "SCHEDULER_CLS", "SHOW_HIDDEN_METRICS_FOR_VERSION",
            "WORKER_CLS", "WORKER_EXTENSION_CLS", "USE_TQDM_ON_LOAD",
            "DISABLE_HYBRID_KV_CACHE_MANAGER")),
        *(engine(n, unset=OFF) for n in (
            "DATA_PARALLEL_HYBRID_LB", "DISABLE_CASCADE_ATTN", "DISABLE_CUSTOM_ALL_REDUCE",
            "DISABLE_SLIDING_WINDOW", "ENABLE_DBO", "ENABLE_EPLB", "ENABLE_LOG_REQUESTS",
            "KV_SHARING_FAST_PREFILL", "RAY_WORKERS_USE_NSIGHT", "TRUST_REMOTE_CODE")),
    ]


def _batch_rules(known: frozenset[str]) -> list[Rule]:
    out = []
    for name, (ours, default) in BATCH_KNOBS.items():
        if name in known:
            out.append(supported(name))
        elif ours in known:
            out.append(to(name, ours, f"worker-vllm's older name for {ours}"))
        else:
            out.append(reject(name, "the stream is grouped by time here (about 50 ms a "
                              "piece): unset it", unset=_v(default)))
    return out


@cache
def rules(known: frozenset[str]) -> dict[str, Rule]:
    """Every rule by worker-vllm's name; a name the settings model knows and no rule above
    covers is supported as it is."""
    from worker.setup.worker_vllm_names import ALL

    table = {r.name: r for r in [*_fixed(), *_batch_rules(known)]}
    for name in ALL:
        if name not in table and name in known:
            table[name] = supported(name)
    return table


def speculative_config(env: Mapping[str, str], out: Translation) -> None:
    """The previous generation's SPECULATIVE_* variables folded into SPECULATIVE_CONFIG."""
    config: dict[str, Any] = {}
    for name, (key, kind) in SPECULATIVE_FIELDS.items():
        raw = (env.get(name) or "").strip()
        if not raw or (kind is int and raw == "0"):
            continue
        try:
            value: Any = (raw.lower() in ON) if kind is bool else kind(raw)
        except ValueError:
            raise CompatError(f"{name}={raw!r} is not a whole number") from None
        config[key] = value
    if not config:
        return
    names = ", ".join(sorted(n for n in SPECULATIVE_FIELDS if (env.get(n) or "").strip()))
    if (env.get("SPECULATIVE_CONFIG") or "").strip():
        raise CompatError(f"{names} and SPECULATIVE_CONFIG are both set: set only "
                          "SPECULATIVE_CONFIG")
    if "method" not in config and "model" not in config:
        config["method"] = "ngram"
    out.env["SPECULATIVE_CONFIG"] = json.dumps(config)
    out.notes.append(f"{names}: SPECULATIVE_CONFIG={json.dumps(config)}")


