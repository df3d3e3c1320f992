"""Model weights on the cache volume: download once, check, then load offline.

`ensure_weights(model, ...)` returns a local snapshot directory for vLLM to load by path:

- a local directory is returned as it is;
- a completion marker (written after a full size check) makes a warm volume start with
  zero network calls: only `stat()` of the files it lists;
- otherwise, under a file lock on the volume (several workers download once, the others
  wait), it lists the repo at the revision, keeps only what vLLM loads (top-level config,
  tokenizer, chat template, `*.safetensors` and index; never `original/` or `metal/`),
  repairs files of the wrong size, resumes partial blobs left by a killed download
  (`worker.setup.resume`), downloads the rest with `huggingface_hub`, checks every shard of the
  index against the sizes the Hub reports, and writes the marker.

Errors are `WeightsError`s whose messages name what to fix (`MODEL`, `MODEL_REVISION`,
`HF_TOKEN`) and never contain the token or the Hub's own error text.
`python -m worker weights [MODEL]` pre-fetches onto a volume with the worker's settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from worker.setup.progress import Progress, fmt_bytes
from worker.setup.snapshot import OURS, Snapshot, WeightFile, WeightsError, check

if TYPE_CHECKING:
    from worker.setup.config import Settings

log = logging.getLogger("worker.setup.weights")

def default_cache_dir(settings: Settings, env: Mapping[str, str]) -> Path | None:
    """CACHE_DIR, else RunPod's network volume where it is mounted, else none (the HF default)."""
    if settings.cache_dir:
        return Path(settings.cache_dir)
    if Path("/runpod-volume").is_dir():
        return Path("/runpod-volume/huggingface-cache")
    return None


def default_batch_dir(settings: Settings, env: Mapping[str, str]) -> Path:
    """BATCH_DIR, else beside the weight cache (our folder on the volume), else ~/.cache."""
    if settings.batch_dir:
        return Path(settings.batch_dir)
    cache = default_cache_dir(settings, env)
    if cache is not None:
        return cache / OURS / "batches"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".cache" / "gpt-oss-worker" / "batches"


def cache_env(cache_dir: Path | None) -> dict[str, str]:
    """vLLM, torch inductor and Triton compile caches on the cache volume (none without one)."""
    if cache_dir is None:
        return {}
    root = Path(cache_dir) / OURS / "compile"
    return {
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
        "TRITON_CACHE_DIR": str(root / "triton"),
    }


def ensure_weights(model: str, *, revision: str | None, cache_dir: Path | None,
                   token: str | None, progress: Progress | None,
                   endpoint: str | None = None) -> Path:
    """A complete local snapshot of `model` at `revision` (see the module docstring)."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    cache, repo_dir, marker = _places(model, revision, cache_dir)
    done = _from_marker(marker, repo_dir)
    if done is not None:
        log.info("weights of %s complete in %s (offline, no network)", model, done)
        return done
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only cache: only what is already there can serve
        cached = _cached_without_marker(repo_dir, revision)
        if cached is None:
            raise WeightsError(f"the weight cache {cache} is not writable ({type(exc).__name__})"
                               f" and holds no copy of {model}: fix MODEL_CACHE_DIR") from None
        return cached
    with _locked(marker.with_suffix(".lock"), model, repo_dir, progress):
        done = _from_marker(marker, repo_dir)  # another worker finished while we waited
        if done is not None:
            log.info("weights of %s downloaded by another worker", model)
            return done
        from worker.setup.hub_download import download, drop_orphans, list_snapshot

        try:
            snap = list_snapshot(model, revision, token, endpoint)
        except WeightsError as exc:
            cached = _cached_without_marker(repo_dir, revision) if exc.unreachable else None
            if cached is None:
                raise
            log.warning("%s; using the cached snapshot %s, sizes unchecked", exc.message, cached)
            return cached
        download(snap, repo_dir, cache, token, endpoint, progress)
        bad = check(repo_dir / "snapshots" / snap.commit, snap)
        if bad:
            raise WeightsError(f"download of {model} is incomplete after a retry: {bad[:3]}")
        rev = revision or "main"
        if rev != snap.commit:  # as huggingface_hub does: other tools find it offline too
            (repo_dir / "refs" / rev).parent.mkdir(parents=True, exist_ok=True)
            (repo_dir / "refs" / rev).write_text(snap.commit)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({**asdict(snap), "completed": time.time()}, indent=1))
        os.replace(tmp, marker)
        drop_orphans(repo_dir)
    return repo_dir / "snapshots" / snap.commit


def complete_snapshot(model: str, *, revision: str | None,
                      cache_dir: Path | None) -> Path | None:
    """The local snapshot when the cache already holds a complete, checked copy of `model`
    (a local directory is its own snapshot), else None. Sizes only: no network."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    _, repo_dir, marker = _places(model, revision, cache_dir)
    return _from_marker(marker, repo_dir)


