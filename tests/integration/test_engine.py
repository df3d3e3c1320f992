"""The real vLLM CPU engine behind the Engine interface, on the tiny random gpt-oss."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest

from worker.engine.api import GenerationDelta, SamplingOptions
from worker.engine.vllm_engine import VllmEngine
from worker.setup.bootstrap import resolve
from worker.setup.config import Settings

from .conftest import engine_env

PROMPT = [200006, 1428, 200008, 13225, 11, 2375, 200007, 200006, 173781]  # any valid ids


@pytest.fixture(scope="module")
async def engine(
    random_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VllmEngine]:
    env = engine_env(tmp_path_factory.mktemp("engine"), MODEL=str(random_model))
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CACHE_ROOT"):
        os.environ[key] = env[key]
    settings = Settings.from_env(env)
    resolved = resolve(settings, env, gpu=None)
    eng = await VllmEngine.build(resolved.engine_config)
    yield eng
    await eng.shutdown()


async def collect(it: AsyncIterator[GenerationDelta]) -> list[GenerationDelta]:
    return [d async for d in it]


async def test_plan_and_info(engine: VllmEngine) -> None:
    info = engine.info
    assert info.device == "cpu"
    assert info.max_model_len == 2048
    assert info.details["vllm_version"] == "0.32.0"
    assert info.details["data_parallel_size"] == 1  # max_num_seqs counts every engine
    assert not engine.is_dead
    await engine.check_health()


async def test_generates_exactly_max_tokens_deltas(engine: VllmEngine) -> None:
    opts = SamplingOptions(max_tokens=12, temperature=0.0)
    deltas = await collect(engine.generate("t-single", PROMPT, opts))
    tokens = [t for d in deltas for t in d.token_ids]
    assert deltas[-1].finished
    assert deltas[-1].num_prompt_tokens == len(PROMPT)
    # a random model may hit one of the generation-config EOS ids early
    assert 1 <= len(tokens) <= 12
    assert deltas[-1].finish_reason in ("length", "stop")
    if deltas[-1].finish_reason == "length":
        assert len(tokens) == 12


async def test_greedy_is_deterministic(engine: VllmEngine) -> None:
    opts = SamplingOptions(max_tokens=8, temperature=0.0)
    a = await collect(engine.generate("t-det-a", PROMPT, opts))
    b = await collect(engine.generate("t-det-b", PROMPT, opts))
    assert [t for d in a for t in d.token_ids] == [t for d in b for t in d.token_ids]


async def test_concurrent_requests(engine: VllmEngine) -> None:
    opts = SamplingOptions(max_tokens=16, temperature=1.0)
    results = await asyncio.gather(
        *(collect(engine.generate(f"t-conc-{i}", PROMPT, opts)) for i in range(8))
    )
    assert all(r[-1].finished for r in results)
    assert await engine.num_unfinished() == 0


async def test_abort_by_closing_the_stream(engine: VllmEngine) -> None:
    opts = SamplingOptions(max_tokens=1500, temperature=1.0, stop_token_ids=())
    stream = engine.generate("t-abort", PROMPT, opts)
    got = 0
    async for delta in stream:
        got += len(delta.token_ids)
        if got >= 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)
    assert await engine.num_unfinished() == 0


async def test_json_schema_constraint_holds_even_for_random_weights(engine: VllmEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}, "ok": {"type": "boolean"}},
        "required": ["unit", "ok"],
        "additionalProperties": False,
    }
    opts = SamplingOptions(max_tokens=64, temperature=1.0, json_schema=schema)
    deltas = await collect(engine.generate("t-json", PROMPT, opts))
    from worker.harmony.tokens import decode_text

    ids = [t for d in deltas for t in d.token_ids if t < 199998]
    value = json.loads(decode_text(ids))
    jsonschema.validate(value, schema)


async def test_choice_constraint(engine: VllmEngine) -> None:
    opts = SamplingOptions(max_tokens=16, temperature=1.0, choice=("get_weather", "get_time"))
    deltas = await collect(engine.generate("t-choice", PROMPT, opts))
    from worker.harmony.tokens import decode_text

    ids = [t for d in deltas for t in d.token_ids if t < 199998]
    assert decode_text(ids) in ("get_weather", "get_time")


async def test_reseed_sets_the_engine_cores_random_state(engine: VllmEngine) -> None:
    """After a snapshot restore the worker reseeds the engine-core process: the same seed
    draws the same unseeded sample, another seed another one."""
    opts = SamplingOptions(max_tokens=16, min_tokens=16, temperature=1.0)

    async def draw(seed: int, rid: str) -> list[int]:
        await engine.reseed(seed)
        return [t for d in await collect(engine.generate(rid, PROMPT, opts)) for t in d.token_ids]

    first, again, other = await draw(1234, "r-a"), await draw(1234, "r-b"), await draw(99, "r-c")
    assert len(first) == 16
    assert first == again
    assert first != other
