"""The engine plan: which kernels, how much context, and whether the model fits at all.

Pure functions over `GpuInfo`, `ModelShape` and a `PlanRequest`; nothing here
touches a GPU or vLLM. An impossible combination raises `PlanError` (a reason
and a suggestion a person can act on) before anything is loaded. The memory
arithmetic lives in `worker.setup.fit`, the kernel choices in `worker.setup.kernels`,
the request and plan types in `worker.setup.plan_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from worker.setup.fit import (
    MIN_CONTEXT,
    FitReport,
    auto_max_model_len,
    cpu_fit,
    gpu_fit,
    kv_dtype_bytes,
)
from worker.setup.gpu import KNOWN_GPUS, GpuInfo, known_key
from worker.setup.kernels import (  # noqa: F401  (names of the plan, re-exported)
    ATTENTION_BACKENDS,
    FLASHINFER_MOE_ENV,
    KV_CACHE_DTYPES,
    LEGACY_BACKENDS,
    choose_backend,
    choose_batched,
    choose_kv_dtype,
    choose_load_format,
    cudagraph_sizes,
    default_backend,
    graph_size_step,
    moe_backend,
    normalise_backend,
)
from worker.setup.layout import choose_layout, tp_sizes
from worker.setup.models_catalog import GPT_OSS_20B, GPT_OSS_120B, ModelShape
from worker.setup.plan_model import EnginePlan, PlanError, PlanRequest

# vLLM 0.32 AsyncEngineArgs fields `engine_args` may emit (checked by the drift test).
ENGINE_ARG_NAMES = frozenset({
    "attention_backend", "kv_cache_dtype", "tensor_parallel_size", "data_parallel_size",
    "max_model_len", "max_num_batched_tokens", "gpu_memory_utilization", "max_num_seqs",
    "quantization", "scheduling_policy", "kv_cache_memory_bytes",
})
CPU_DEFAULT_MAX_MODEL_LEN = 4096


def plan_engine(gpu: GpuInfo | None, model: ModelShape, req: PlanRequest) -> EnginePlan:
    """Decide backend, KV dtype, TP and DP, batch and context for `model` on `gpu` (None: CPU)."""
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
    if req.kv_cache_memory not in ("auto", "profile"):
        raise PlanError("KV_CACHE_MEMORY_BYTES sizes a GPU's KV cache; this plan is for the CPU",
                        "Unset KV_CACHE_MEMORY_BYTES (the CPU engine's KV cache is sized for "
                        "MAX_MODEL_LEN)")
    if req.kv_cache_dtype.startswith("fp8"):
        raise PlanError("an FP8 KV cache is not supported by the CPU engine",
                        "Set KV_CACHE_DTYPE=auto")
    if (req.tensor_parallel_size or 1) > 1:
        raise PlanError("tensor parallelism needs GPUs; none was found",
                        "Unset TENSOR_PARALLEL_SIZE on the CPU")
    if (req.data_parallel_size or 1) > 1:
        raise PlanError("data parallelism needs GPUs; none was found",
                        "Unset DATA_PARALLEL_SIZE on the CPU")
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
        env={"VLLM_CPU_KVCACHE_SPACE": str(fit.kv_budget_bytes // 1024**3)}, warnings=warnings,
        load_format=choose_load_format("cpu", req.load_format, req.fastsafetensors))


def _plan_gpu(gpu: GpuInfo, model: ModelShape, req: PlanRequest) -> EnginePlan:
    arch = gpu.architecture
    warnings: list[str] = []
    notes: list[str] = []
    if arch == "older":
        cc = ".".join(map(str, gpu.compute_capability))
        raise PlanError(f"{gpu.name} (compute capability {cc}) is older than Ampere; gpt-oss "
                        "needs compute capability 8.0 or newer (bf16 and MXFP4 kernels)",
                        "Use an Ampere or newer card: A100, A10G, L4, L40S, RTX 4090, H100")
    backend = choose_backend(arch, req, warnings)
    kv_dtype = choose_kv_dtype(arch, backend, model, req, warnings, notes)
    wanted = req.max_model_len or model.max_position_embeddings
    layout = choose_layout(gpu, model, req, warnings=warnings, holds=lambda tp: _fit(
        gpu, model, req, kv_dtype, tp, 1, [])[1].max_context >= wanted)
    tp, dp = layout.tp, layout.dp
    batched, fit = _fit(gpu, model, req, kv_dtype, tp, dp, notes)
    if dp > 1:
        split = (f"; vLLM splits the experts over all {tp * dp} GPUs (the fit counts that)"
                 if model.expert_bytes else "")
        notes.append(f"each of the {dp} engines takes up to MAX_NUM_SEQS={req.max_num_seqs} "
                     f"sequences ({dp * req.max_num_seqs} at once in all){split}")
    at = f"TENSOR_PARALLEL_SIZE={tp}" + (f" x DATA_PARALLEL_SIZE={dp}" if dp > 1 else "")
    if fit.max_context < MIN_CONTEXT:
        need = req.max_model_len or MIN_CONTEXT
        raise PlanError(f"{model.name} does not fit {gpu.describe()} at {at}: {fit.summary()}",
                        _suggest_hardware(gpu, model, req, need), fit)
    if req.max_model_len is not None and req.max_model_len > fit.max_context:
        largest = auto_max_model_len(fit.max_context, model.max_position_embeddings)
        hw = _suggest_hardware(gpu, model, req, req.max_model_len, alt_model=False)
        raise PlanError(f"MAX_MODEL_LEN={req.max_model_len} does not fit: {fit.summary()}",
                        f"Set MAX_MODEL_LEN={largest} or less; or {hw}", fit)
    length = fit.max_model_len
    env = {FLASHINFER_MOE_ENV: "1"} if model.is_mxfp4 and gpu.compute_capability[0] == 10 else {}
    moe = moe_backend(arch, model)
    return EnginePlan(
        device="cuda", architecture=arch, attention_backend=backend, kv_cache_dtype=kv_dtype,
        tensor_parallel_size=tp, max_model_len=length, max_num_batched_tokens=batched,
        max_num_seqs=req.max_num_seqs, gpu_memory_utilization=req.gpu_memory_utilization,
        quantization=req.quantization, moe_backend=moe, fit=fit, env=env, warnings=warnings,
        notes=notes, cudagraph_capture_sizes=cudagraph_sizes(req, batched),
        kv_cache_memory_bytes=_kv_memory(gpu, fit, req, notes),
        load_format=choose_load_format("cuda", req.load_format, req.fastsafetensors),
        data_parallel_size=dp, layout=layout.describe())


def _kv_memory(gpu: GpuInfo, fit: FitReport, req: PlanRequest, notes: list[str]) -> int | None:
    """The KV cache per GPU handed to vLLM (None: its profiling run measures it).

    `auto`: the plan's own budget, so vLLM skips its CUDA-graph memory profiling (3-4 s of a
    restart at 20b on an H200; the budget, 117.5 GiB there, is on the safe side of the 118.8
    GiB vLLM measured: docs/GPU.md, section 7), but only on a card nothing else is using:
    when the probe saw less free memory than the plan counts on, vLLM measures."""
    if req.kv_cache_memory == "profile":
        return None
    if req.kv_cache_memory != "auto":
        return int(req.kv_cache_memory)
    if gpu.free_bytes is not None and gpu.free_bytes < fit.usable_bytes:
        notes.append(f"only {gpu.free_bytes / 1024**3:.1f} GiB of the GPU's memory is free, "
                     f"under the {fit.usable_bytes / 1024**3:.1f} GiB planned: vLLM measures the"
                     " KV cache itself")
        return None
    return fit.kv_budget_bytes if fit.kv_budget_bytes > 0 else None


def _fit(gpu: GpuInfo, model: ModelShape, req: PlanRequest, kv_dtype: str, tp: int, dp: int,
         notes: list[str]) -> tuple[int, FitReport]:
    """Tokens per step and the memory picture per GPU at this layout."""
    batched = choose_batched(gpu, model, req, tp, dp, notes)
    fit = gpu_fit(gpu, model, tp=tp, dp=dp, util=req.gpu_memory_utilization,
                  dtype_bytes=kv_dtype_bytes(kv_dtype), batched=batched,
                  max_num_seqs=req.max_num_seqs, max_model_len=req.max_model_len)
    return batched, fit


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
            gpu, tp_sizes(gpu.count, small.num_kv_heads)[-1], small, req, need):
        options.append(f"MODEL={small.name} (fits here)")
    return ("Use " + ", or ".join(options)) if options else "Use a card with more memory"


def _holds(card: GpuInfo, n: int, model: ModelShape, req: PlanRequest, need: int) -> bool:
    sub = replace(req, tensor_parallel_size=n, data_parallel_size=1, max_model_len=None,
                  kv_cache_dtype="auto", attention_backend_override=None)
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
        "data_parallel_size": plan.data_parallel_size,
        "max_model_len": plan.max_model_len,
        "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.max_num_seqs,
        # Waiting requests by priority, then arrival: live requests (0) before stored
        # batches' lines (1); with equal priorities it is first come, first served.
        "scheduling_policy": "priority",
    }
    if plan.device == "cuda":
        args["gpu_memory_utilization"] = plan.gpu_memory_utilization
    if plan.kv_cache_memory_bytes is not None:
        args["kv_cache_memory_bytes"] = plan.kv_cache_memory_bytes
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
