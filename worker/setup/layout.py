"""How the visible GPUs are used: tensor parallel (TP) size x data parallel (DP) size.

A model that fits one GPU runs as DP engines of one GPU each: each engine schedules its
own requests and keeps its own KV cache (for a MoE model such as gpt-oss vLLM still
splits the experts over all the engines, whose steps then run in lockstep). One that does
not fit gets the smallest TP that holds it (a power of two dividing its KV heads), and
the GPUs left over make more engines of that size, in whole groups. TENSOR_PARALLEL_SIZE
and DATA_PARALLEL_SIZE set by the user win; a combination that cannot run raises
`PlanError` naming the variable. Pure: whether a size fits is the caller's `holds(tp)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.setup.gpu import GpuInfo
from worker.setup.models_catalog import ModelShape
from worker.setup.plan_model import PlanError, PlanRequest


@dataclass(frozen=True)
class Layout:
    tp: int
    dp: int
    why: str  # one line for the plan's output

    def describe(self) -> str:
        engines = f"{self.dp} engines of" if self.dp > 1 else "1 engine on"
        gpus = "1 GPU" if self.tp == 1 else f"{self.tp} GPUs"
        each = " each" if self.dp > 1 else ""
        return (f"TENSOR_PARALLEL_SIZE={self.tp} x DATA_PARALLEL_SIZE={self.dp}: {engines} "
                f"{gpus}{each} ({self.why})")


def valid_tp(tp: int, heads: int) -> bool:
    """vLLM splits gpt-oss's attention by KV head: a power of two dividing them."""
    return tp >= 1 and not tp & (tp - 1) and heads % tp == 0


def tp_sizes(limit: int, heads: int) -> list[int]:
    """The valid TP sizes up to `limit`, smallest first (always at least 1)."""
    sizes, tp = [1], 2
    while tp <= limit and heads % tp == 0:
        sizes.append(tp)
        tp *= 2
    return sizes


def choose_layout(gpu: GpuInfo, model: ModelShape, req: PlanRequest,
                  holds: Callable[[int], bool], warnings: list[str]) -> Layout:
    """TP and DP for `gpu.count` identical GPUs; `holds(tp)` says whether one engine of `tp`
    GPUs holds the model with the context wanted (MAX_MODEL_LEN, else the model's own)."""
    count, heads = gpu.count, model.num_kv_heads
    tp_set, dp_set = req.tensor_parallel_size, req.data_parallel_size
    if tp_set is not None:
        _check_tp(tp_set, count, model)
    if dp_set is not None:
        _check_dp(dp_set, tp_set, count)
    if tp_set is not None:
        tp, why = tp_set, "TENSOR_PARALLEL_SIZE set"
    else:
        sizes = tp_sizes(count // (dp_set or 1), heads)
        fitting = [t for t in sizes if holds(t)]
        tp = fitting[0] if fitting else sizes[-1]
        if count == 1:
            why = "one GPU visible"
        elif tp == 1:
            why = "the model fits one GPU"
        else:
            why = (f"the model needs {tp} GPUs" if fitting
                   else f"{tp} GPUs, the most one engine can use here")
    if dp_set is not None:
        dp = dp_set
        why = "both set" if tp_set is not None else f"DATA_PARALLEL_SIZE set; {why}"
    else:
        dp = count // tp
    idle = count - tp * dp
    if idle:
        warnings.append(f"{count} GPUs visible; using {tp * dp} (TENSOR_PARALLEL_SIZE={tp} x "
                        f"DATA_PARALLEL_SIZE={dp}), {idle} left idle: TP is a power of two "
                        f"dividing the {heads} KV heads and every engine gets TP GPUs")
    return Layout(tp, dp, why)


def _check_tp(tp: int, count: int, model: ModelShape) -> None:
    heads = model.num_kv_heads
    if tp > count:
        raise PlanError(f"TENSOR_PARALLEL_SIZE={tp} but only {count} GPU(s) are visible",
                        f"Set TENSOR_PARALLEL_SIZE={tp_sizes(count, heads)[-1]} or "
                        "make more GPUs visible (CUDA_VISIBLE_DEVICES)")
    if not valid_tp(tp, heads):
        raise PlanError(f"TENSOR_PARALLEL_SIZE={tp} must be a power of two dividing "
                        f"{model.name}'s {heads} KV heads",
                        f"Set TENSOR_PARALLEL_SIZE={tp_sizes(min(tp, count), heads)[-1]}")


def _check_dp(dp: int, tp: int | None, count: int) -> None:
    if dp < 1:
        raise PlanError(f"DATA_PARALLEL_SIZE={dp} must be at least 1", "Unset DATA_PARALLEL_SIZE")
    if dp > count:
        raise PlanError(f"DATA_PARALLEL_SIZE={dp} but only {count} GPU(s) are visible",
                        f"Set DATA_PARALLEL_SIZE={count // (tp or 1)} or make more GPUs "
                        "visible (CUDA_VISIBLE_DEVICES)")
    if tp is not None and tp * dp > count:
        raise PlanError(f"TENSOR_PARALLEL_SIZE={tp} x DATA_PARALLEL_SIZE={dp} needs {tp * dp} "
                        f"GPUs but only {count} are visible",
                        f"Set DATA_PARALLEL_SIZE={count // tp} (or lower TENSOR_PARALLEL_SIZE)")
