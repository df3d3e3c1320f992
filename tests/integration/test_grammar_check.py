"""The vLLM engine's schema checker (worker/engine/grammar_check.py) on the real xgrammar.

A child process compiles schemas with the tiny model's o200k tokenizer, as the engine's
xgrammar backend does; a schema too slow to compile is refused at the time limit while
the event loop goes on, and the checker serves the next schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worker.engine.api import RequestRejected
from worker.engine.grammar_check import GrammarChecker, GrammarSpec
from worker.tiny import TOKENIZER_DIRNAME

SIMPLE = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
SLOW = json.dumps({"type": "string", "maxLength": 1_000_000})  # ~17 s on two CPU cores


@pytest.fixture(scope="module")
async def checker(random_model: Path, tiny_cache: Path) -> AsyncIterator[GrammarChecker]:
    tokenizer = tiny_cache / TOKENIZER_DIRNAME
    assert tokenizer.is_dir(), tokenizer
    c = GrammarChecker(GrammarSpec(tokenizer=str(tokenizer), revision=None, cache_dir=None,
                                   vocab_size=201088))
    yield c
    await c.aclose()


async def test_a_good_schema_compiles_and_a_bad_one_is_refused(checker: GrammarChecker) -> None:
    await checker.check(SIMPLE, time_limit=120)
    with pytest.raises(RequestRejected) as info:
        await checker.check(json.dumps({"type": "nope"}), time_limit=120)
    assert info.value.structured and "nope" in info.value.message
    assert not info.value.message.startswith("[")  # no time stamp or C++ location


async def test_a_slow_schema_is_refused_at_the_limit_without_stalling_the_loop(
        checker: GrammarChecker) -> None:
    await checker.check(SIMPLE, time_limit=120)  # the child is up
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(RequestRejected, match="did not compile within 2 s"):
            await checker.check(SLOW, time_limit=2)
    finally:
        ticker.cancel()
    assert ticks >= 10  # the loop ran on while the schema compiled elsewhere
    await checker.check(SIMPLE + " ", time_limit=120)  # a fresh child serves the next one


async def test_a_prestarted_checker_keeps_its_child(tiny_cache: Path) -> None:
    c = GrammarChecker(GrammarSpec(tokenizer=str(tiny_cache / TOKENIZER_DIRNAME), revision=None,
                                   cache_dir=None, vocab_size=201088))
    try:
        await c.prestart()  # spawned, loading; nothing waits for it yet
        proc = c._proc
        assert proc is not None and proc.returncode is None
        await c.check(SIMPLE, time_limit=300)  # reads its ready line, then compiles
        assert c._proc is proc
    finally:
        await c.aclose()
