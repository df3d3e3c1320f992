"""Where weights are found, and any gpt-oss checkpoint on the Hub, against the fake Hub.

The cache is the Hugging Face `hub/` layout (`$CACHE/hub/models--ORG--NAME`, as RunPod's
Cached Models and worker-vllm have it); a volume in the old layout (`$CACHE/models--…`)
keeps working in place, and a read-only copy is loaded where it is, never written to.
A repo the catalog does not know has its config.json read (and checked) before any weight
is fetched. Each start is `python -m worker weights MODEL` in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fake_hub import FakeHub
from tests.integration.test_weights import (
    SHARDS,
    TOKEN,
    decoys,
    sha,
    snapshot_of,
    start,
    worker_env,
)
from worker.setup.snapshot import OURS

FINETUNE = "someorg/gpt-oss-tiny-finetune"
PRIVATE = "someorg/gpt-oss-tiny-private"
LLAMA = "someorg/llama-tiny"
FINETUNE_DIR = "models--someorg--gpt-oss-tiny-finetune"


@pytest.fixture(scope="module")
def hub(random_model: Path) -> Iterator[FakeHub]:
    hub = FakeHub().start()
    tiny = {p.name: p.read_bytes() for p in random_model.iterdir() if p.is_file()}
    hub.add(FINETUNE, {**tiny, **decoys()})
    shard_bytes = 1_000_000
    index = {"metadata": {"total_size": 2 * shard_bytes},
             "weight_map": {"a.weight": SHARDS[0], "b.weight": SHARDS[1]}}
    hub.add(PRIVATE, {SHARDS[0]: os.urandom(shard_bytes), SHARDS[1]: os.urandom(shard_bytes),
                      "model.safetensors.index.json": json.dumps(index).encode(),
                      "config.json": tiny["config.json"], "tokenizer.json": tiny["tokenizer.json"]},
            gated_token=TOKEN)
    llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
             "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}
    hub.add(LLAMA, {"config.json": json.dumps(llama).encode(),
                    "model.safetensors": os.urandom(100_000)})
    yield hub
    hub.stop()


def tree(root: Path) -> dict[str, tuple[int, float]]:
    """Every path under `root` with its size and mtime (links not followed)."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime)
            for p in sorted(root.rglob("*"))}


def test_downloads_go_to_the_hub_layout_and_a_warm_start_is_offline(
        hub: FakeHub, tmp_path: Path) -> None:
    env = worker_env(hub, tmp_path)
    snap = snapshot_of(start(FINETUNE, env))
    assert snap.parent.parent == tmp_path / "cache" / "hub" / FINETUNE_DIR
    marker = json.loads((tmp_path / "cache" / OURS / "weights" / FINETUNE_DIR / "main.json"
                         ).read_text())
    assert marker["dir"] == f"hub/{FINETUNE_DIR}"
    hub.reset()
    assert snapshot_of(start(FINETUNE, {**env, "HF_HUB_OFFLINE": "1"})) == snap
    assert hub.seen == []


def test_a_volume_in_the_old_layout_keeps_working_in_place(hub: FakeHub, tmp_path: Path) -> None:
    env = worker_env(hub, tmp_path)
    cache = tmp_path / "cache"
    new = snapshot_of(start(FINETUNE, env))
    # Turn it into a volume filled by an earlier version: repo beside hub/, marker without "dir".
    name = FINETUNE_DIR
    shutil.move(cache / "hub" / name, cache / name)
    marker = cache / OURS / "weights" / name / "main.json"
    raw = json.loads(marker.read_text())
    del raw["dir"]
    marker.write_text(json.dumps(raw))
    old = cache / name / "snapshots" / new.name

    hub.reset()
    assert snapshot_of(start(FINETUNE, env)) == old
    assert hub.seen == [], "an old marker still makes a warm start offline"
    assert not (cache / "hub" / name).exists()

    marker.unlink()  # no marker (filled by other tools): found in the old layout, checked once
    hub.reset()
    result = start(FINETUNE, env)
    assert snapshot_of(result) == old
    assert "found in the old layout" in result.stderr
    assert hub.gets(FINETUNE) == {}, "nothing downloaded again"
    assert not (cache / "hub" / name).exists()
    assert json.loads(marker.read_text())["dir"] == name


def read_only_start(model: str, env: dict[str, str], folder: Path
                    ) -> subprocess.CompletedProcess[str]:
    """A start with `folder` read-only: a read-only bind mount as root, permissions otherwise."""
    cmd = ["python", "-m", "worker", "weights", model]
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode & ~0o222)
        try:
            return start(model, env)
        finally:
            for p in [folder, *folder.rglob("*")]:
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o200)
    if shutil.which("unshare") is None:
        pytest.skip("no unshare to mount a read-only folder as root")
    import sys

    cmd[0] = sys.executable
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), *cmd], env=env,
                         capture_output=True, text=True, timeout=120)
    if "mount" in out.stderr and out.returncode != 0 and "weights" not in out.stderr:
        pytest.skip(f"cannot mount read-only here: {out.stderr[-300:]}")
    return out


