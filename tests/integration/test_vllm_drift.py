"""Flag drift: every vLLM name the worker can emit must exist in the installed vLLM.

Runs against whichever release is installed: 0.32.0 here and in the image,
0.26.0 on the GPU test machines (the newest built for their torch).
"""

from __future__ import annotations

import dataclasses
import importlib

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
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=StructuredOutputsParams(json={"type": "object"}),
    )
    assert params.structured_outputs is not None
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

    for name in ("from_engine_args", "generate", "abort", "check_health", "shutdown", "errored"):
        assert hasattr(AsyncLLM, name), name
    assert TokensPrompt(prompt_token_ids=[1, 2])["prompt_token_ids"] == [1, 2]
