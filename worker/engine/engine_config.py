"""What the vLLM engine is built from, in vLLM's names (no vLLM import here).

`EngineConfig` is made by start-up from the settings and the plan; `vllm_args()` is the
`AsyncEngineArgs` keyword arguments, with the user's passed-through ones merged in
(`worker.engine.extra_args`). The drift test checks every name here against the pinned vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.engine.extra_args import merge

# Every AsyncEngineArgs field this module may set; the drift test checks that each
# still exists in the pinned vLLM releases.
ENGINE_ARG_NAMES = frozenset({
    "model", "tokenizer", "revision", "download_dir", "served_model_name", "dtype",
    "max_model_len", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization",
    "tensor_parallel_size", "data_parallel_size", "kv_cache_dtype", "attention_backend",
    "quantization", "enable_prefix_caching", "enable_chunked_prefill", "async_scheduling",
    "enforce_eager", "structured_outputs_config", "generation_config", "seed", "disable_log_stats",
    "enable_sleep_mode", "load_format", "compilation_config", "scheduling_policy",
    "kv_cache_memory_bytes",
    "speculative_config", "max_logprobs", "enable_expert_parallel",
})
# vLLM model loaders LOAD_FORMAT may name (registered in vLLM 0.26 and 0.32; checked by the
# drift test). `dummy` builds the model from its config with random weights.
LOAD_FORMATS = ("auto", "safetensors", "fastsafetensors", "runai_streamer", "dummy")
# CompilationConfig key bounding the CUDA-graph batch sizes (both releases).
CUDAGRAPH_SIZES_KEY = "cudagraph_capture_sizes"


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to build the engine; made from Settings + plan by the caller."""

    model: str
    served_model_names: tuple[str, ...]
    device: str  # "cuda" | "cpu"
    engine_args: Mapping[str, Any]  # AsyncEngineArgs field -> value
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # set before import
    warmup: bool = True
    load_format: str = "auto"  # one of LOAD_FORMATS
    cudagraph_capture_sizes: tuple[int, ...] = ()  # batches captured as graphs; (): vLLM's
    # Passed through by the user (worker.engine.extra_args): the arguments, the variable
    # each came from, and the variable behind each argument the worker sets itself.
    extra_args: Mapping[str, Any] = field(default_factory=dict)
    extra_sources: Mapping[str, str] = field(default_factory=dict)
    arg_owners: Mapping[str, str] = field(default_factory=dict)

    def vllm_args(self) -> dict[str, Any]:
        """`engine_args` plus what the fields above mean in vLLM's names, plus the
        passed-through `extra_args` (a conflict with ours raises EngineArgsError)."""
        unknown = set(self.engine_args) - ENGINE_ARG_NAMES
        if unknown:
            raise ValueError(f"engine arguments not known to this worker: {sorted(unknown)}")
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load format {self.load_format!r} is not one of {LOAD_FORMATS}")
        args = dict(self.engine_args)
        if self.load_format != "auto":
            args["load_format"] = self.load_format
        if self.cudagraph_capture_sizes and not args.get("enforce_eager"):
            args["compilation_config"] = {CUDAGRAPH_SIZES_KEY: list(self.cudagraph_capture_sizes)}
        return merge(args, self.extra_args, sources=self.extra_sources, owners=self.arg_owners,
                     modelled=ENGINE_ARG_NAMES)
