"""The start-up levers the real-size GPU runs kept (docs/GPU.md, section 7): the CUDA-graph
capture grid, the KV cache sized by the plan, fastsafetensors as the GPU's weight loader, and
no usage reporting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from worker.engine.vllm_engine import CUDAGRAPH_SIZES_KEY
from worker.setup.bootstrap import resolve
from worker.setup.config import Settings, SettingsError
from worker.setup.gpu import lookup_gpu
from worker.setup.kernels import choose_load_format, cudagraph_sizes
from worker.setup.models_catalog import GPT_OSS_20B
from worker.setup.plan import PlanError, PlanRequest, engine_args, plan_engine

GiB = 1024**3
H200 = lookup_gpu("H200", 1)


def grid(**kw: Any) -> tuple[int, ...]:
    req = PlanRequest(model="m", **{k: v for k, v in kw.items() if k != "batched"})
    return cudagraph_sizes(req, kw.get("batched", 8192))


def test_the_grid_keeps_every_decode_size_and_four_per_doubling_above() -> None:
    sizes = grid()  # MAX_NUM_SEQS=64, the measured grid
    assert sizes == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224,
                     256, 320, 384, 448, 512, 640, 768, 896, 1024)
    for n in range(65, 1025):  # a mixed step pads by at most a quarter
        padded = min(s for s in sizes if s >= n)
        assert padded <= 1.25 * n
    wide = grid(max_num_seqs=100)
    assert all(s in wide for s in range(8, 105, 8)) and wide[-1] == 1024
    assert len(grid(max_num_seqs=256)) < 83  # vLLM's own list to 1024 has 83 sizes


def test_the_grid_ends_at_the_bound_or_the_step_and_zero_gives_vllms_sizes() -> None:
    assert grid(max_cudagraph_capture_size=64) == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)
    assert grid(max_cudagraph_capture_size=300)[-2:] == (256, 300)
    assert grid(batched=300)[-1] == 300
    assert grid(max_cudagraph_capture_size=0) == ()
    assert plan_engine(None, GPT_OSS_20B, PlanRequest(model="m")).cudagraph_capture_sizes == ()


def test_the_kv_cache_is_the_plans_budget_on_a_free_gpu() -> None:
    plan = plan_engine(H200, GPT_OSS_20B, PlanRequest(model="m"))
    assert plan.kv_cache_memory_bytes == plan.fit.kv_budget_bytes > 100 * GiB
    assert engine_args(plan)["kv_cache_memory_bytes"] == plan.fit.kv_budget_bytes
    free = replace(H200, free_bytes=H200.memory_bytes - GiB // 2)  # the driver's share only
    assert plan_engine(free, GPT_OSS_20B, PlanRequest(model="m")).kv_cache_memory_bytes


def test_vllm_measures_the_kv_cache_when_asked_or_when_the_gpu_is_busy() -> None:
    busy = replace(H200, free_bytes=60 * GiB)
    plan = plan_engine(busy, GPT_OSS_20B, PlanRequest(model="m"))
    assert plan.kv_cache_memory_bytes is None and "kv_cache_memory_bytes" not in engine_args(plan)
    assert any("60.0 GiB" in n and "measures" in n for n in plan.notes)
    asked = plan_engine(H200, GPT_OSS_20B, PlanRequest(model="m", kv_cache_memory="profile"))
    assert asked.kv_cache_memory_bytes is None
    exact = plan_engine(H200, GPT_OSS_20B, PlanRequest(model="m", kv_cache_memory=str(50 * GiB)))
    assert exact.kv_cache_memory_bytes == 50 * GiB


def test_kv_cache_memory_bytes_is_validated_and_named() -> None:
    assert Settings.from_env({}).kv_cache_memory_bytes == "auto"
    profile = Settings.from_env({"KV_CACHE_MEMORY_BYTES": "Profile"})
    assert profile.kv_cache_memory_bytes == "profile"
    assert Settings.from_env({"KV_CACHE_MEMORY_BYTES": "8_000_000_000"}
                             ).kv_cache_memory_bytes == "8000000000"
    for bad in ("0", "-5", "lots", "1.5"):
        with pytest.raises(SettingsError) as e:
            Settings.from_env({"KV_CACHE_MEMORY_BYTES": bad})
        assert "KV_CACHE_MEMORY_BYTES" in str(e.value)
    with pytest.raises(PlanError) as cpu:
        plan_engine(None, GPT_OSS_20B, PlanRequest(model="m", kv_cache_memory="1000000"))
    assert "KV_CACHE_MEMORY_BYTES" in str(cpu.value)


def test_engine_args_may_not_set_what_kv_cache_memory_bytes_sets() -> None:
    env = {"MODEL": "openai/gpt-oss-20b", "ENGINE_ARGS": '{"kv_cache_memory_bytes": 5}'}
    resolved = resolve(Settings.from_env(env), env, H200)
    with pytest.raises(Exception, match="KV_CACHE_MEMORY_BYTES"):
        resolved.engine_config.vllm_args()


def test_fastsafetensors_is_the_gpus_loader_where_installed() -> None:
    assert choose_load_format("cuda", None, fastsafetensors=True) == "fastsafetensors"
    assert choose_load_format("cuda", None, fastsafetensors=False) == "auto"
    assert choose_load_format("cpu", None, fastsafetensors=True) == "auto"
    assert choose_load_format("cuda", "auto", fastsafetensors=True) == "auto"  # LOAD_FORMAT wins
    assert choose_load_format("cuda", "runai_streamer", True) == "runai_streamer"
    plan = plan_engine(H200, GPT_OSS_20B, PlanRequest(model="m", fastsafetensors=True))
    assert plan.load_format == "fastsafetensors"


def test_resolve_carries_the_levers_to_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MODEL": "openai/gpt-oss-20b"}
    args = resolve(Settings.from_env(env), env, H200).engine_config.vllm_args()
    assert args["compilation_config"][CUDAGRAPH_SIZES_KEY][-1] == 1024
    assert args["kv_cache_memory_bytes"] > 100 * GiB
    cpu = resolve(Settings.from_env(env), env, None).engine_config.vllm_args()
    assert "kv_cache_memory_bytes" not in cpu and "compilation_config" not in cpu
    assert "load_format" not in cpu  # vLLM's default loader on the CPU


def test_usage_reporting_is_off_unless_the_user_turns_it_on() -> None:
    env = {"MODEL": "openai/gpt-oss-20b"}
    config = resolve(Settings.from_env(env), env, H200).engine_config
    assert config.env["VLLM_NO_USAGE_STATS"] == "1"
    env["VLLM_NO_USAGE_STATS"] = "0"
    assert resolve(Settings.from_env(env), env, H200).engine_config.env[
        "VLLM_NO_USAGE_STATS"] == "0"


def test_vllm_imports_in_the_background_while_the_weights_download(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import asyncio
    import threading

    from worker.engine import vllm_engine
    from worker.setup import bootstrap, weights

    events: list[str] = []
    imported = threading.Event()

    def fake_import(config: Any) -> None:
        events.append(f"import in {threading.current_thread().name}")
        assert "HF_TOKEN" not in config.env and "HF_HUB_OFFLINE" not in config.env
        assert config.env["VLLM_CACHE_ROOT"].startswith(str(tmp_path))
        imported.set()

    def fake_weights(model: str, **kw: Any) -> Any:
        assert imported.wait(30)  # the import runs while the download does
        events.append("download")
        return tmp_path

    class Stop(Exception):
        pass

    async def fake_build(config: Any, **kw: Any) -> Any:
        events.append("build")
        assert config.env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in config.env
        raise Stop

    monkeypatch.setattr(vllm_engine, "import_vllm", fake_import)
    monkeypatch.setattr(weights, "ensure_weights", fake_weights)
    monkeypatch.setattr(vllm_engine.VllmEngine, "build", staticmethod(fake_build))
    env = {"MODEL": "openai/gpt-oss-20b", "HF_TOKEN": "hf_secret_value",
           "MODEL_CACHE_DIR": str(tmp_path)}
    with pytest.raises(Stop):
        asyncio.run(bootstrap.start(Settings.from_env(env), env, bootstrap.Timeline()))
    assert events == ["import in vllm-import", "download", "build"]


def test_a_failed_background_import_is_left_to_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.engine import vllm_engine

    def broken(config: Any) -> None:
        raise ImportError("no vllm here")

    monkeypatch.setattr(vllm_engine, "import_vllm", broken)
    config = vllm_engine.EngineConfig(model="m", served_model_names=("m",), device="cpu",
                                      engine_args={"model": "m"})
    thread = vllm_engine.prefetch(config)
    thread.join(30)
    assert not thread.is_alive() and thread.daemon
