"""The rule for each of worker-vllm's variables (see `worker.setup.compat`).

A note is both the docs table's text and, for a refused value, the start-up error after
`NAME='value': `, so it says why and what to use instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from worker.setup.compat_model import ENGINE_ARGS, CompatError, Rule, Translation

ANY = frozenset({"*"})
OFF = frozenset({"false", "0", "no", "off"})
ON = frozenset({"true", "1", "yes", "on"})
SAME = "same name, same meaning"
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
_SERVER = "an option of vLLM's HTTP server; the worker runs its own (none on RunPod)"
_TLS = (_SERVER + ", plain HTTP: put TLS, CORS or a path prefix in a proxy in front (RunPod "
        "and Modal terminate TLS themselves)")
_HARMONY = ("gpt-oss prompts are Harmony, rendered by the worker itself; a chat template "
            "would change the format the model was trained on: unset it")
_STRUCTURED = ("the worker configures structured outputs itself (xgrammar, compact JSON, "
               "from the first token, as its constrained Harmony phases need): unset it")
_NO_LONGER = "gone from the pinned vLLM"


def _v(*values: str) -> frozenset[str]:
    return frozenset(v.lower() for v in values)


def _shown(values: frozenset[str]) -> str:
    if values == OFF:
        return "`false`"
    return ", ".join(f"`{v}`" for v in sorted(values))


def supported(name: str, note: str = SAME, **kw: Any) -> Rule:
    return Rule(name, "supported", note, **kw)


def to(name: str, target: str, note: str, **kw: Any) -> Rule:
    return Rule(name, "mapped", note, target=target, **kw)


def engine(name: str, unset: frozenset[str] = frozenset(), note: str = "") -> Rule:
    key = name.lower()
    if not note:
        note = "passed to vLLM (checked against the pinned vLLM at start)"
        if unset:
            note += f"; {_shown(unset)}: left to vLLM"
    return Rule(name, "mapped", note, target=f"{ENGINE_ARGS}.{key}", unset=unset)


def builtin(name: str, note: str, unset: frozenset[str] = ANY, **kw: Any) -> Rule:
    return Rule(name, "mapped", note, unset=unset, **kw)


def reject(name: str, note: str, unset: frozenset[str] = frozenset()) -> Rule:
    if unset and "*" not in unset:
        note = f"{_shown(unset)} passes (asks nothing); else {note}"
    return Rule(name, "rejected", note, unset=unset)


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
        builtin("DISABLE_FASTAPI_DOCS", _SERVER + " (accepted; its /docs are off)"),
        builtin("DISABLE_UVICORN_ACCESS_LOG", _SERVER + " (accepted)"),
        builtin("UVICORN_LOG_LEVEL", _SERVER + " (accepted; LOG_LEVEL sets the worker's)"),
        builtin("H11_MAX_HEADER_COUNT", _SERVER + " (accepted)"),
        builtin("H11_MAX_INCOMPLETE_EVENT_SIZE", _SERVER + " (accepted)"),
        builtin("ENABLE_SERVER_LOAD_TRACKING", _SERVER + " (accepted)"),
        builtin("ENABLE_REQUEST_ID_HEADERS", _SERVER + " (accepted)"),
        builtin("LOG_ERROR_STACK", _SERVER + " (accepted)"),
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
        # --- rejected -------------------------------------------------------------------
        reject("ENABLE_LORA", "the worker serves no LoRA adapters", unset=OFF),
        reject("LORA_MODULES", "the worker serves no LoRA adapters: unset it"),
        reject("ENABLE_LORA_BIAS", "the worker serves no LoRA adapters", unset=OFF),
        reject("LORA_EXTRA_VOCAB_SIZE", f"{_NO_LONGER}; no LoRA here", unset=_v("256")),
        reject("ENABLE_PROMPT_EMBEDS", "requests carry messages or text, not embeddings",
               unset=OFF),
        reject("DTYPE", "gpt-oss runs in bfloat16 (its MXFP4 experts need it): unset DTYPE",
               unset=_v("auto", "bfloat16")),
        reject("GENERATION_CONFIG", "the worker reads the model's generation_config.json "
               "(`auto`): unset it", unset=_v("auto")),
        reject("SCHEDULING_POLICY", "the worker schedules by priority (live requests before "
               "stored batches' lines, first come first served within one)",
               unset=_v("fcfs", "priority")),
        reject("STRUCTURED_OUTPUTS_CONFIG", _STRUCTURED),
        *(reject(n, _STRUCTURED) for n in (
            "GUIDED_DECODING_BACKEND", "GUIDED_DECODING_DISABLE_ADDITIONAL_PROPERTIES",
            "GUIDED_DECODING_DISABLE_ANY_WHITESPACE", "GUIDED_DECODING_DISABLE_FALLBACK")),
        reject("RUNNER", "the worker serves text generation only", unset=_v("auto", "generate")),
        reject("CONVERT", "the worker serves text generation only", unset=_v("auto", "none")),
        reject("TASK", f"{_NO_LONGER}; the worker serves text generation only",
               unset=_v("auto", "generate")),
        reject("SKIP_TOKENIZER_INIT", "structured outputs need vLLM's tokenizer", unset=OFF),
        reject("TOKENIZER_MODE", "gpt-oss has one tokenizer (`auto`)", unset=_v("auto", "hf")),
        reject("CHAT_TEMPLATE", _HARMONY),
        reject("CUSTOM_CHAT_TEMPLATE", _HARMONY),
        reject("CHAT_TEMPLATE_CONTENT_FORMAT", _HARMONY, unset=_v("auto")),
        reject("TRUST_REQUEST_CHAT_TEMPLATE", "requests cannot bring a chat template either: "
               "prompts are Harmony", unset=OFF),
        reject("RESPONSE_ROLE", "answers come from the `assistant`", unset=_v("assistant")),
        reject("OPENAI_RESPONSE_ROLE", "answers come from the `assistant`",
               unset=_v("assistant")),
        reject("TOOL_PARSER_PLUGIN", "the worker parses Harmony tool calls itself: unset it"),
        reject("TOOL_SERVER", "the worker runs no built-in tools (browser, python): pass them "
               "as function tools and run them in the client"),
        reject("ENABLE_FORCE_INCLUDE_USAGE", "ask per request: "
               "`stream_options: {\"include_usage\": true}`", unset=OFF),
        reject("ENABLE_PROMPT_TOKENS_DETAILS", "usage carries no prompt-token details here",
               unset=OFF),
        reject("RETURN_TOKENS_AS_TOKEN_IDS", "logprobs carry token text", unset=OFF),
        reject("ENABLE_TOKENIZER_INFO_ENDPOINT", "there is no tokenizer endpoint", unset=OFF),
        reject("ENABLE_LOG_OUTPUTS", "the worker never logs outputs", unset=OFF),
        reject("CALCULATE_KV_SCALES", "an FP8 KV cache is KV_CACHE_DTYPE=fp8 (Blackwell)",
               unset=OFF),
        reject("OVERRIDE_ATTENTION_DTYPE", "not an engine argument of the pinned vLLM: unset it"),
        *(reject(n, _TLS) for n in ("ALLOWED_HEADERS", "ALLOWED_METHODS", "ALLOWED_ORIGINS",
                                     "ROOT_PATH", "SSL_CA_CERTS", "SSL_CERTFILE",
                                     "SSL_CERT_REQS", "SSL_KEYFILE", "UDS", "MIDDLEWARE")),
        reject("ALLOW_CREDENTIALS", _TLS, unset=OFF),
        reject("ENABLE_SSL_REFRESH", _TLS, unset=OFF),
        reject("API_SERVER_COUNT", "one server process per worker", unset=_v("1")),
        reject("VLLM_BASE_URL", "the engine runs in the worker's process; there is no vLLM "
               "server to point at: unset it"),
        reject("VLLM_CONFIG_FILE", f"set the engine arguments as {ENGINE_ARGS} (a JSON object)"),
        reject("REQUEST_TIMEOUT", "a job's time limit is the endpoint's execution timeout in "
               "RunPod; a request's length is max_tokens (MAX_COMPLETION_TOKENS_LIMIT caps it)",
               unset=_v("3600")),
        reject("DOWNLOAD_DIR", "set MODEL_CACHE_DIR (docs/WEIGHTS.md)"),
        reject("TRANSFORMERS_VERSION", "the image's transformers is the pinned vLLM's: build "
               "an image from another vLLM release instead"),
        reject("CUDA_GRAPH_SIZES", f"{_NO_LONGER}: set MAX_CUDAGRAPH_CAPTURE_SIZE"),
        reject("MAX_SEQ_LEN_TO_CAPTURE", f"{_NO_LONGER} (graphs are captured per batch "
               "size): set MAX_CUDAGRAPH_CAPTURE_SIZE", unset=_v("8192")),
        reject("MAX_CONTEXT_LEN_TO_CAPTURE", f"{_NO_LONGER} (graphs are captured per batch "
               "size): set MAX_CUDAGRAPH_CAPTURE_SIZE", unset=_v("8192")),
        *(reject(n, f"{_NO_LONGER}: it is a key of {ENGINE_ARGS}'s `eplb_config` now")
          for n in ("EPLB_LOG_BALANCEDNESS", "EPLB_STEP_INTERVAL", "EPLB_WINDOW_SIZE",
                    "NUM_REDUNDANT_EXPERTS")),
        reject("LOGITS_PROCESSOR_PATTERN", f"{_NO_LONGER}: {ENGINE_ARGS} `logits_processors`"),
        reject("MAX_LONG_PARTIAL_PREFILLS", _NO_LONGER, unset=_v("1")),
        reject("MAX_NUM_PARTIAL_PREFILLS", _NO_LONGER, unset=_v("1")),
        reject("NUM_LOOKAHEAD_SLOTS", f"{_NO_LONGER}: speculative decoding is "
               "SPECULATIVE_CONFIG", unset=_v("0")),
        reject("ROPE_SCALING", f"{_NO_LONGER}: gpt-oss's YaRN scaling comes from its "
               f"config.json ({ENGINE_ARGS} `hf_overrides` changes it)"),
        reject("ROPE_THETA", f"{_NO_LONGER}: {ENGINE_ARGS} `hf_overrides`"),
        reject("SWAP_SPACE", f"{_NO_LONGER} (V1 has no swap space)", unset=_v("0", "4")),
        reject("WORKER_USE_RAY", f"{_NO_LONGER}: DISTRIBUTED_EXECUTOR_BACKEND", unset=OFF),
        reject("TOKENIZER_POOL_SIZE", _NO_LONGER, unset=_v("0")),
        reject("TOKENIZER_POOL_TYPE", _NO_LONGER, unset=_v("ray")),
        reject("ENABLE_PROMPT_ADAPTER", _NO_LONGER, unset=OFF),
        reject("MAX_PROMPT_ADAPTERS", _NO_LONGER, unset=_v("1")),
        reject("MAX_PROMPT_ADAPTER_TOKEN", _NO_LONGER, unset=_v("0")),
        reject("DEVICE", f"{_NO_LONGER}: the worker uses the GPU when there is one",
               unset=_v("auto", "cuda")),
        reject("SCHEDULER_DELAY_FACTOR", _NO_LONGER, unset=_v("0", "0.0")),
        reject("SPEC_DECODING_ACCEPTANCE_METHOD", f"{_NO_LONGER}: SPECULATIVE_CONFIG",
               unset=_v("rejection_sampler")),
        # --- engine arguments passed through ----------------------------------------------
        engine("BLOCK_SIZE", unset=_v("16")),
        engine("CPU_OFFLOAD_GB", unset=_v("0")),
        engine("PIPELINE_PARALLEL_SIZE", unset=_v("1")),
        engine("DATA_PARALLEL_SIZE", unset=_v("1")),
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
            "KV_CACHE_MEMORY_BYTES", "KV_EVENTS_CONFIG", "KV_OFFLOADING_BACKEND",
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


