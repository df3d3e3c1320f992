"""Flag drift: every vLLM name the worker can emit must exist in the installed vLLM.

Runs against whichever release is installed: 0.32.0 here and in the image,
0.26.0 on the GPU test machines (the newest built for their torch).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing

import pytest

from worker import VLLM_VERSION
from worker.engine import vllm_engine as engine
from worker.setup import plan

SUPPORTED_RELEASES = {"0.32.0", "0.26.0"}

vllm = pytest.importorskip("vllm")


def _backend_names() -> set[str]:
    for path in ("vllm.v1.attention.backends.registry", "vllm.attention.backends.registry"):
        try:
            module = importlib.import_module(path)
        except ImportError:
            continue
        return {m.name for m in module.AttentionBackendEnum}
    raise AssertionError("AttentionBackendEnum not found in any known module")


def test_installed_release_is_one_we_support() -> None:
    assert vllm.__version__ in SUPPORTED_RELEASES
    assert VLLM_VERSION in SUPPORTED_RELEASES


def test_every_engine_argument_exists() -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs

    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert engine.ENGINE_ARG_NAMES - fields == set()
    assert plan.ENGINE_ARG_NAMES - fields == set()
    assert plan.ENGINE_ARG_NAMES <= engine.ENGINE_ARG_NAMES


def test_the_priority_scheduling_policy_exists() -> None:
    from vllm.config.scheduler import SchedulerPolicy

    assert "priority" in typing.get_args(SchedulerPolicy)


def test_every_attention_backend_we_can_choose_exists() -> None:
    names = _backend_names()
    assert set(plan.ATTENTION_BACKENDS) - names == set()
    assert set(plan.LEGACY_BACKENDS.values()) - names == set()


def test_sampling_and_structured_output_names_exist() -> None:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    params = SamplingParams(
        max_tokens=4, temperature=0.5, top_p=0.9, top_k=5, min_p=0.1, seed=1,
        presence_penalty=0.1, frequency_penalty=0.1, repetition_penalty=1.1,
        stop_token_ids=[200002], logprobs=2, logit_bias={200002: -5.0}, detokenize=False,
        min_tokens=2,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=StructuredOutputsParams(json={"type": "object"}),
    )
    assert params.structured_outputs is not None
    assert params.min_tokens == 2
    StructuredOutputsParams(json_object=True)
    StructuredOutputsParams(choice=["a", "b"])


def test_structured_outputs_config_accepts_our_keys() -> None:
    from vllm.config import StructuredOutputsConfig

    from worker.setup.bootstrap import STRUCTURED_OUTPUTS

    config = StructuredOutputsConfig(**STRUCTURED_OUTPUTS)
    assert config.disable_any_whitespace and config.enable_in_reasoning


def test_async_llm_api_we_use() -> None:
    from vllm.inputs import TokensPrompt
    from vllm.v1.engine.async_llm import AsyncLLM

    for name in ("from_engine_args", "generate", "abort", "check_health", "shutdown", "errored",
                 "sleep", "wake_up", "reset_prefix_cache", "collective_rpc"):
        assert hasattr(AsyncLLM, name), name
    # SamplingOptions.priority goes to generate(priority=...) under scheduling_policy priority
    assert "priority" in inspect.signature(AsyncLLM.generate).parameters
    assert TokensPrompt(prompt_token_ids=[1, 2])["prompt_token_ids"] == [1, 2]


def test_every_load_format_we_accept_is_registered() -> None:
    from vllm.model_executor import model_loader

    registered = set(model_loader._LOAD_FORMAT_TO_MODEL_LOADER)
    assert set(engine.LOAD_FORMATS) - registered == set()


def test_the_capture_grid_reaches_the_compilation_config() -> None:
    from vllm.config import CompilationConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    config = engine.EngineConfig(
        model="m", served_model_names=("m",), device="cuda", engine_args={"model": "m"},
        load_format="dummy", cudagraph_capture_sizes=GRID)
    args = AsyncEngineArgs(**config.vllm_args())
    assert isinstance(args.compilation_config, CompilationConfig)
    assert list(getattr(args.compilation_config, engine.CUDAGRAPH_SIZES_KEY)) == list(GRID)
    assert args.load_format == "dummy"


def test_the_parallel_layout_reaches_the_engine_args() -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs

    from worker.setup.gpu import lookup_gpu
    from worker.setup.models_catalog import GPT_OSS_20B

    for count, tp, layout in ((2, None, (1, 2)), (2, 2, (2, 1))):
        planned = plan.plan_engine(lookup_gpu("H200", count), GPT_OSS_20B, plan.PlanRequest(
            model=GPT_OSS_20B.name, tensor_parallel_size=tp))
        config = engine.EngineConfig(model="m", served_model_names=("m",), device="cuda",
                                     engine_args={"model": "m", **plan.engine_args(planned)})
        args = AsyncEngineArgs(**config.vllm_args())
        assert (args.tensor_parallel_size, args.data_parallel_size) == layout


def test_moe_experts_are_split_across_data_parallel_engines() -> None:
    # worker.setup.fit counts a MoE model's experts as split over TP x DP GPUs, as this does
    from vllm.model_executor.layers.fused_moe.config import FusedMoEParallelConfig

    flatten = (getattr(FusedMoEParallelConfig, "flatten_tp_across_dp_and_pcp", None)
               or getattr(FusedMoEParallelConfig, "flatten_tp_across_dp", None))
    assert flatten is not None


GRID = (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128)


def test_every_engine_argument_a_worker_vllm_variable_maps_to_exists() -> None:
    from worker.setup.compat_rules import rules
    from worker.setup.config import Settings
    from worker.setup.engine_extras import ARG_OWNERS

    known = frozenset(n for names in Settings.env_names().values() for n in names)
    mapped = {r.engine_arg for r in rules(known).values() if r.engine_arg}
    fields = engine.engine_arg_fields()
    # worker-vllm's LOG_CONFIG_FILE maps to an engine argument added after vLLM 0.26, the
    # release the lent GPU machines run; the image's pinned 0.32 has it
    later = {"log_config_file"} if vllm.__version__.startswith("0.26.") else set()
    assert mapped and mapped - fields - later == set()
    assert set(ARG_OWNERS) - fields == set()


def test_passthrough_is_checked_against_this_vllm() -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs

    from worker.engine.extra_args import EngineArgsError

    def config(extra: dict[str, object]) -> engine.EngineConfig:
        return engine.EngineConfig(
            model="m", served_model_names=("m",), device="cuda", load_format="dummy",
            engine_args={"model": "m", "seed": 7, "max_logprobs": 5,
                         "enable_expert_parallel": True,
                         "speculative_config": {"method": "ngram", "num_speculative_tokens": 3,
                                                "prompt_lookup_max": 4}},
            cudagraph_capture_sizes=GRID, extra_args=extra,
            extra_sources={k: "ENGINE_ARGS" for k in extra})

    with pytest.raises(EngineArgsError, match="not_an_argument"):
        engine.check_config(config({"not_an_argument": 1}))
    good = config({"block_size": 32, "cpu_offload_gb": 1, "compilation_config": {"mode": 3}})
    engine.check_config(good)
    args = AsyncEngineArgs(**good.vllm_args())
    assert (args.block_size, args.seed, args.max_logprobs) == (32, 7, 5)
    assert args.enable_expert_parallel and args.speculative_config is not None
    assert list(getattr(args.compilation_config, engine.CUDAGRAPH_SIZES_KEY)) == list(GRID)
