"""Weights on the cache volume, with the real huggingface_hub client against a fake Hub.

Each "start" is `python -m worker weights MODEL` in a fresh process (HF_ENDPOINT is read
when huggingface_hub is imported), the same `ensure_weights` call the worker makes at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fake_hub import FakeHub
from worker.setup.snapshot import Snapshot, WeightFile, WeightsError, check, needed

TOKEN = "hf_GoodSecretToken1234567890"
NEEDED_TINY = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json"}
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def decoys() -> dict[str, bytes]:
    return {"original/model.safetensors": os.urandom(2_000_000), "original/config.json": b"{}",
            "metal/model.bin": os.urandom(2_000_000), "README.md": b"# tiny\n",
            ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
            "LICENSE": b"Apache-2.0\n"}


def sharded(shard_bytes: int = 3_000_000) -> dict[str, bytes]:
    index = {"metadata": {"total_size": 2 * shard_bytes},
             "weight_map": {"a.weight": SHARDS[0], "b.weight": SHARDS[1]}}
    return {SHARDS[0]: os.urandom(shard_bytes), SHARDS[1]: os.urandom(shard_bytes),
            "model.safetensors.index.json": json.dumps(index).encode(),
            "config.json": b'{"model_type": "gpt_oss"}', "tokenizer_config.json": b"{}",
            **decoys()}


@pytest.fixture(scope="module")
def hub(random_model: Path) -> Iterator[FakeHub]:
    hub = FakeHub().start()
    tiny = {p.name: p.read_bytes() for p in random_model.iterdir() if p.is_file()}
    hub.add("openai/tiny-gpt-oss", {**tiny, **decoys()})
    hub.add("openai/tiny-sharded", sharded())
    hub.add("openai/tiny-slow", sharded(12_000_000))
    hub.add("openai/tiny-gated", sharded(100_000), gated_token=TOKEN)
    yield hub
    hub.stop()


def worker_env(hub: FakeHub, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "VLLM_", "MODEL"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"),
               MODEL_CACHE_DIR=str(tmp / "cache"), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONUNBUFFERED="1", LOG_LEVEL="info")
    env.update(extra)
    return env


def start(model: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "weights", model], env=env,
                          capture_output=True, text=True, timeout=120)


def spawn(model: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "worker", "weights", model], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot_of(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_first_start_fetches_only_needed_files_then_warm_start_is_offline(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo = hub.repos["openai/tiny-gpt-oss"]
    env = worker_env(hub, tmp_path, SHOW_LOADING_PROGRESS="true")
    hub.reset()
    snap = snapshot_of(start("openai/tiny-gpt-oss", env))
    assert {p.name for p in snap.iterdir()} == NEEDED_TINY
    for name in NEEDED_TINY:
        assert sha((snap / name).read_bytes()) == sha(repo.files[name])
    assert hub.gets("openai/tiny-gpt-oss") == dict.fromkeys(NEEDED_TINY, 1)
    assert not [s.path for s in hub.seen if "original" in s.path or "metal" in s.path]

    hub.reset()
    again = start("openai/tiny-gpt-oss", env)
    assert snapshot_of(again) == snap
    assert hub.seen == [], "a warm cache must make no request at all"
    hub.reset()
    assert snapshot_of(start("openai/tiny-gpt-oss", {**env, "HF_HUB_OFFLINE": "1"})) == snap
    assert hub.seen == []


def test_progress_lines_are_plain_when_not_a_terminal(hub: FakeHub, tmp_path: Path) -> None:
    result = start("openai/tiny-sharded", worker_env(hub, tmp_path, SHOW_LOADING_PROGRESS="1"))
    snapshot_of(result)
    lines = result.stdout.splitlines()
    assert "\r" not in result.stdout
    assert lines[0] == "[download] ..." and lines[-2].startswith("[download] done in ")
    assert any(line.startswith("download [") and " 100%" in line for line in lines)


def test_two_workers_starting_together_fetch_each_file_once(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.repos["openai/tiny-sharded"].throttle_bps = 4_000_000  # ~1.5 s: the two overlap
    env = worker_env(hub, tmp_path)
    hub.reset()
    try:
        procs = [spawn("openai/tiny-sharded", env) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        hub.repos["openai/tiny-sharded"].throttle_bps = None
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0].strip() == outs[1][0].strip()
    wanted = {p for p in hub.repos["openai/tiny-sharded"].files if needed(p)}
    assert hub.gets("openai/tiny-sharded") == dict.fromkeys(wanted, 1)
    assert "downloaded by another worker" in outs[0][1] + outs[1][1]


def test_download_killed_half_way_resumes(hub: FakeHub, tmp_path: Path) -> None:
    repo = hub.repos["openai/tiny-slow"]
    big = SHARDS[0]
    env = worker_env(hub, tmp_path)
    blobs = tmp_path / "cache" / "hub" / "models--openai--tiny-slow" / "blobs"
    repo.throttle_bps = 3_000_000
    hub.reset()
    proc = spawn("openai/tiny-slow", env)
    try:
        deadline = time.monotonic() + 60
        partial = 0
        while partial < 4_000_000 and time.monotonic() < deadline:
            time.sleep(0.1)
            partial = max((p.stat().st_size for p in blobs.glob(f"{repo.etag(big)}*.incomplete")),
                          default=0)
        assert partial >= 4_000_000, "the download never got going"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        repo.throttle_bps = None
    partial = max(p.stat().st_size for p in blobs.glob(f"{repo.etag(big)}*.incomplete"))
    for p in blobs.glob("*.incomplete"):  # the next worker comes a while later: stale files
        os.utime(p, (time.time() - 60, time.time() - 60))
    hub.reset()
    snap = snapshot_of(start("openai/tiny-slow", env))
    for name in SHARDS:
        assert sha((snap / name).read_bytes()) == sha(repo.files[name])
    fetches = [s for s in hub.seen if s.method == "GET" and s.path.endswith(big)]
    assert [s.range for s in fetches] == [f"bytes={partial}-"]
    assert fetches[0].sent == len(repo.files[big]) - partial
    assert not list(blobs.glob("*.incomplete")), "orphan partial files must not stay behind"


def test_truncated_shard_is_detected_and_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    repo = hub.repos["openai/tiny-sharded"]
    env = worker_env(hub, tmp_path)
    snap = snapshot_of(start("openai/tiny-sharded", env))
    blob = (snap / SHARDS[1]).resolve()
    with blob.open("r+b") as f:
        f.truncate(1000)
    (snap / "tokenizer_config.json").unlink()  # a lost link: its blob is still good
    (snap / "config.json").resolve().unlink()  # a lost blob
    hub.reset()
    assert snapshot_of(start("openai/tiny-sharded", env)) == snap
    assert hub.gets("openai/tiny-sharded") == {SHARDS[1]: 1, "config.json": 1}
    for name in (SHARDS[1], "config.json", "tokenizer_config.json"):
        assert sha((snap / name).read_bytes()) == sha(repo.files[name])


def test_gated_repo_needs_hf_token_and_never_prints_it(hub: FakeHub, tmp_path: Path) -> None:
    env = worker_env(hub, tmp_path, LOG_LEVEL="debug")
    no_token = start("openai/tiny-gated", env)
    assert no_token.returncode == 3
    assert "gated" in no_token.stderr and "set HF_TOKEN" in no_token.stderr

    wrong = "hf_WrongSecretValue0987654321"
    bad = start("openai/tiny-gated", {**env, "HF_TOKEN": wrong})
    assert bad.returncode == 3 and "HF_TOKEN was rejected" in bad.stderr
    assert wrong not in bad.stdout + bad.stderr

    good = start("openai/tiny-gated", {**env, "HF_TOKEN": TOKEN})
    snapshot_of(good)
    assert TOKEN not in good.stdout + good.stderr


def test_missing_repo_and_revision_name_the_variable(hub: FakeHub, tmp_path: Path) -> None:
    env = worker_env(hub, tmp_path)
    missing = start("openai/no-such-model", env)
    assert missing.returncode == 3
    assert "MODEL=openai/no-such-model was not found" in missing.stderr
    assert "HF_TOKEN" in missing.stderr
    rev = start("openai/tiny-sharded", {**env, "MODEL_REVISION": "v9"})
    assert rev.returncode == 3 and "MODEL_REVISION=v9" in rev.stderr


def test_local_directory_is_used_as_it_is(random_model: Path, tmp_path: Path) -> None:
    from worker.setup.weights import ensure_weights

    got = ensure_weights(str(random_model), revision=None, cache_dir=tmp_path, token=None,
                         progress=None)
    assert got == random_model and not any(tmp_path.iterdir())


def test_index_naming_a_shard_the_repo_lacks_is_an_error(tmp_path: Path) -> None:
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 10)
    snap = Snapshot("o/m", "c" * 40, (
        WeightFile("model.safetensors.index.json",
                   (tmp_path / "model.safetensors.index.json").stat().st_size, "i"),
        WeightFile("model-00001-of-00002.safetensors", 10, "s1"),
    ))
    with pytest.raises(WeightsError, match="index names shards"):
        check(tmp_path, snap)
    assert check(tmp_path, Snapshot("o/m", "c" * 40, (WeightFile("model.safetensors", 5, "b"),))
                 ) == ["model.safetensors"]


def test_fresh_partials_are_left_alone(tmp_path: Path) -> None:
    from worker.setup.resume import stale_partials

    old, live = tmp_path / "abc.1.incomplete", tmp_path / "abc.2.incomplete"
    old.write_bytes(b"x" * 10)
    live.write_bytes(b"x" * 20)
    os.utime(old, (time.time() - 60, time.time() - 60))
    assert stale_partials(tmp_path, "abc*.incomplete") == [old]


ENGINE_CHILD = """
import asyncio, sys
from worker.engine.vllm_engine import EngineConfig, VllmEngine
path = sys.argv[1]
config = EngineConfig(model="openai/tiny-gpt-oss", served_model_names=("openai/tiny-gpt-oss",),
    device="cpu",
    engine_args={"model": path, "served_model_name": ["openai/tiny-gpt-oss"],
                 "dtype": "bfloat16", "max_model_len": 1024, "max_num_seqs": 4,
                 "enforce_eager": True, "generation_config": "auto"})
