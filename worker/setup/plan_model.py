"""The plan's vocabulary: what is asked (`PlanRequest`), what is decided (`EnginePlan`),
and the error that says it cannot run here (`PlanError`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.setup.fit import FitReport


class PlanError(ValueError):
    """This configuration cannot run here; `reason` says why, `suggestion` what would."""

    def __init__(self, reason: str, suggestion: str = "", fit: FitReport | None = None):
        super().__init__(f"{reason}. {suggestion}".strip() if suggestion else reason)
        self.reason = reason
        self.suggestion = suggestion
        self.fit = fit


@dataclass(frozen=True)
class PlanRequest:
    model: str
    max_model_len: int | None = None  # None: the largest that fits, up to the model's own
    tensor_parallel_size: int | None = None  # None: the smallest that fits (worker.setup.layout)
    data_parallel_size: int | None = None  # None: the visible GPUs left, in whole TP groups
    gpu_memory_utilization: float = 0.95
    kv_cache_dtype: str = "auto"
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    attention_backend_override: str | None = None
    quantization: str = "auto"
    cpu_kv_cache_gib: int | None = None  # None: sized for the context, 1-4 GiB
    max_cudagraph_capture_size: int | None = None  # None: the plan's grid; 0: vLLM's sizes
    kv_cache_memory: str = "auto"  # KV_CACHE_MEMORY_BYTES: auto | profile | bytes per GPU
    load_format: str | None = None  # LOAD_FORMAT; None: the plan's choice
    fastsafetensors: bool = False  # the fastsafetensors package is installed here


@dataclass(frozen=True)
class EnginePlan:
    device: str  # "cuda" | "cpu"
    architecture: str
    attention_backend: str
    kv_cache_dtype: str
    tensor_parallel_size: int
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    gpu_memory_utilization: float
    quantization: str
    moe_backend: str
    fit: FitReport
    env: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cudagraph_capture_sizes: tuple[int, ...] = ()  # batches captured as graphs; (): vLLM's
    kv_cache_memory_bytes: int | None = None  # per GPU; None: vLLM's profiling run sizes it
    load_format: str = "auto"  # how vLLM reads the weights (worker.engine LOAD_FORMATS)
    data_parallel_size: int = 1  # engines, each on tensor_parallel_size GPUs
    layout: str = ""  # how the GPUs are used, and why (worker.setup.layout.Layout.describe)
