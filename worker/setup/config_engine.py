"""The engine's settings: the model and its memory and performance knobs.

`worker.setup.config.Settings` extends this class, so these fields come first in the
docs table and the Hub form; each names its variables (`env_field`) like every setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from worker.setup.config_env import env_field as _env


class EngineSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- model ---------------------------------------------------------------
    model: str | None = Field(None, json_schema_extra=_env(
        "MODEL", "MODEL_NAME", group="Model",
        doc="Model to serve: `openai/gpt-oss-120b`, `openai/gpt-oss-20b`, any gpt-oss "
        "checkpoint on the Hub (`ORG/NAME`: a fine-tune, a bf16 copy, a private repo) or a "
        "local path. Unset: `openai/gpt-oss-20b` on every GPU (without a GPU, a tiny random "
        "gpt-oss on the CPU engine, whose output is gibberish). `auto`: the largest gpt-oss "
        "that fits each worker's GPU (workers on different GPUs then serve different "
        "models)."))
    model_revision: str | None = Field(None, json_schema_extra=_env(
        "MODEL_REVISION", "REVISION", group="Model",
        doc="Hub revision (branch, tag or commit) to download."))
    served_model_name: str | None = Field(None, json_schema_extra=_env(
        "SERVED_MODEL_NAME", group="Model",
        doc="Name clients pass as `model` (default: the MODEL value). worker-vllm's "
        "`OPENAI_SERVED_MODEL_NAME_OVERRIDE` wins over it (docs/RUNPOD.md)."))
    max_model_len: int | None = Field(None, ge=256, le=1_048_576, json_schema_extra=_env(
        "MAX_MODEL_LEN", group="Model",
        doc="Context length in tokens. Unset: the largest that fits the GPU, up to the "
        "model's 131072 (4096 on the CPU engine)."))
    tensor_parallel_size: int | None = Field(None, ge=1, le=64, json_schema_extra=_env(
        "TENSOR_PARALLEL_SIZE", group="Model",
        doc="GPUs one engine splits the model over (a power of two dividing the KV heads). "
        "Unset: 1 when the model fits one GPU, else the fewest that hold it (docs/PLAN.md)."))
    data_parallel_size: int | None = Field(None, ge=1, le=64, json_schema_extra=_env(
        "DATA_PARALLEL_SIZE", group="Model",
        doc="Engines, each on TENSOR_PARALLEL_SIZE GPUs, sharing the requests (vLLM still "
        "splits gpt-oss's experts over all of them). Unset: as many as the visible GPUs "
        "make. TENSOR_PARALLEL_SIZE x DATA_PARALLEL_SIZE must not exceed the visible GPUs."))
    hf_token: SecretStr | None = Field(None, json_schema_extra=_env(
        "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", group="Model",
        doc="Hugging Face token, for gated or private repos. Never logged."))
    cache_dir: str | None = Field(None, json_schema_extra=_env(
        "MODEL_CACHE_DIR", group="Model",
        doc="Where weights are cached. Unset: `/runpod-volume/huggingface-cache` when a "
        "RunPod network volume is mounted, else the Hugging Face default."))
    load_format: str | None = Field(None, json_schema_extra=_env(
        "LOAD_FORMAT", group="Model",
        doc="How vLLM reads the weights. Unset: `fastsafetensors` on a GPU where it is "
        "installed (the images install it: 110 % of the disk's `dd` rate on an H200 vs 72-90 %"
        " for vLLM's default loader, docs/GPU.md), else `auto`. `auto`: vLLM's default "
        "safetensors loader; also `safetensors`, `fastsafetensors`, `runai_streamer` (needs "
        "runai-model-streamer), or `dummy`: random weights at the model's real shape, "
        "config only, for benchmarks (`python -m worker.tiny --kind shape-20b`); every "
        "answer is then noise."))
    quantization: Literal["auto", "mxfp4", "fp8", "awq", "gptq"] = Field(
        "auto", json_schema_extra=_env(
            "QUANTIZATION", group="Memory & performance",
            doc="`auto` uses the checkpoint's own (MXFP4 for gpt-oss)."))

    # --- memory & performance -----------------------------------------------
    gpu_memory_utilization: float = Field(0.95, gt=0.0, le=1.0, json_schema_extra=_env(
        "GPU_MEMORY_UTILIZATION", group="Memory & performance",
        doc="Fraction of GPU memory vLLM may use (0–1]."))
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16"] = Field(
        "auto", json_schema_extra=_env(
            "KV_CACHE_DTYPE", group="Memory & performance",
            doc="KV cache dtype. FP8 is refused where attention sinks don't support it "
            "(Ampere, Ada, Hopper) and allowed on Blackwell (FlashInfer)."))
    max_num_seqs: int = Field(64, ge=1, le=4096, json_schema_extra=_env(
        "MAX_NUM_SEQS", group="Memory & performance",
        doc="Most sequences the engine runs at once."))
    max_num_batched_tokens: int | None = Field(None, ge=256, json_schema_extra=_env(
        "MAX_NUM_BATCHED_TOKENS", group="Memory & performance",
        doc="Tokens per engine step. Unset: per GPU (8192 on Hopper, 4096 elsewhere, "
        "1024 for gpt-oss-120b on one 80 GB H100)."))
    async_scheduling: bool = Field(True, json_schema_extra=_env(
        "ASYNC_SCHEDULING", group="Memory & performance",
        doc="Overlap CPU scheduling with GPU work. On by default in current vLLM (the "
        "old gibberish bug of vLLM 0.11 is fixed)."))
    enable_prefix_caching: bool = Field(True, json_schema_extra=_env(
        "ENABLE_PREFIX_CACHING", group="Memory & performance",
        doc="Reuse the KV cache of shared prompt prefixes (system prompts, tools)."))
    enable_chunked_prefill: bool = Field(True, json_schema_extra=_env(
        "ENABLE_CHUNKED_PREFILL", group="Memory & performance",
        doc="Split long prefills into chunks."))
    max_cudagraph_capture_size: int | None = Field(None, ge=0, le=8192, json_schema_extra=_env(
        "MAX_CUDAGRAPH_CAPTURE_SIZE", group="Memory & performance",
        doc="Largest batch captured as a CUDA graph. Unset: 1024, over the plan's grid (every "
        "size to MAX_NUM_SEQS, then four per doubling: capture 5 s instead of 9-16 s per "
        "restart at the same throughput); 0: vLLM's own sizes. Setting MAX_NUM_SEQS here "
        "shortens a cold start further, but steps that mix decodes with a new prompt's "
        "prefill then run without a graph: 0.38x the throughput at 64 streams arriving one "
        "by one (docs/GPU.md)."))
    kv_cache_memory_bytes: str = Field("auto", json_schema_extra=_env(
        "KV_CACHE_MEMORY_BYTES", group="Memory & performance",
        doc="The KV cache per GPU. `auto`: the plan's budget (`python -m worker plan` shows "
        "it), so vLLM skips its memory profiling (3-4 s of each start), unless the GPU had "
        "less free memory at start than the plan counts on; `profile`: vLLM measures it "
        "within GPU_MEMORY_UTILIZATION; a number: that many bytes."))
    enforce_eager: bool = Field(False, json_schema_extra=_env(
        "ENFORCE_EAGER", group="Memory & performance",
        doc="Disable CUDA graphs and torch.compile (faster start, slower decode)."))
    enable_sleep_mode: bool = Field(False, json_schema_extra=_env(
        "ENABLE_SLEEP_MODE", group="Memory & performance",
        doc="vLLM sleep mode (GPU only), for Modal memory snapshots: the engine sleeps "
        "before the snapshot and wakes after restore."))
    attention_backend_override: str | None = Field(None, json_schema_extra=_env(
        "VLLM_ATTENTION_BACKEND_OVERRIDE", "VLLM_ATTENTION_BACKEND",
        group="Memory & performance",
        doc="Force an attention backend (FLASH_ATTN, TRITON_ATTN, FLASHINFER, ...). "
        "Honoured with a warning."))

    @field_validator("load_format")
    @classmethod
    def _load_format(cls, v: str | None) -> str | None:
        from worker.engine.vllm_engine import LOAD_FORMATS

        if v is None or not v.strip():
            return None
        key = v.strip().lower()
        if key not in LOAD_FORMATS:
            raise ValueError(f"must be one of {', '.join(LOAD_FORMATS)}")
        return key

    @field_validator("kv_cache_memory_bytes", mode="before")
    @classmethod
    def _kv_memory(cls, v: object) -> str:
        text = str(v).strip().lower().replace("_", "") if v is not None else "auto"
        if text in ("", "auto"):
            return "auto"
        if text == "profile" or (text.isdigit() and int(text) > 0):
            return text
        raise ValueError("must be auto, profile, or a number of bytes above 0")

    @field_validator("attention_backend_override")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return v.strip().upper() if v else v
