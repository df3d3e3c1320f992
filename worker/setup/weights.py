"""Model weights on the cache volume: download once, check, then load offline.

`ensure_weights(model, ...)` returns a local snapshot directory for vLLM to load by path:

- a local directory is returned as it is;
- the cache is the Hugging Face layout under `$CACHE/hub` (`worker.setup.cache_layout`);
  a copy in the old layout (`$CACHE/models--…`) or in RunPod's Cached Models is found too,
  and a read-only copy is loaded in place, never written to;
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
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from worker.setup.cache_layout import CacheLayout, layout_for, repo_folder, writable
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
                   endpoint: str | None = None,
                   others: tuple[Path, ...] | None = None) -> Path:
    """A complete local snapshot of `model` at `revision` (see the module docstring).
    `others`: further Hugging Face caches to search (default: RunPod's Cached Models)."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    layout = layout_for(cache_dir, others)
    marker = layout.marker(model, revision)
    done = _from_marker(marker, layout, model)
    if done is not None:
        log.info("weights of %s complete in %s (offline, no network)", model, done)
        return done
    found = layout.found(model, revision)
    for where, repo_dir, copy in found:
        if not writable(repo_dir):  # RunPod's Cached Models: theirs, loaded in place
            log.info("weights of %s found in %s (%s, read-only): loading them in place, "
                     "sizes unchecked", model, copy, where)
            return copy
    target = found[0][1] if found else _download_dir(layout, model)
    if not (writable(marker.parent) and writable(target)):
        raise WeightsError(f"the weight cache {layout.hub} is not writable and holds no copy "
                           f"of {model}: fix MODEL_CACHE_DIR")
    if found and found[0][0] != "hub":
        log.info("weights of %s found in the %s %s: using them there (new downloads go to %s)",
                 model, found[0][0], target, layout.hub)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot write to the weight cache {layout.root} "
                           f"({type(exc).__name__}): fix MODEL_CACHE_DIR") from None
    with _locked(marker.with_suffix(".lock"), model, target, progress):
        done = _from_marker(marker, layout, model)  # another worker finished while we waited
        if done is not None:
            log.info("weights of %s downloaded by another worker", model)
            return done
        from worker.setup.hub_download import download, drop_orphans, list_snapshot

        try:
            snap = list_snapshot(model, revision, token, endpoint)
        except WeightsError as exc:
            if not found:
                raise
            log.warning("%s; using the cached snapshot %s, sizes unchecked", exc.message,
                        found[0][2])
            return found[0][2]
        download(snap, target, target.parent, token, endpoint, progress)
        bad = check(target / "snapshots" / snap.commit, snap)
        if bad:
            raise WeightsError(f"download of {model} is incomplete after a retry: {bad[:3]}")
        ref = target / "refs" / (revision or "main")
        if ref.name != snap.commit and _read(ref) != snap.commit:
            # as huggingface_hub does: other tools find the revision offline too
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(snap.commit)
        tmp = marker.with_suffix(".tmp")
        where = os.path.relpath(target, layout.root) if target.is_relative_to(layout.root) \
            else str(target)
        tmp.write_text(json.dumps({**asdict(snap), "dir": where, "completed": time.time()},
                                  indent=1))
        os.replace(tmp, marker)
        drop_orphans(target)
    return target / "snapshots" / snap.commit


def complete_snapshot(model: str, *, revision: str | None, cache_dir: Path | None,
                      others: tuple[Path, ...] | None = None) -> Path | None:
    """The local snapshot when the cache already holds a complete, checked copy of `model`
    (or a read-only copy that is used as it is; a local directory is its own snapshot),
    else None. No network."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    layout = layout_for(cache_dir, others)
    done = _from_marker(layout.marker(model, revision), layout, model)
    if done is not None:
        return done
    return next((snap for _, repo_dir, snap in layout.found(model, revision)
                 if not writable(repo_dir)), None)


def _download_dir(layout: CacheLayout, model: str) -> Path:
    """The `hub/` layout, unless a download under the old layout is under way (resume it)."""
    hub = layout.hub / repo_folder(model)
    if layout.legacy is not None and not hub.exists():
        old = layout.legacy / repo_folder(model)
        if (old / "blobs").is_dir():
            return old
    return hub


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _from_marker(marker: Path, layout: CacheLayout, model: str) -> Path | None:
    """The snapshot our marker names when every file it lists is there with its size.
    Markers written before the `hub/` layout have no `dir`: their repo is in the old place."""
    try:
        raw = json.loads(marker.read_text())
        snap = Snapshot(raw["repo"], raw["commit"], tuple(WeightFile(**f) for f in raw["files"]))
        repo_dir = layout.root / raw["dir"] if "dir" in raw \
            else (layout.legacy or layout.hub) / repo_folder(model)
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


def main(argv: list[str], env: Mapping[str, str]) -> int:
    """`python -m worker weights [MODEL]`: fetch MODEL onto the cache with the worker's settings:
    a repo the catalog does not know has its config.json read and checked first, as at start."""
    from worker.setup.config import SettingsError, load_settings
    from worker.setup.models_catalog import DEFAULT_MODEL, known_model

    settings = load_settings(env)
    if settings is None:
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = argv[0] if argv else settings.model or DEFAULT_MODEL
    if model.lower() == "auto":
        print("error: MODEL=auto depends on the GPU: name the model to fetch", file=sys.stderr)
        return 2
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    cache = default_cache_dir(settings, env)
    progress = Progress(settings.show_loading_progress)
    try:
        if known_model(model) is None and not Path(model).expanduser().is_dir():
            from worker.setup.checkpoint import read_config

            read_config(model, revision=settings.model_revision, token=token, cache_dir=cache)
        with progress.phase("download"):
            path = ensure_weights(model, revision=settings.model_revision, token=token,
                                  cache_dir=cache, progress=progress)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WeightsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 3
    print(path)
    return 0
