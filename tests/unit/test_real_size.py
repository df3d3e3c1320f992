"""Real-size serving with dummy weights: LOAD_FORMAT, the shape folders, the CUDA-graph bound,
`min_tokens` (fixed-length benchmark requests) and the bench's first-chunk time."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_service import ANSWER, WEATHER, request, service
from worker.bench.loadgen import RequestRecord, summarize
from worker.engine.vllm_engine import CUDAGRAPH_SIZES_KEY, LOAD_FORMATS, EngineConfig
from worker.openai.errors import InvalidRequest
from worker.setup.bootstrap import resolve
from worker.setup.config import Settings, SettingsError
from worker.setup.gpu import lookup_gpu
from worker.setup.models_catalog import GPT_OSS_20B, GPT_OSS_120B, shape_from_dir
from worker.setup.plan import graph_size_step
from worker.tiny.shapes import build_shape_model, shape_config_dict


def test_load_format_is_validated_and_named() -> None:
    assert Settings.from_env({"LOAD_FORMAT": "Dummy"}).load_format == "dummy"
    assert Settings.from_env({}).load_format is None  # the plan's choice
    assert Settings.from_env({"LOAD_FORMAT": " "}).load_format is None
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"LOAD_FORMAT": "pickle"})
    assert "LOAD_FORMAT='pickle'" in str(e.value)
    for name in LOAD_FORMATS:
        assert name in str(e.value)


@pytest.mark.parametrize(("kind", "layers", "experts", "model"), [
    ("shape-20b", 24, 32, GPT_OSS_20B), ("shape-120b", 36, 128, GPT_OSS_120B)])
def test_shape_folders_have_the_public_config_and_no_weights(
        tmp_path: Path, kind: str, layers: int, experts: int, model: Any) -> None:
    build_shape_model(tmp_path, kind)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_local_experts"]) == (layers, experts)
    assert config["hidden_size"] == config["intermediate_size"] == 2880
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (64, 8)
    assert config["head_dim"] == 64 and config["num_experts_per_tok"] == 4
    assert config["layer_types"][:2] == ["sliding_attention", "full_attention"]
    assert len(config["layer_types"]) == layers and config["sliding_window"] == 128
    assert config["rope_scaling"]["factor"] == 32.0 and config["rope_theta"] == 150000.0
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    assert config["vocab_size"] == 201088 and config["swiglu_limit"] == 7.0
    assert not list(tmp_path.glob("*.safetensors"))
    assert "noise" in (tmp_path / "README.md").read_text()
    shape = shape_from_dir(tmp_path)  # no weight files: sized as the catalogued model
    assert shape.weight_bytes == model.weight_bytes
    assert (shape.num_layers, shape.num_sliding_layers) == (model.num_layers,
                                                            model.num_sliding_layers)


def test_a_config_of_another_shape_is_not_sized_from_the_catalogue(tmp_path: Path) -> None:
    config = {**shape_config_dict("shape-20b"), "num_local_experts": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert shape_from_dir(tmp_path).weight_bytes == 0


def test_dummy_needs_a_local_config_and_warns_loudly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"MODEL": "openai/gpt-oss-20b", "LOAD_FORMAT": "dummy"}
    with pytest.raises(SettingsError) as e:
        resolve(Settings.from_env(env), env, lookup_gpu("H200", 1))
    assert "LOAD_FORMAT=dummy" in str(e.value) and "shape-20b" in str(e.value)
    build_shape_model(tmp_path, "shape-20b")
    env = {"MODEL": str(tmp_path), "LOAD_FORMAT": "dummy", "MAX_NUM_SEQS": "64"}
    with caplog.at_level(logging.WARNING):
        resolved = resolve(Settings.from_env(env), env, lookup_gpu("H200", 1))
    assert "NOISE" in caplog.text
    args = resolved.engine_config.vllm_args()
    assert args["load_format"] == "dummy"
    grid = args["compilation_config"][CUDAGRAPH_SIZES_KEY]  # the plan's capture grid
    assert grid[:11] == [1, 2, 4, *range(8, 65, 8)] and grid[-1] == 1024
    env["MAX_CUDAGRAPH_CAPTURE_SIZE"] = "64"
    bounded = resolve(Settings.from_env(env), env, lookup_gpu("H200", 1))
    assert bounded.engine_config.vllm_args()["compilation_config"] == {
        CUDAGRAPH_SIZES_KEY: [1, 2, 4, *range(8, 65, 8)]}
    env["MAX_CUDAGRAPH_CAPTURE_SIZE"] = "0"
    own = resolve(Settings.from_env(env), env, lookup_gpu("H200", 1))
    assert "compilation_config" not in own.engine_config.vllm_args()  # vLLM's own sizes
    assert resolved.plan.max_model_len == 131072  # the 20b's weights were counted


def test_vllm_args_map_the_fields_and_leave_defaults_alone() -> None:
    base = EngineConfig(model="m", served_model_names=("m",), device="cuda",
                        engine_args={"model": "m"})
    assert base.vllm_args() == {"model": "m"}
    eager = EngineConfig(model="m", served_model_names=("m",), device="cpu",
                         engine_args={"model": "m", "enforce_eager": True},
                         cudagraph_capture_sizes=(1, 2, 4, 8))
    assert "compilation_config" not in eager.vllm_args()
    with pytest.raises(ValueError, match="not known"):
        EngineConfig(model="m", served_model_names=("m",), device="cuda",
                     engine_args={"bogus": 1}).vllm_args()


@pytest.mark.parametrize(("n", "step"), [(1, 1), (2, 2), (3, 4), (5, 8), (64, 64), (65, 72),
                                         (256, 256), (257, 272), (1000, 1008)])
def test_graph_sizes_follow_vllms_grid(n: int, step: int) -> None:
    assert graph_size_step(n) == step


async def test_min_tokens_reaches_the_engine_and_is_checked() -> None:
    svc, eng = service()
    await svc.complete(svc.prepare(request(max_tokens=256, min_tokens=256)))
    assert eng.calls[-1][1].min_tokens == 256 and eng.calls[-1][1].max_tokens == 256
    await svc.complete(svc.prepare(request()))
    assert eng.calls[-1][1].min_tokens == 0
    with pytest.raises(InvalidRequest) as e:
        svc.prepare(request(max_tokens=8, min_tokens=9))
    assert e.value.param == "min_tokens"
    with pytest.raises(InvalidRequest) as e2:
        svc.prepare(request(min_tokens=4, tools=[WEATHER], tool_choice="required"))
    assert e2.value.param == "min_tokens"
    with pytest.raises(InvalidRequest) as e3:
        svc.prepare(request(min_tokens=4, response_format={"type": "json_object"}))
    assert e3.value.param == "min_tokens"
    assert len(ANSWER) > 0


def test_summary_reports_the_first_chunk() -> None:
    recs = [RequestRecord(start=0.0, end=1.0, first_text=0.5, first_chunk=0.1,
                          text_times=[0.5, 0.6], completion_tokens=2)]
    s = summarize(recs, 1.0, 1)
    assert s.first_chunk_p50_s == pytest.approx(0.1) and s.ttft_p50_s == pytest.approx(0.5)


def test_summary_reports_means_and_the_first_chunks_tail() -> None:
    # a fair queue (every request waits alike) and an unfair one (most wait little, a few
    # long) can share a median; the mean and the p95 tell them apart
    recs = [RequestRecord(start=0.0, end=2.0 + w, first_text=1.0 + w, first_chunk=w,
                          text_times=[1.0 + w], completion_tokens=1)
            for w in (0.0, 0.0, 0.0, 4.0)]
    s = summarize(recs, 6.0, 4)
    assert s.first_chunk_p50_s == pytest.approx(0.0)
    assert s.first_chunk_mean_s == pytest.approx(1.0)
    assert s.first_chunk_p95_s == pytest.approx(3.4)
    assert s.ttft_mean_s == pytest.approx(2.0)
    assert s.latency_mean_s == pytest.approx(3.0)
    assert math.isnan(summarize([], 1.0, 1).ttft_mean_s)
