"""Memory arithmetic: does a model fit a card, and with how much context?

Mirrors how vLLM sizes its KV cache (pure; no GPU, no vLLM import):

* usable   = CUDA-visible memory x gpu_memory_utilization (CUDA sees a little
             less than NVML's total: `CUDA_HIDDEN_BYTES`);
* budget   = usable - weights per GPU - runtime reserve (profiled activations, CUDA
             graphs, non-torch allocations, NCCL, a margin: `runtime_reserve`);
* weights per GPU = (the rest + experts/DP) / TP: tensor parallelism splits every
             layer; with data parallelism each engine keeps its own copy of attention and
             embeddings, but vLLM splits a MoE model's experts over all TP x DP GPUs
             (`FusedMoEParallelConfig.flatten_tp_across_dp_and_pcp` in vLLM 0.32: slices
             of every expert, or whole experts with ENABLE_EXPERT_PARALLEL);
* a request of L tokens takes, per GPU, ceil(L/16) blocks in every
  full-attention layer, and in every sliding-window layer only the window plus
  the tokens in flight (two batches with async scheduling), as vLLM's hybrid KV
  cache manager does (`SlidingWindowSpec.max_admission_blocks_per_request`).
  vLLM versions without the hybrid manager count sliding layers as full ones;
  this module assumes the hybrid manager (on by default for gpt-oss in 0.2x-0.32).

The largest context is the largest L whose one request fits the budget: the check
vLLM itself runs at start-up. vLLM stays the final judge.

Calibration (H100 80GB, vLLM 0.26, dummy-weight gpt-oss, max_num_seqs 64): NVML
total 81559 MiB, CUDA total 480 MiB less; gpt-oss-120b weights 61.43 GiB, peak
activation 1.09 GiB (1024 batched tokens) to 1.17 GiB (8192), non-torch 0.24 GiB,
CUDA graphs 0.50 GiB estimated / 0.63 GiB captured. At utilisation 0.95 and 1024
batched tokens vLLM had 11.96 GiB of KV cache, 2.61 requests of 131072 tokens;
this module predicts 11.5 GiB (2 requests): about 0.4 GiB on the safe side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from worker.setup.gpu import GiB, GpuInfo
from worker.setup.models_catalog import ModelShape

MiB = 1024**2
KiB = 1024
BLOCK_SIZE = 16  # tokens per KV block on CUDA
IN_FLIGHT_BATCHES = 2  # async scheduling keeps two batches unsettled
MIN_CONTEXT = 1024  # below this a plan is refused

CUDA_HIDDEN_BYTES = 512 * MiB  # NVML total minus cudaMemGetInfo total (480 MiB on H100)
NON_TORCH_BYTES = 256 * MiB  # cuBLAS workspaces and other allocations outside torch
CUDA_GRAPH_BYTES = 640 * MiB  # captured graphs (batch sizes up to 1024)
NCCL_BYTES = 512 * MiB  # extra per GPU when TP x DP > 1 (not measured here)
SAFETY_BYTES = 256 * MiB  # version drift, fragmentation
ACTIVATION_BASE_BYTES = 1024 * MiB  # profile-run peak that does not grow with the batch
ACTIVATION_BYTES_PER_TOKEN = 16 * KiB  # per batched token, at hidden size 2880
SAMPLER_BYTES_PER_LOGIT = 8  # fp32 logits + probabilities for each running sequence
MARLIN_WEIGHT_FACTOR = 1.075  # Marlin MXFP4 (Ampere/Ada) vs Triton: 65.97 vs 61.43 GiB (120b)
REFERENCE_HIDDEN = 2880
DEFAULT_VOCAB = 128 * 1024


@dataclass(frozen=True)
class FitReport:
    """Per-GPU memory picture of one plan (bytes unless named otherwise)."""

    weights_bytes_per_gpu: int
    kv_bytes_per_token: int  # full-attention layers: grows with every token of context
    sliding_bytes_per_token: int  # sliding layers: only for the tokens they hold
    sliding_tokens_held: int  # window - 1 + tokens in flight (0: no sliding layers)
    reserve_bytes: int
    usable_bytes: int
    kv_budget_bytes: int
    max_context: int  # largest single request that fits, capped at the model's maximum
    native_max: int
    max_model_len: int = 0
    concurrent_seqs: int = 0  # full-length requests one engine's KV cache holds at once
    engines: int = 1  # data-parallel engines, each with such a KV cache

    @property
    def fits(self) -> bool:
        return self.max_context >= MIN_CONTEXT and self.max_model_len <= self.max_context

    def seq_bytes(self, length: int) -> int:
        """KV bytes one request of `length` tokens takes on one GPU."""
        full = _blocks(length) * BLOCK_SIZE * self.kv_bytes_per_token
        return full + self.sliding_seq_bytes(length)

    def sliding_seq_bytes(self, length: int) -> int:
        """What the sliding-window layers hold for one request of `length` tokens."""
        if not self.sliding_tokens_held:
            return 0
        held = min(self.sliding_tokens_held, length)
        return (_blocks(held) + 1) * BLOCK_SIZE * self.sliding_bytes_per_token

    def with_length(self, length: int) -> FitReport:
        per = self.seq_bytes(length)
        return replace(self, max_model_len=length,
                       concurrent_seqs=max(0, self.kv_budget_bytes) // per if per else 0)

    def summary(self) -> str:
        g = GiB
        return (f"{self.usable_bytes / g:.1f} GiB usable per GPU - weights "
                f"{self.weights_bytes_per_gpu / g:.1f} GiB - runtime {self.reserve_bytes / g:.1f}"
                f" GiB leaves {self.kv_budget_bytes / g:.2f} GiB for the KV cache "
                f"({self.kv_bytes_per_token} B/token): room for {self.max_context} tokens")

    def verdict(self) -> str:
        if not self.fits:
            return "does not fit"
        each = f" in each of {self.engines} data-parallel engines" if self.engines > 1 else ""
        return (f"fits: MAX_MODEL_LEN={self.max_model_len}, {self.concurrent_seqs} full-length "
                f"sequence(s) at once{each} (largest context {self.max_context})")


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_SIZE)


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    return 1 if kv_cache_dtype.startswith("fp8") else 2


def runtime_reserve(model: ModelShape, batched: int, max_num_seqs: int, tp: int,
                    dp: int = 1) -> int:
    """GPU memory vLLM keeps outside weights and KV cache, per GPU (see module notes)."""
    width = (model.hidden_size or REFERENCE_HIDDEN) / REFERENCE_HIDDEN
    activations = ACTIVATION_BASE_BYTES + int(batched * ACTIVATION_BYTES_PER_TOKEN * width)
    sampler = max_num_seqs * (model.vocab_size or DEFAULT_VOCAB) * SAMPLER_BYTES_PER_LOGIT
    nccl = NCCL_BYTES if tp * dp > 1 else 0
    return NON_TORCH_BYTES + CUDA_GRAPH_BYTES + SAFETY_BYTES + nccl + activations + sampler


def replica_bytes(model: ModelShape, dp: int = 1) -> int:
    """What one data-parallel engine holds before TP splits it: the model, less the
    experts' share the other engines hold (see module notes)."""
    return model.weight_bytes - model.expert_bytes + math.ceil(model.expert_bytes / dp)


