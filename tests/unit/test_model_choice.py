"""Which model a worker serves, and where its weights are looked for (no network)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from worker.setup.bootstrap import resolve
from worker.setup.cache_layout import layout_for, looks_complete, snapshot_dir, writable
from worker.setup.checkpoint import describe, is_gpt_oss
from worker.setup.config import Settings, SettingsError
from worker.setup.gpu import lookup_gpu
from worker.setup.snapshot import OURS

TINY_CONFIG = {"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"],
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "head_dim": 64, "hidden_size": 64, "sliding_window": 128,
               "layer_types": ["sliding_attention", "full_attention"],
               "max_position_embeddings": 131072, "vocab_size": 201088}


def test_model_unset_is_one_default_on_every_gpu(caplog: pytest.LogCaptureFixture) -> None:
    for card in ("H100", "L40S", "B200"):
        with caplog.at_level(logging.INFO):
            resolved = resolve(Settings.from_env({}), {}, lookup_gpu(card))
        assert resolved.model == "openai/gpt-oss-20b"
        assert resolved.served_names == ("openai/gpt-oss-20b",)
    assert "MODEL not set: serving the default openai/gpt-oss-20b" in caplog.text


def test_model_auto_picks_per_gpu_and_says_so_loudly(caplog: pytest.LogCaptureFixture) -> None:
    env = {"MODEL": "auto"}
    with caplog.at_level(logging.WARNING):
        big = resolve(Settings.from_env(env), env, lookup_gpu("H100"))
    assert big.model == "openai/gpt-oss-120b"
    assert "MODEL=auto: serving openai/gpt-oss-120b" in caplog.text
    assert "DIFFERENT models" in caplog.text
    assert resolve(Settings.from_env(env), env, lookup_gpu("L40S")).model == "openai/gpt-oss-20b"


def test_a_local_checkpoint_that_is_not_gpt_oss_names_model(tmp_path: Path) -> None:
    llama = {**TINY_CONFIG, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(llama))
    env = {"MODEL": str(tmp_path)}
    with pytest.raises(SettingsError, match=f"MODEL={tmp_path} is not a gpt-oss checkpoint"):
        resolve(Settings.from_env(env), env, lookup_gpu("H100"))
    assert is_gpt_oss({"architectures": ["GptOssForCausalLM"]}) and not is_gpt_oss({})


def test_a_model_that_is_neither_a_repo_id_nor_a_folder(tmp_path: Path) -> None:
    env = {"MODEL": str(tmp_path / "missing")}
    with pytest.raises(SettingsError, match="neither a Hub repo id"):
        resolve(Settings.from_env(env), env, lookup_gpu("H100"))


def fill(repo_dir: Path, commit: str = "c" * 40, shards: int = 1) -> Path:
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    (snap / "config.json").write_text(json.dumps(TINY_CONFIG))
    names = [f"model-{i:05d}.safetensors" for i in range(shards)]
    for name in names:
        (snap / name).write_bytes(b"\0" * 1000)
    index = {"metadata": {"total_size": 1000 * shards}, "weight_map": {n: n for n in names}}
    (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    return snap


def test_layouts_and_search_order(tmp_path: Path) -> None:
    layout = layout_for(tmp_path / "cache", others=(tmp_path / "runpod" / "hub",))
    assert [(w, str(d.relative_to(tmp_path))) for w, d in layout.repo_dirs("o/m")] == [
        ("hub", "cache/hub/models--o--m"), ("old layout", "cache/models--o--m"),
        ("other cache", "runpod/hub/models--o--m")]
    assert layout.marker("o/m", "v1.0") == (tmp_path / "cache" / OURS / "weights" /
                                            "models--o--m" / "v1.0.json")
    hub_named = layout_for(tmp_path / "hf" / "hub", others=())
    assert hub_named.hub == hub_named.root == tmp_path / "hf" / "hub"
    assert hub_named.legacy is None
    assert layout.found("o/m", None) == []
    runpod = fill(tmp_path / "runpod" / "hub" / "models--o--m", shards=2)
    old = fill(tmp_path / "cache" / "models--o--m")
    assert [w for w, _, _ in layout.found("o/m", None)] == ["old layout", "other cache"]
    assert layout.found("o/m", None)[1][2] == runpod and looks_complete(old)
    (runpod / "model-00001.safetensors").unlink()
    assert not looks_complete(runpod)
    assert snapshot_dir(old.parent.parent, "c" * 40) == old
    assert snapshot_dir(old.parent.parent, "v2") is None
    assert writable(tmp_path / "not" / "yet") and not writable(old / "config.json" / "x")


def test_describe_reads_the_cache_offline(tmp_path: Path) -> None:
    assert describe("o/m", revision=None, cache_dir=tmp_path, token=None, others=(),
                    offline=True) is None
    fill(tmp_path / "hub" / "models--o--m", shards=3)
    shape = describe("o/m", revision=None, cache_dir=tmp_path, token=None, others=(),
                     offline=True)
    assert shape is not None and shape.name == "o/m"
    assert (shape.weight_bytes, shape.num_layers, shape.is_mxfp4) == (3000, 2, False)
