"""worker-vllm's variables the worker refuses (see `worker.setup.compat`): each note says
why and what to use instead; the values listed as passing ask for nothing."""

from __future__ import annotations

from worker.setup.compat_model import ENGINE_ARGS, OFF, Rule, reject
from worker.setup.compat_model import lowered as _v

SERVER = "an option of vLLM's HTTP server; the worker runs its own (none on RunPod)"
_TLS = (SERVER + ", plain HTTP: put TLS, CORS or a path prefix in a proxy in front (RunPod "
        "and Modal terminate TLS themselves)")
_HARMONY = ("gpt-oss prompts are Harmony, rendered by the worker itself; a chat template "
            "would change the format the model was trained on: unset it")
_STRUCTURED = ("the worker configures structured outputs itself (xgrammar, compact JSON, "
               "from the first token, as its constrained Harmony phases need): unset it")
_NO_LONGER = "gone from the pinned vLLM"


def refused() -> list[Rule]:
    return [
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
    ]