def weights_per_gpu(gpu: GpuInfo, model: ModelShape, tp: int, dp: int = 1) -> int:
    """Model weights on each of the TP x DP GPUs, with Marlin's repacking on Ampere/Ada."""
    total = replica_bytes(model, dp)
    if model.is_mxfp4 and gpu.architecture in ("ampere", "ada"):
        total = int(total * MARLIN_WEIGHT_FACTOR)
    return math.ceil(total / tp)


def _base_report(model: ModelShape, tp: int, dtype_bytes: int, batched: int, budget: int,
                 weights: int, reserve: int, usable: int) -> FitReport:
    per_layer = 2 * math.ceil(model.num_kv_heads / tp) * model.head_dim * dtype_bytes
    held = 0
    if model.num_sliding_layers and model.sliding_window:
        held = model.sliding_window - 1 + IN_FLIGHT_BATCHES * batched
    report = FitReport(
        weights_bytes_per_gpu=weights, kv_bytes_per_token=per_layer * model.num_full_layers,
        sliding_bytes_per_token=per_layer * model.num_sliding_layers, sliding_tokens_held=held,
        reserve_bytes=reserve, usable_bytes=usable, kv_budget_bytes=budget, max_context=0,
        native_max=model.max_position_embeddings)
    return replace(report, max_context=_largest_fitting(report, model.max_position_embeddings))


def _largest_fitting(report: FitReport, cap: int) -> int:
    if report.kv_budget_bytes <= 0 or report.seq_bytes(1) > report.kv_budget_bytes:
        return 0
    lo, hi = 1, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if report.seq_bytes(mid) <= report.kv_budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def gpu_fit(gpu: GpuInfo, model: ModelShape, *, tp: int, util: float, dtype_bytes: int,
            batched: int, max_num_seqs: int, max_model_len: int | None,
            dp: int = 1) -> FitReport:
    """The memory picture on one of the TP x DP GPUs; `max_model_len` None means auto."""
    usable = int((gpu.memory_bytes - CUDA_HIDDEN_BYTES) * util)
    weights = weights_per_gpu(gpu, model, tp, dp)
    reserve = runtime_reserve(model, batched, max_num_seqs, tp, dp)
    budget = usable - weights - reserve
    report = _base_report(model, tp, dtype_bytes, batched, budget, weights, reserve, usable)
    length = max_model_len or auto_max_model_len(report.max_context, report.native_max)
    return replace(report.with_length(length), engines=dp)


def cpu_fit(model: ModelShape, length: int, batched: int, kv_gib: int | None) -> FitReport:
    """CPU engine: the KV cache is VLLM_CPU_KVCACHE_SPACE GiB of RAM, sized here if unset."""
    probe = _base_report(model, 1, 2, batched, 1 << 62, model.weight_bytes, 0, 0)
    one = probe.seq_bytes(length)
    if kv_gib is None:
        kv_gib = min(4, max(1, math.ceil(2 * one / GiB)))
        kv_gib = max(kv_gib, math.ceil(one / GiB))
    report = _base_report(model, 1, 2, batched, kv_gib * GiB, model.weight_bytes, 0, 0)
    return report.with_length(length)


def auto_max_model_len(max_context: int, native: int) -> int:
    """The model's own maximum if it fits, else the largest fit rounded down (1024s, or 256s
    under 4096 tokens)."""
    if max_context >= native:
        return native
    step = 1024 if max_context >= 4096 else 256
    return max_context // step * step
