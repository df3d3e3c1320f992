"""Several GPUs: tensor parallel x data parallel, from the plan to vLLM's engine arguments.

Named cards stand in for the probe (`lookup_gpu(card, count)`, or `plan_cli.probe` faked);
nothing here touches a GPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from worker.engine.extra_args import EngineArgsError
from worker.setup import plan_cli
from worker.setup.bootstrap import plan_request, resolve
from worker.setup.config import Settings, SettingsError
from worker.setup.fit import NCCL_BYTES, replica_bytes, runtime_reserve, weights_per_gpu
from worker.setup.gpu import lookup_gpu
from worker.setup.layout import tp_sizes, valid_tp
from worker.setup.models_catalog import GPT_OSS_20B, GPT_OSS_120B, shape_from_dir
from worker.setup.plan import EnginePlan, PlanError, PlanRequest, engine_args, plan_engine
from worker.tiny.shapes import build_shape_model

BIG, SMALL = GPT_OSS_120B, GPT_OSS_20B
GiB = 1024**3


def plan(card: str | None, model=BIG, count: int = 1, **kw: object) -> EnginePlan:
    gpu = lookup_gpu(card, count) if card else None
    return plan_engine(gpu, model, PlanRequest(model=model.name, **kw))  # type: ignore[arg-type]


def refused(card: str | None, model=BIG, count: int = 1, **kw: object) -> PlanError:
    with pytest.raises(PlanError) as info:
        plan(card, model, count, **kw)
    return info.value


def layout(p: EnginePlan) -> tuple[int, int]:
    return p.tensor_parallel_size, p.data_parallel_size


# --- what the plan chooses -------------------------------------------------------------------

def test_20b_on_two_h200_runs_two_engines_of_one_gpu() -> None:
    p = plan("H200", SMALL, count=2)
    assert layout(p) == (1, 2)
    assert p.layout == ("TENSOR_PARALLEL_SIZE=1 x DATA_PARALLEL_SIZE=2: 2 engines of 1 GPU each "
                        "(the model fits one GPU)")
    args = engine_args(p)
    assert (args["tensor_parallel_size"], args["data_parallel_size"]) == (1, 2)
    assert p.max_model_len == 131072 and p.warnings == []
    assert any("each of the 2 engines takes up to MAX_NUM_SEQS=64" in n for n in p.notes)
    assert "in each of 2 data-parallel engines" in p.fit.verdict()


def test_120b_on_two_48gb_cards_is_split_by_tensor_parallel() -> None:
    p = plan("L40S", BIG, count=2)
    assert layout(p) == (2, 1)
    assert p.layout.endswith("1 engine on 2 GPUs (the model needs 2 GPUs)")
    assert engine_args(p)["data_parallel_size"] == 1


def test_leftover_gpus_make_more_engines_in_whole_groups() -> None:
    assert layout(plan("L40S", BIG, count=4)) == (2, 2)
    assert layout(plan("L40S", BIG, count=8)) == (2, 4)
    assert layout(plan("H100", SMALL, count=8)) == (1, 8)
    assert layout(plan("H100", SMALL, count=3)) == (1, 3)  # DP need not be a power of two
    assert layout(plan("H200", SMALL)) == (1, 1)


def test_one_gpu_that_holds_only_a_short_context_is_not_enough() -> None:
    # 120b on an A100-40GB: no single card holds it, and two hold less than its 131072 tokens:
    # the most GPUs one engine can use, the context that fits
    p = plan("A100-40GB", BIG, count=2)
    assert layout(p) == (2, 1) and p.max_model_len < 131072
    assert "2 GPUs, the most one engine can use here" in p.layout
    # asked for less, two cards are what it needs; asked for more, it does not fit
    assert "the model needs 2 GPUs" in plan("A100-40GB", BIG, count=2,
                                            max_model_len=8192).layout
    assert "MAX_MODEL_LEN=131072 does not fit" in refused(
        "A100-40GB", BIG, count=2, max_model_len=131072).reason


def test_max_model_len_decides_whether_one_gpu_is_enough() -> None:
    # 120b on one A100-80GB holds 131072 tokens at 0.95 but not at 0.90 (docs/PLAN.md)
    assert layout(plan("A100-80GB", BIG, count=2)) == (1, 2)
    assert layout(plan("A100-80GB", BIG, count=2, gpu_memory_utilization=0.90)) == (2, 1)
    assert layout(plan("A100-80GB", BIG, count=2, gpu_memory_utilization=0.90,
                       max_model_len=32768)) == (1, 2)


# --- the user's values win ----------------------------------------------------------------------

def test_explicit_sizes_win() -> None:
    assert layout(plan("H200", SMALL, count=2, tensor_parallel_size=2)) == (2, 1)
    assert layout(plan("H200", SMALL, count=4, tensor_parallel_size=2)) == (2, 2)
    assert layout(plan("H200", SMALL, count=4, tensor_parallel_size=2,
                       data_parallel_size=2)) == (2, 2)
    p = plan("H200", SMALL, count=4, tensor_parallel_size=1, data_parallel_size=2)
    assert layout(p) == (1, 2) and "both set" in p.layout
    assert p.warnings == ["4 GPUs visible; using 2 (TENSOR_PARALLEL_SIZE=1 x DATA_PARALLEL_SIZE="
                          "2), 2 left idle: TP is a power of two dividing the 8 KV heads and "
                          "every engine gets TP GPUs"]
    p = plan("H200", SMALL, count=2, data_parallel_size=1)
    assert layout(p) == (1, 1) and "DATA_PARALLEL_SIZE set" in p.layout
    # DATA_PARALLEL_SIZE alone: TP is the smallest that fits in the GPUs each engine gets
    assert layout(plan("L40S", BIG, count=4, data_parallel_size=2)) == (2, 2)


def test_data_parallel_alone_for_120b_on_two_48gb_cards() -> None:
    # vLLM splits the experts over both engines, so one L40S per engine holds them
    p = plan("L40S", BIG, count=2, data_parallel_size=2)
    assert layout(p) == (1, 2)
    assert p.fit.fits and p.fit.weights_bytes_per_gpu == weights_per_gpu(
        lookup_gpu("L40S"), BIG, 1, 2)


# --- refusals, each naming its variable -----------------------------------------------------------

@pytest.mark.parametrize(("count", "kw", "reason", "suggestion"), [
    (2, {"tensor_parallel_size": 2, "data_parallel_size": 2},
     "TENSOR_PARALLEL_SIZE=2 x DATA_PARALLEL_SIZE=2 needs 4 GPUs but only 2 are visible",
     "Set DATA_PARALLEL_SIZE=1 (or lower TENSOR_PARALLEL_SIZE)"),
    (2, {"data_parallel_size": 4}, "DATA_PARALLEL_SIZE=4 but only 2 GPU(s) are visible",
     "Set DATA_PARALLEL_SIZE=2 or make more GPUs visible (CUDA_VISIBLE_DEVICES)"),
    (2, {"data_parallel_size": 0}, "DATA_PARALLEL_SIZE=0 must be at least 1",
     "Unset DATA_PARALLEL_SIZE"),
    (4, {"tensor_parallel_size": 3}, "TENSOR_PARALLEL_SIZE=3 must be a power of two dividing "
     "openai/gpt-oss-20b's 8 KV heads", "Set TENSOR_PARALLEL_SIZE=2"),
    (2, {"tensor_parallel_size": 4, "data_parallel_size": 1},
     "TENSOR_PARALLEL_SIZE=4 but only 2 GPU(s) are visible",
     "Set TENSOR_PARALLEL_SIZE=2 or make more GPUs visible (CUDA_VISIBLE_DEVICES)"),
])
def test_impossible_layouts_are_refused_by_name(count: int, kw: dict[str, int], reason: str,
                                                suggestion: str) -> None:
    err = refused("H200", SMALL, count=count, **kw)
    assert (err.reason, err.suggestion) == (reason, suggestion)


def test_tp_must_divide_the_kv_heads() -> None:
    assert tp_sizes(8, 8) == [1, 2, 4, 8] and tp_sizes(8, 4) == [1, 2, 4]
    assert tp_sizes(3, 8) == [1, 2] and tp_sizes(0, 8) == [1]
    assert [t for t in range(1, 17) if valid_tp(t, 8)] == [1, 2, 4, 8]
    err = refused("H200", SMALL, count=16, tensor_parallel_size=16)
    assert "TENSOR_PARALLEL_SIZE=16 must be a power of two dividing" in err.reason


def test_the_cpu_refuses_data_parallel() -> None:
    err = refused(None, SMALL, data_parallel_size=2)
    assert err.reason == "data parallelism needs GPUs; none was found"
    assert err.suggestion == "Unset DATA_PARALLEL_SIZE on the CPU"
    assert layout(plan(None, SMALL, data_parallel_size=1)) == (1, 1)
    assert engine_args(plan(None, SMALL))["data_parallel_size"] == 1


# --- memory per GPU ---------------------------------------------------------------------------

def test_weights_per_gpu_under_tp_and_dp() -> None:
    h200 = lookup_gpu("H200")
    dense = SMALL.weight_bytes - SMALL.expert_bytes
    assert 3.3 * GiB < dense < 3.4 * GiB
    assert 3.9 * GiB < BIG.weight_bytes - BIG.expert_bytes < 4 * GiB
    assert weights_per_gpu(h200, SMALL, 1) == SMALL.weight_bytes  # one engine: all of it
    assert weights_per_gpu(h200, SMALL, 2) == -(-SMALL.weight_bytes // 2)  # TP splits it all
    # DP: each engine keeps attention and embeddings, the experts are split over all GPUs
    assert replica_bytes(SMALL, 2) == dense + -(-SMALL.expert_bytes // 2)
    assert weights_per_gpu(h200, SMALL, 1, 2) == replica_bytes(SMALL, 2)
    assert weights_per_gpu(h200, SMALL, 2, 2) == -(-replica_bytes(SMALL, 2) // 2)
    p = plan("H200", SMALL, count=2)
    assert p.fit.weights_bytes_per_gpu == replica_bytes(SMALL, 2)
    assert p.fit.kv_bytes_per_token == plan("H200", SMALL).fit.kv_bytes_per_token  # not split
    dense_model = SMALL.__class__(**{**SMALL.__dict__, "expert_bytes": 0})
    assert replica_bytes(dense_model, 4) == SMALL.weight_bytes  # a dense model: whole copies


def test_communication_reserve_counts_every_parallel_layout() -> None:
    base = runtime_reserve(SMALL, 8192, 64, 1)
    assert runtime_reserve(SMALL, 8192, 64, 1, 2) == base + NCCL_BYTES
    assert runtime_reserve(SMALL, 8192, 64, 2, 1) == base + NCCL_BYTES


def test_shape_folders_know_their_experts(tmp_path: Path) -> None:
    build_shape_model(tmp_path, "shape-20b")
    assert shape_from_dir(tmp_path).expert_bytes == SMALL.expert_bytes


# --- settings -> plan -> engine arguments -----------------------------------------------------

def test_data_parallel_size_setting() -> None:
    s = Settings.from_env({"DATA_PARALLEL_SIZE": "2"})
    assert s.data_parallel_size == 2 and plan_request(s).data_parallel_size == 2
    assert Settings.from_env({}).data_parallel_size is None
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"DATA_PARALLEL_SIZE": "0"})
    assert "DATA_PARALLEL_SIZE" in str(e.value)
    # worker-vllm's variable is the same one, and so is its flag
    assert Settings.from_env({"VLLM_EXTRA_ARGS": "--data-parallel-size 2"}).data_parallel_size == 2


def test_engine_arguments_carry_data_parallel_size() -> None:
    env = {"MODEL": "openai/gpt-oss-20b"}
    args = resolve(Settings.from_env(env), env, lookup_gpu("H200", 2)).engine_config.vllm_args()
    assert (args["tensor_parallel_size"], args["data_parallel_size"]) == (1, 2)
    env = {"MODEL": "openai/gpt-oss-120b", "DATA_PARALLEL_SIZE": "1"}
    args = resolve(Settings.from_env(env), env, lookup_gpu("L40S", 4)).engine_config.vllm_args()
    assert (args["tensor_parallel_size"], args["data_parallel_size"]) == (2, 1)


def test_engine_args_cannot_set_data_parallel_size_too() -> None:
    env = {"MODEL": "openai/gpt-oss-20b", "ENGINE_ARGS": '{"data_parallel_size": 2}'}
    config = resolve(Settings.from_env(env), env, lookup_gpu("H200", 2)).engine_config
    with pytest.raises(EngineArgsError) as e:
        config.vllm_args()
    assert "DATA_PARALLEL_SIZE" in str(e.value) and "ENGINE_ARGS" in str(e.value)


def test_plan_command_prints_the_layout_of_the_probed_gpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_cli, "probe", lambda env: lookup_gpu("H200", 2))
    out = io.StringIO()
    assert plan_cli.main([], {"MODEL": "openai/gpt-oss-20b"}, out=out) == 0
    text = out.getvalue()
    assert "hardware: 2× NVIDIA H200" in text
    assert ("layout                  TENSOR_PARALLEL_SIZE=1 x DATA_PARALLEL_SIZE=2: 2 engines "
            "of 1 GPU each (the model fits one GPU)") in text
    assert "tensor parallel size    1" in text and "data parallel size      2" in text
    out = io.StringIO()
    env = {"MODEL": "openai/gpt-oss-20b", "TENSOR_PARALLEL_SIZE": "2", "DATA_PARALLEL_SIZE": "2"}
    assert plan_cli.main([], env, out=out) == 2
    assert ("reason:  TENSOR_PARALLEL_SIZE=2 x DATA_PARALLEL_SIZE=2 needs 4 GPUs but only 2 "
            "are visible") in out.getvalue()
