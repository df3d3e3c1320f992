"""The schema checker starts while the engine builds (worker/engine/grammar_check.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from worker.engine.engine_config import EngineConfig
from worker.engine.grammar_check import adopt, early_checker, grammar_checker_for

SO = {"backend": "xgrammar", "disable_any_whitespace": True}


def config(model: Path, **so: object) -> EngineConfig:
    return EngineConfig(model="openai/gpt-oss-20b", served_model_names=("m",), device="cpu",
                        engine_args={"model": str(model),
                                     "structured_outputs_config": {**SO, **so}})


def vllm_config(vocab: int, backend: str = "xgrammar") -> SimpleNamespace:
    return SimpleNamespace(
        structured_outputs_config=SimpleNamespace(backend=backend, disable_any_whitespace=True),
        model_config=SimpleNamespace(get_vocab_size=lambda: vocab))


def test_the_early_checker_is_the_engines_when_the_vocabulary_agrees(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 201088}))
    early = early_checker(config(tmp_path))
    assert early is not None and early.spec.vocab_size == 201088
    assert not early.spec.any_whitespace
    proper = grammar_checker_for(config(tmp_path), vllm_config(201088))
    assert proper is not None and proper.spec == early.spec
    assert adopt(early, proper) is early  # its child, already loading, is kept
    other = grammar_checker_for(config(tmp_path), vllm_config(201090))
    assert adopt(early, other) is other  # another vocabulary: the engine's own
    assert adopt(None, proper) is proper and adopt(early, None) is None


def test_no_early_checker_without_a_local_config_or_xgrammar(tmp_path: Path) -> None:
    assert early_checker(config(tmp_path)) is None  # no config.json (a hub id, say)
    (tmp_path / "config.json").write_text("{not json")
    assert early_checker(config(tmp_path)) is None
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 201088}))
    assert early_checker(config(tmp_path, backend="guidance")) is None
    assert grammar_checker_for(config(tmp_path), vllm_config(1, "guidance")) is None