def test_a_read_only_cached_model_is_loaded_in_place_and_never_written(
        hub: FakeHub, tmp_path: Path) -> None:
    """RunPod's Cached Models: `$CACHE/hub` filled by RunPod (no marker of ours), read-only."""
    filler = worker_env(hub, tmp_path / "filler")
    snap = snapshot_of(start(FINETUNE, filler))
    cache = tmp_path / "runpod-volume" / "huggingface-cache"
    cache.mkdir(parents=True)
    shutil.copytree(tmp_path / "filler" / "cache" / "hub", cache / "hub", symlinks=True)
    before = tree(cache / "hub")
    env = worker_env(hub, tmp_path, MODEL_CACHE_DIR=str(cache), LOG_LEVEL="debug")
    hub.reset()
    result = read_only_start(FINETUNE, env, cache / "hub")
    got = snapshot_of(result)
    assert got == cache / "hub" / FINETUNE_DIR / "snapshots" / snap.name
    assert "read-only): loading them in place" in result.stderr
    assert hub.seen == [], "a read-only cached model needs no network"
    assert tree(cache / "hub") == before, "nothing may be written to a read-only cache"
    for name in ("config.json", "model.safetensors"):
        assert sha((got / name).read_bytes()) == sha(hub.repos[FINETUNE].files[name])

    other = read_only_start(PRIVATE, {**env, "HF_TOKEN": TOKEN}, cache / "hub")
    assert other.returncode == 3 and "not writable" in other.stderr
    assert "MODEL_CACHE_DIR" in other.stderr and TOKEN not in other.stdout + other.stderr
    assert tree(cache / "hub") == before


def test_any_gpt_oss_repo_reads_its_config_first(hub: FakeHub, tmp_path: Path) -> None:
    env = worker_env(hub, tmp_path)
    hub.reset()
    snapshot_of(start(FINETUNE, env))
    gets = [s.path.rsplit("/", 1)[-1] for s in hub.seen
            if s.method == "GET" and "/resolve/" in s.path]
    assert gets[0] == "config.json" and gets.index("model.safetensors") > 0


def test_a_gated_checkpoint_needs_hf_token_and_never_prints_it(
        hub: FakeHub, tmp_path: Path) -> None:
    env = worker_env(hub, tmp_path, LOG_LEVEL="debug")
    hub.reset()
    no_token = start(PRIVATE, env)
    assert no_token.returncode == 3 and "set HF_TOKEN" in no_token.stderr
    assert f"MODEL={PRIVATE}" in no_token.stderr
    assert not [s for s in hub.seen if s.path.endswith(".safetensors")]
    wrong = "hf_WrongSecretValue0987654321"
    bad = start(PRIVATE, {**env, "HF_TOKEN": wrong})
    assert bad.returncode == 3 and "HF_TOKEN was rejected" in bad.stderr
    assert wrong not in bad.stdout + bad.stderr
    good = start(PRIVATE, {**env, "HF_TOKEN": TOKEN})
    snap = snapshot_of(good)
    assert TOKEN not in good.stdout + good.stderr
    assert {p.name for p in snap.iterdir()} >= {*SHARDS, "config.json"}


def test_a_repo_that_is_not_gpt_oss_is_refused_naming_model(hub: FakeHub, tmp_path: Path) -> None:
    hub.reset()
    result = start(LLAMA, worker_env(hub, tmp_path))
    assert result.returncode == 2
    assert f"MODEL={LLAMA} is not a gpt-oss checkpoint" in result.stderr
    assert "'llama'" in result.stderr
    assert hub.gets(LLAMA) == {"config.json": 1}, "nothing but config.json is fetched"


def test_start_up_plans_any_checkpoint_from_the_hub_then_from_the_cache(
        hub: FakeHub, tmp_path: Path) -> None:
    """bootstrap.resolve, as at start: config.json and the weight size before any weight."""
    from worker.setup.bootstrap import resolve
    from worker.setup.config import Settings
    from worker.setup.gpu import lookup_gpu

    env = {"MODEL": PRIVATE, "HF_TOKEN": TOKEN, "MODEL_CACHE_DIR": str(tmp_path / "cache"),
           "HF_ENDPOINT": hub.url}
    hub.reset()
    resolved = resolve(Settings.from_env(env), env, lookup_gpu("H100"))
    assert resolved.model == PRIVATE and resolved.served_names == (PRIVATE,)
    assert resolved.plan.fit.weights_bytes_per_gpu == 2_000_000  # the index's total_size
    assert resolved.plan.moe_backend == "unquantised (bf16) experts"
    assert sorted(hub.gets(PRIVATE)) == ["config.json", "model.safetensors.index.json"]
    hub.reset()
    again = resolve(Settings.from_env(env), env, lookup_gpu("H100"))
    assert again.plan == resolved.plan and hub.seen == []