def _places(model: str, revision: str | None, cache_dir: Path | None) -> tuple[Path, Path, Path]:
    """The cache, the repo's folder in it and the completion marker of `revision`."""
    from huggingface_hub import constants

    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    repo_dir = cache / ("models--" + model.replace("/", "--"))
    marker = cache / OURS / "weights" / repo_dir.name / f"{_safe(revision or 'main')}.json"
    return cache, repo_dir, marker


def _cached_without_marker(repo_dir: Path, revision: str | None) -> Path | None:
    """A snapshot put there by other tools (`hf download`), when the Hub cannot be asked."""
    rev = revision or "main"
    ref = repo_dir / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snapshot_dir = repo_dir / "snapshots" / commit
    if (snapshot_dir / "config.json").is_file() and any(snapshot_dir.glob("*.safetensors")):
        return snapshot_dir
    return None


def _from_marker(marker: Path, repo_dir: Path) -> Path | None:
    try:
        raw = json.loads(marker.read_text())
        snap = Snapshot(raw["repo"], raw["commit"], tuple(WeightFile(**f) for f in raw["files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    snapshot_dir = repo_dir / "snapshots" / snap.commit
    try:
        bad = check(snapshot_dir, snap)
    except WeightsError:
        bad = ["<index>"]
    if bad:
        log.warning("cached weights of %s are incomplete (%s): repairing", snap.repo, bad[:3])
        with contextlib.suppress(OSError):
            marker.unlink()
        return None
    return snapshot_dir


@contextlib.contextmanager
def _locked(lock_path: Path, model: str, repo_dir: Path,
            progress: Progress | None) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path))
    t0 = last = time.monotonic()
    while True:
        try:
            lock.acquire(timeout=2.0)
            break
        except Timeout:
            if time.monotonic() - last >= 30:
                last = time.monotonic()
                log.info("waiting %.0fs for another worker downloading %s (%s on disk)",
                         last - t0, model, fmt_bytes(_bytes_on_disk(repo_dir)))
                if progress is not None:
                    progress.line(f"waiting for another worker to download {model} "
                                  f"({fmt_bytes(_bytes_on_disk(repo_dir))} on disk)")
    try:
        yield
    finally:
        lock.release()


def _bytes_on_disk(repo_dir: Path) -> int:
    return sum(p.stat().st_size for p in (repo_dir / "blobs").glob("*") if p.is_file())


def _safe(revision: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", revision)


def main(argv: list[str], env: Mapping[str, str]) -> int:
    """`python -m worker weights [MODEL]`: fetch MODEL onto the cache with the worker's settings."""
    from worker.setup.config import load_settings

    settings = load_settings(env)
    if settings is None:
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = argv[0] if argv else settings.model
    if not model:
        print("error: give MODEL (argument or environment)", file=sys.stderr)
        return 2
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    progress = Progress(settings.show_loading_progress)
    try:
        with progress.phase("download"):
            path = ensure_weights(model, revision=settings.model_revision, token=token,
                                  cache_dir=default_cache_dir(settings, env), progress=progress)
    except WeightsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 3
    print(path)
    return 0

