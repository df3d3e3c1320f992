"""Which kernels and step sizes a GPU gets: attention backend, KV cache dtype, MoE kernels,
tokens per step and the CUDA-graph bound. Pure; a choice that cannot work raises
`PlanError` naming the variable."""

from __future__ import annotations

from worker.setup.fit import replica_bytes
from worker.setup.gpu import Architecture, GpuInfo
from worker.setup.models_catalog import ModelShape
from worker.setup.plan_model import PlanError, PlanRequest

# vLLM 0.32 AttentionBackendEnum members a user may force.
ATTENTION_BACKENDS = ("FLASH_ATTN", "TRITON_ATTN", "FLASHINFER", "CPU_ATTN", "FLEX_ATTENTION")
LEGACY_BACKENDS = {"TRITON_ATTN_VLLM_V1": "TRITON_ATTN", "FLASH_ATTN_VLLM_V1": "FLASH_ATTN",
                   "FLASHINFER_VLLM_V1": "FLASHINFER", "TORCH_SDPA": "CPU_ATTN"}
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")
FLASHINFER_MOE_ENV = "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8"
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


def default_backend(arch: Architecture | str) -> str:
    """The attention backend vLLM 0.32 runs gpt-oss with (sinks + sliding window) per family."""
    return "CPU_ATTN" if arch == "cpu" else _BACKEND.get(arch, "TRITON_ATTN")  # type: ignore[call-overload]


def moe_backend(arch: Architecture, model: ModelShape) -> str:
    """The MoE kernels vLLM picks for `model`'s experts on this family."""
    return _MOE.get(arch, "Marlin MXFP4") if model.is_mxfp4 else "unquantised (bf16) experts"


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


def choose_backend(arch: Architecture, req: PlanRequest, warnings: list[str]) -> str:
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


def choose_kv_dtype(arch: Architecture, backend: str, model: ModelShape, req: PlanRequest,
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


def choose_batched(gpu: GpuInfo, model: ModelShape, req: PlanRequest, tp: int, dp: int,
                   notes: list[str]) -> int:
    if req.max_num_batched_tokens is not None:
        if req.max_num_batched_tokens < req.max_num_seqs:
            raise PlanError(f"MAX_NUM_BATCHED_TOKENS={req.max_num_batched_tokens} is below "
                            f"MAX_NUM_SEQS={req.max_num_seqs}",
                            f"Raise MAX_NUM_BATCHED_TOKENS to at least {req.max_num_seqs}")
        return req.max_num_batched_tokens
    batched = 8192 if gpu.architecture in ("hopper", "blackwell") else 4096
    if replica_bytes(model, dp) / tp > TIGHT_WEIGHT_SHARE * gpu.memory_bytes:
        batched = TIGHT_BATCHED_TOKENS
        notes.append(f"weights fill most of each card: MAX_NUM_BATCHED_TOKENS={batched}, as the "
                     "public recipe for gpt-oss-120b on one 80 GB H100 does")
        if req.gpu_memory_utilization < 0.95:
            notes.append("that recipe also uses GPU_MEMORY_UTILIZATION=0.95")
    return max(batched, req.max_num_seqs)


def graph_size_step(n: int) -> int:
    """The smallest CUDA-graph batch size of vLLM's grid (1, 2, 4, multiples of 8 to 256,
    then of 16) that holds `n`."""
    if n <= 4:
        return 1 if n <= 1 else (2 if n == 2 else 4)
    step = 8 if n <= 256 else 16
    return -(-n // step) * step


LARGEST_GRAPH = 1024  # the largest batch vLLM captures for gpt-oss by default


def cudagraph_sizes(req: PlanRequest, batched: int) -> tuple[int, ...]:
    """The batch sizes captured as CUDA graphs; () leaves them to vLLM.

    Every size vLLM would use up to MAX_NUM_SEQS (1, 2, 4, then multiples of 8: each pure
    decode step runs unpadded), then four per doubling up to 1,024 (80, 96, 112, 128, 160 ...),
    so a step that mixes decodes with a new prompt's prefill pads by at most a quarter and
    still runs as a graph. vLLM's own list has 83 sizes to 1,024; on an H200 at 20b this one
    captured in 5 s instead of 9-16 s per restart at the same throughput (11,099 vs 10,648
    tok/s at 64 streams, 11,778 vs 11,649 at 256: docs/GPU.md, section 7). Bounding the sizes
    at MAX_NUM_SEQS instead left mixed steps without graphs: 0.38x the throughput (section 6).
    MAX_CUDAGRAPH_CAPTURE_SIZE=N ends the list at N; 0 gives vLLM's own sizes."""
    if req.max_cudagraph_capture_size == 0:
        return ()
    largest = max(1, min(req.max_cudagraph_capture_size or LARGEST_GRAPH, batched))
    fine = min(graph_size_step(req.max_num_seqs), largest)
    sizes = {s for s in (1, 2, 4) if s <= fine} | set(range(8, fine + 1, 8))
    base = 8
    while base < largest:
        step = max(8, base // 4)
        sizes.update(s for s in range(base + step, 2 * base + 1, step) if fine < s <= largest)
        base *= 2
    sizes.add(largest)
    return tuple(sorted(sizes))


def choose_load_format(device: str, requested: str | None, fastsafetensors: bool) -> str:
    """LOAD_FORMAT as set; unset: fastsafetensors on a GPU where it is installed, else vLLM's
    default loader. On an H200's local disk fastsafetensors read a 13.8 GB gpt-oss-20b
    checkpoint at 110 % of `dd`'s best, vLLM's default loader at 72-90 % (docs/GPU.md,
    section 7)."""
    if requested:
        return requested
    return "fastsafetensors" if device == "cuda" and fastsafetensors else "auto"