async def main():
    engine = await VllmEngine.build(config)  # includes a warm-up generation
    await engine.shutdown()
asyncio.run(main())
print("engine ok")
"""


def test_vllm_loads_the_snapshot_with_no_request(hub: FakeHub, tmp_path: Path) -> None:
    """The files kept are all vLLM needs, and loading them by path never calls the Hub."""
    from tests.integration.conftest import engine_env

    env = worker_env(hub, tmp_path)
    snap = snapshot_of(start("openai/tiny-gpt-oss", env))
    hub.reset()
    run_env = engine_env(tmp_path, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"),
                         VLLM_ENABLE_V1_MULTIPROCESSING="0")
    run_env.pop("HF_HUB_OFFLINE")  # online on purpose: any Hub call would be counted
    out = subprocess.run([sys.executable, "-c", ENGINE_CHILD, str(snap)], env=run_env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "engine ok" in out.stdout, out.stderr[-4000:]
    assert hub.seen == []


def test_unreachable_hub_falls_back_to_a_cache_filled_by_other_tools(
    hub: FakeHub, tmp_path: Path
) -> None:
    env = worker_env(hub, tmp_path)
    snap = snapshot_of(start("openai/tiny-sharded", env))
    for marker in (tmp_path / "cache" / ".gpt-oss-worker" / "weights").rglob("*.json"):
        marker.unlink()  # as if `hf download` had filled the cache
    hub.reset()
    offline = start("openai/tiny-sharded", {**env, "HF_HUB_OFFLINE": "1"})
    assert snapshot_of(offline) == snap and hub.seen == []
    assert "sizes unchecked" in offline.stderr
    down = start("openai/tiny-sharded", {**env, "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert snapshot_of(down) == snap
    empty = start("openai/tiny-sharded", {**env, "HF_HUB_OFFLINE": "1",
                                          "MODEL_CACHE_DIR": str(tmp_path / "empty")})
    assert empty.returncode == 3 and "HF_HUB_OFFLINE=1" in empty.stderr


def test_unwritable_cache_without_a_copy_names_model_cache_dir(
    hub: FakeHub, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a folder")
    env = worker_env(hub, tmp_path, MODEL_CACHE_DIR=str(tmp_path / "file" / "cache"))
    result = start("openai/tiny-sharded", env)
    assert result.returncode == 3 and "fix MODEL_CACHE_DIR" in result.stderr
