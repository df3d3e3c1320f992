"""The engine plan: which kernels, how much context, and whether the model fits at all.

Pure functions over `GpuInfo`, `ModelShape` and a `PlanRequest`; nothing here
touches a GPU or vLLM. An impossible combination raises `PlanError` (a reason
and a suggestion a person can act on) before anything is loaded. The memory
arithmetic lives in `worker.setup.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from worker.setup.fit import (
    MIN_CONTEXT,
    FitReport,
    auto_max_model_len,
    cpu_fit,
    gpu_fit,
    kv_dtype_bytes,
)
from worker.setup.gpu import KNOWN_GPUS, Architecture, GpuInfo, known_key
from worker.setup.models_catalog import GPT_OSS_20B, GPT_OSS_120B, ModelShape

# vLLM 0.32 AsyncEngineArgs fields `engine_args` may emit (checked by the drift test).
ENGINE_ARG_NAMES = frozenset({
    "attention_backend", "kv_cache_dtype", "tensor_parallel_size", "max_model_len",
    "max_num_batched_tokens", "gpu_memory_utilization", "max_num_seqs", "quantization",
    "scheduling_policy",
})
# vLLM 0.32 AttentionBackendEnum members a user may force.
ATTENTION_BACKENDS = ("FLASH_ATTN", "TRITON_ATTN", "FLASHINFER", "CPU_ATTN", "FLEX_ATTENTION")
LEGACY_BACKENDS = {"TRITON_ATTN_VLLM_V1": "TRITON_ATTN", "FLASH_ATTN_VLLM_V1": "FLASH_ATTN",
                   "FLASHINFER_VLLM_V1": "FLASHINFER", "TORCH_SDPA": "CPU_ATTN"}
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")
FLASHINFER_MOE_ENV = "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8"
CPU_DEFAULT_MAX_MODEL_LEN = 4096
TIGHT_BATCHED_TOKENS = 1024  # public recipe for gpt-oss-120b on one 80 GB H100
TIGHT_WEIGHT_SHARE = 0.75  # weights above this share of a card count as "tight"

_BACKEND: dict[Architecture, str] = {
    "ampere": "TRITON_ATTN", "ada": "TRITON_ATTN", "hopper": "FLASH_ATTN",
    "blackwell": "FLASHINFER",
}
_MOE: dict[Architecture, str] = {
    "ampere": "Marlin MXFP4 (weight-only FP4)", "ada": "Marlin MXFP4 (weight-only FP4)",
    "hopper": "Triton MXFP4 (triton_kernels)", "blackwell": "FlashInfer MXFP4/MXFP8",
}


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
    tensor_parallel_size: int | None = None  # None: all visible GPUs (largest valid)
    gpu_memory_utilization: float = 0.95
    kv_cache_dtype: str = "auto"
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    attention_backend_override: str | None = None
    quantization: str = "auto"
    cpu_kv_cache_gib: int | None = None  # None: sized for the context, 1-4 GiB
    max_cudagraph_capture_size: int | None = None  # None or 0: vLLM's default


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
    cudagraph_capture_max: int | None = None  # largest CUDA-graph batch; None: vLLM's default


def default_backend(arch: Architecture | str) -> str:
    """The attention backend vLLM 0.32 runs gpt-oss with (sinks + sliding window) per family."""
    return "CPU_ATTN" if arch == "cpu" else _BACKEND.get(arch, "TRITON_ATTN")  # type: ignore[call-overload]


def normalise_backend(name: str, warnings: list[str]) -> str:
    key = name.strip().upper()
    if key in LEGACY_BACKENDS:
        warnings.append(f"attention backend {key} is an old name; using {LEGACY_BACKENDS[key]}")
        key = LEGACY_BACKENDS[key]
    if key not in ATTENTION_BACKENDS:
        raise PlanError(f"unknown attention backend {name!r}",
                        f"Use one of {', '.join(ATTENTION_BACKENDS)}, or unset "
                        "VLLM_ATTENTION_BACKEND_OVERRIDE to let the worker choose")
    return key


def plan_engine(gpu: GpuInfo | None, model: ModelShape, req: PlanRequest) -> EnginePlan:
    """Decide backend, KV dtype, TP, batch and context for `model` on `gpu` (None: CPU)."""
    if not 0.0 < req.gpu_memory_utilization <= 1.0:
        raise PlanError(f"GPU_MEMORY_UTILIZATION={req.gpu_memory_utilization} is outside (0, 1]",
                        "Use a fraction such as 0.9 or 0.95")
    if req.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise PlanError(f"KV_CACHE_DTYPE={req.kv_cache_dtype!r} is not supported",
                        f"Use one of {', '.join(KV_CACHE_DTYPES)}")
    if model.is_mxfp4 and req.quantization not in ("auto", "mxfp4"):
        raise PlanError(f"{model.name} is an MXFP4 checkpoint; QUANTIZATION={req.quantization} "
                        "cannot load it", "Unset QUANTIZATION (or set it to mxfp4)")
    if not model.is_mxfp4 and req.quantization == "mxfp4":
        raise PlanError(f"{model.name} is not an MXFP4 checkpoint", "Unset QUANTIZATION")
    native = model.max_position_embeddings
    if req.max_model_len is not None and req.max_model_len > native:
        raise PlanError(f"MAX_MODEL_LEN={req.max_model_len} is above {model.name}'s maximum "
                        f"of {native} tokens", f"Set MAX_MODEL_LEN={native} or less")
    return _plan_cpu(model, req) if gpu is None else _plan_gpu(gpu, model, req)


def _plan_cpu(model: ModelShape, req: PlanRequest) -> EnginePlan:
    warnings: list[str] = []
    backend = "CPU_ATTN"
    if req.attention_backend_override:
        forced = normalise_backend(req.attention_backend_override, warnings)
        if forced != "CPU_ATTN":
            raise PlanError(f"attention backend {forced} needs a GPU; this plan is for the CPU",
                            "Unset VLLM_ATTENTION_BACKEND_OVERRIDE (the CPU engine uses CPU_ATTN)")
    if req.kv_cache_dtype.startswith("fp8"):
        raise PlanError("an FP8 KV cache is not supported by the CPU engine",
                        "Set KV_CACHE_DTYPE=auto")
    if (req.tensor_parallel_size or 1) > 1:
        raise PlanError("tensor parallelism needs GPUs; none was found",
                        "Unset TENSOR_PARALLEL_SIZE on the CPU")
    length = min(req.max_model_len or CPU_DEFAULT_MAX_MODEL_LEN, model.max_position_embeddings)
    batched = req.max_num_batched_tokens or max(CPU_DEFAULT_MAX_MODEL_LEN, req.max_num_seqs)
    fit = cpu_fit(model, length, batched, req.cpu_kv_cache_gib)
    if model.is_mxfp4:
        warnings.append("MXFP4 experts on the CPU need AMX (vLLM's CPU MXFP4 MoE); without it "
                        "loading fails: use a bf16 checkpoint on the CPU")
    moe = "CPU MXFP4 (needs AMX)" if model.is_mxfp4 else "CPU unquantised experts"
    return EnginePlan(
        device="cpu", architecture="cpu", attention_backend=backend, kv_cache_dtype="auto",
        tensor_parallel_size=1, max_model_len=length, max_num_batched_tokens=batched,
        max_num_seqs=req.max_num_seqs, gpu_memory_utilization=req.gpu_memory_utilization,
        quantization=req.quantization, moe_backend=moe, fit=fit,
        env={"VLLM_CPU_KVCACHE_SPACE": str(fit.kv_budget_bytes // 1024**3)}, warnings=warnings)


def _plan_gpu(gpu: GpuInfo, model: ModelShape, req: PlanRequest) -> EnginePlan:
    arch = gpu.architecture
    warnings: list[str] = []
    notes: list[str] = []
    if arch == "older":
        cc = ".".join(map(str, gpu.compute_capability))
        raise PlanError(f"{gpu.name} (compute capability {cc}) is older than Ampere; gpt-oss "
                        "needs compute capability 8.0 or newer (bf16 and MXFP4 kernels)",
                        "Use an Ampere or newer card: A100, A10G, L4, L40S, RTX 4090, H100")
    backend = _choose_backend(arch, req, warnings)
    kv_dtype = _choose_kv_dtype(arch, backend, model, req, warnings, notes)
    tp = _choose_tp(gpu, model, req, warnings)
    batched = _choose_batched(gpu, model, req, tp, notes)
    fit = gpu_fit(gpu, model, tp=tp, util=req.gpu_memory_utilization,
                  dtype_bytes=kv_dtype_bytes(kv_dtype), batched=batched,
                  max_num_seqs=req.max_num_seqs, max_model_len=req.max_model_len)
    if fit.max_context < MIN_CONTEXT:
        need = req.max_model_len or MIN_CONTEXT
        raise PlanError(f"{model.name} does not fit {gpu.describe()} at TENSOR_PARALLEL_SIZE={tp}:"
                        f" {fit.summary()}", _suggest_hardware(gpu, model, req, need), fit)
    if req.max_model_len is not None and req.max_model_len > fit.max_context:
        largest = auto_max_model_len(fit.max_context, model.max_position_embeddings)
        hw = _suggest_hardware(gpu, model, req, req.max_model_len, alt_model=False)
        raise PlanError(f"MAX_MODEL_LEN={req.max_model_len} does not fit: {fit.summary()}",
                        f"Set MAX_MODEL_LEN={largest} or less; or {hw}", fit)
    length = fit.max_model_len
    env = {FLASHINFER_MOE_ENV: "1"} if model.is_mxfp4 and gpu.compute_capability[0] == 10 else {}
    moe = _MOE.get(arch, "Marlin MXFP4") if model.is_mxfp4 else "unquantised (bf16) experts"
    return EnginePlan(
        device="cuda", architecture=arch, attention_backend=backend, kv_cache_dtype=kv_dtype,
        tensor_parallel_size=tp, max_model_len=length, max_num_batched_tokens=batched,
        max_num_seqs=req.max_num_seqs, gpu_memory_utilization=req.gpu_memory_utilization,
        quantization=req.quantization, moe_backend=moe, fit=fit, env=env, warnings=warnings,
        notes=notes, cudagraph_capture_max=cudagraph_bound(req, batched))


def graph_size_step(n: int) -> int:
    """The smallest CUDA-graph batch size of vLLM's grid (1, 2, 4, multiples of 8 to 256,
    then of 16) that holds `n`."""
    if n <= 4:
        return 1 if n <= 1 else (2 if n == 2 else 4)
    step = 8 if n <= 256 else 16
    return -(-n // step) * step


def cudagraph_bound(req: PlanRequest, batched: int) -> int | None:
    """The largest batch captured as a CUDA graph: vLLM's own default (None) unless set.

    A bound at MAX_NUM_SEQS covers every pure decode step and halves a cold start's capture
    (13 vs 53 s at 20b on an H200), but a step that mixes decodes with a new prompt's prefill
    is larger than MAX_NUM_SEQS tokens and then runs without a graph: at 64 streams with
    requests arriving one by one, 20b gave 3,877 tok/s bounded and 10,116 with vLLM's default
    (docs/GPU.md, section 6). So the bound is only taken when asked for."""
    if not req.max_cudagraph_capture_size:
        return None
    return max(1, min(req.max_cudagraph_capture_size, batched))


def _choose_backend(arch: Architecture, req: PlanRequest, warnings: list[str]) -> str:
    chosen = default_backend(arch)
    if not req.attention_backend_override:
        return chosen
    forced = normalise_backend(req.attention_backend_override, warnings)
    if forced == "CPU_ATTN":
        raise PlanError("attention backend CPU_ATTN is for the CPU engine, not a GPU",
                        f"Unset VLLM_ATTENTION_BACKEND_OVERRIDE ({chosen} is used on {arch})")
    if forced != chosen:
        warnings.append(f"attention backend override {forced} honoured instead of {chosen} "
                        f"(chosen for {arch}); it may fail to start")
        if forced == "FLASH_ATTN" and arch != "hopper":
            warnings.append("FLASH_ATTN has attention sinks only in FlashAttention 3 (Hopper): "
                            "expect 'Sinks only supported in FlashAttention 3' (vLLM #22290)")
    return forced


def _choose_kv_dtype(arch: Architecture, backend: str, model: ModelShape, req: PlanRequest,
                     warnings: list[str], notes: list[str]) -> str:
    wanted = req.kv_cache_dtype
    fp8_ok = arch == "blackwell" and backend == "FLASHINFER"
    if wanted.startswith("fp8") and model.has_attention_sinks and not fp8_ok:
        raise PlanError(f"an FP8 KV cache does not work with gpt-oss attention sinks on {arch} "
                        f"({backend}); see vLLM issue #23832",
                        "Set KV_CACHE_DTYPE=auto (FP8 KV is supported on Blackwell with "
                        "FlashInfer, vLLM PR #25674)")
    if wanted == "bfloat16":
        warnings.append("KV_CACHE_DTYPE=bfloat16 is the model's own dtype: passing 'auto' to vLLM")
        return "auto"
    if fp8_ok and wanted == "auto":
        notes.append("FP8 KV cache is supported and recommended here (same accuracy, about "
                     "+7% throughput, vLLM PR #25674): KV_CACHE_DTYPE=fp8")
    return wanted


def _choose_tp(gpu: GpuInfo, model: ModelShape, req: PlanRequest, warnings: list[str]) -> int:
    heads = model.num_kv_heads
    if req.tensor_parallel_size is None:
        tp = 1
        while tp * 2 <= gpu.count and heads % (tp * 2) == 0:
            tp *= 2
        if tp != gpu.count:
            warnings.append(f"{gpu.count} GPUs visible; using TENSOR_PARALLEL_SIZE={tp} (a power "
                            f"of two dividing the {heads} KV heads)")
        return tp
    tp = req.tensor_parallel_size
    if tp > gpu.count:
        raise PlanError(f"TENSOR_PARALLEL_SIZE={tp} but only {gpu.count} GPU(s) are visible",
                        f"Set TENSOR_PARALLEL_SIZE={_largest_valid_tp(gpu.count, heads)} or "
                        "make more GPUs visible (CUDA_VISIBLE_DEVICES)")
    if tp < 1 or tp & (tp - 1) or heads % tp:
        raise PlanError(f"TENSOR_PARALLEL_SIZE={tp} must be a power of two dividing "
                        f"{model.name}'s {heads} KV heads",
                        f"Set TENSOR_PARALLEL_SIZE={_largest_valid_tp(min(tp, gpu.count), heads)}")
    return tp


def _largest_valid_tp(limit: int, heads: int) -> int:
    tp = 1
    while tp * 2 <= limit and heads % (tp * 2) == 0:
        tp *= 2
    return tp


def _choose_batched(gpu: GpuInfo, model: ModelShape, req: PlanRequest, tp: int,
                    notes: list[str]) -> int:
    if req.max_num_batched_tokens is not None:
        if req.max_num_batched_tokens < req.max_num_seqs:
            raise PlanError(f"MAX_NUM_BATCHED_TOKENS={req.max_num_batched_tokens} is below "
                            f"MAX_NUM_SEQS={req.max_num_seqs}",
                            f"Raise MAX_NUM_BATCHED_TOKENS to at least {req.max_num_seqs}")
        return req.max_num_batched_tokens
    batched = 8192 if gpu.architecture in ("hopper", "blackwell") else 4096
    if model.weight_bytes / tp > TIGHT_WEIGHT_SHARE * gpu.memory_bytes:
        batched = TIGHT_BATCHED_TOKENS
        notes.append(f"weights fill most of each card: MAX_NUM_BATCHED_TOKENS={batched}, as the "
                     "public recipe for gpt-oss-120b on one 80 GB H100 does")
        if req.gpu_memory_utilization < 0.95:
            notes.append("that recipe also uses GPU_MEMORY_UTILIZATION=0.95")
    return max(batched, req.max_num_seqs)


def _suggest_hardware(gpu: GpuInfo, model: ModelShape, req: PlanRequest, need: int,
                      alt_model: bool = True) -> str:
    """Cards (and counts) on which `model` holds `need` tokens: a bigger single card, more of
    this card, or (for gpt-oss-120b) the 20b model here."""
    options: list[str] = []
    for key, card in sorted(KNOWN_GPUS.items(), key=lambda kv: kv[1].memory_bytes):
        if card.memory_bytes > gpu.memory_bytes and _holds(card, 1, model, req, need):
            options.append(f"{key} ×1")
            break
    label = known_key(gpu.name) or gpu.name
    for n in (2, 4, 8):
        if n > gpu.count and model.num_kv_heads % n == 0 and _holds(gpu, n, model, req, need):
            options.append(f"{n}× {label} with TENSOR_PARALLEL_SIZE={n}")
            break
    small = GPT_OSS_20B
    if alt_model and model.name != small.name and model.has_attention_sinks and _holds(
            gpu, _largest_valid_tp(gpu.count, small.num_kv_heads), small, req, need):
        options.append(f"MODEL={small.name} (fits here)")
    return ("Use " + ", or ".join(options)) if options else "Use a card with more memory"


def _holds(card: GpuInfo, n: int, model: ModelShape, req: PlanRequest, need: int) -> bool:
    sub = replace(req, tensor_parallel_size=n, max_model_len=None, kv_cache_dtype="auto",
                  attention_backend_override=None)
    try:
        plan = _plan_gpu(replace(card, count=max(n, card.count)), model, sub)
    except PlanError:
        return False
    return plan.fit.max_context >= need


def engine_args(plan: EnginePlan) -> dict[str, object]:
    """AsyncEngineArgs keyword arguments (names in ENGINE_ARG_NAMES) the plan implies."""
    args: dict[str, object] = {
        "attention_backend": plan.attention_backend,
        "kv_cache_dtype": plan.kv_cache_dtype,
        "tensor_parallel_size": plan.tensor_parallel_size,
        "max_model_len": plan.max_model_len,
        "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.max_num_seqs,
        # Waiting requests by priority, then arrival: live requests (0) before stored
        # batches' lines (1); with equal priorities it is first come, first served.
        "scheduling_policy": "priority",
    }
    if plan.device == "cuda":
        args["gpu_memory_utilization"] = plan.gpu_memory_utilization
    if plan.quantization != "auto":
        args["quantization"] = plan.quantization
    return args


@dataclass(frozen=True)
class ModelChoice:
    model: str
    reason: str


def choose_default_model(gpu: GpuInfo, req: PlanRequest, min_context: int = 16384) -> ModelChoice:
    """gpt-oss-120b when it fits `gpu` with at least `min_context` tokens, else gpt-oss-20b."""
    big = GPT_OSS_120B
    try:
        plan = plan_engine(gpu, big, replace(req, model=big.name))
        if plan.fit.max_context >= min_context:
            return ModelChoice(big.name, f"{big.name} fits {gpu.describe()} with up to "
                               f"{plan.max_model_len} tokens of context")
        why = f"{big.name} leaves room for only {plan.fit.max_context} tokens of context"
    except PlanError as exc:
        why = exc.reason
    return ModelChoice(GPT_OSS_20B.name, f"{why}; using {GPT_OSS_20B.name}")
