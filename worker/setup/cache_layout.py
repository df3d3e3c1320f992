"""Where a model's weights may already be on disk, and where ours go.

The weight cache is the standard Hugging Face layout under `hub/` (what RunPod's Cached
Models, worker-vllm and `hf download` use): `$CACHE/hub/models--ORG--NAME/{blobs,snapshots,
refs}`. Earlier versions of this worker kept the repos directly in `$CACHE`
(`$CACHE/models--ORG--NAME`); a volume filled that way is still found and used in place.
Our own files (completion markers, locks, compile caches) stay in `$CACHE/.gpt-oss-worker`.

`CacheLayout.repo_dirs` is the search order: the `hub/` layout, the old layout, then other
Hugging Face caches that may hold a copy (RunPod's Cached Models mount when the cache is set
elsewhere). Pure apart from reading the folders it is pointed at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from worker.setup.snapshot import INDEX, OURS

# RunPod's Cached Models (Hugging Face layout, managed by RunPod, possibly read-only).
RUNPOD_CACHED_MODELS = Path("/runpod-volume/huggingface-cache/hub")


@dataclass(frozen=True)
class CacheLayout:
    root: Path  # $CACHE: our folder is root / OURS
    hub: Path  # where downloads go: hub / models--ORG--NAME
    legacy: Path | None = None  # the old layout: legacy / models--ORG--NAME
    others: tuple[Path, ...] = ()  # other Hugging Face caches searched, never written

    def repo_dirs(self, model: str) -> list[tuple[str, Path]]:
        """(where, repo folder) in search order; `where` names the layout for the logs."""
        name = repo_folder(model)
        out = [("hub", self.hub / name)]
        if self.legacy is not None:
            out.append(("old layout", self.legacy / name))
        out += [("other cache", other / name) for other in self.others]
        unique: list[tuple[str, Path]] = []
        for where, repo_dir in out:
            if all(repo_dir != d for _, d in unique):
                unique.append((where, repo_dir))
        return unique

    def marker(self, model: str, revision: str | None) -> Path:
        """Our completion marker for `model` at `revision`."""
        name = f"{safe(revision or 'main')}.json"
        return self.root / OURS / "weights" / repo_folder(model) / name

    def found(self, model: str, revision: str | None) -> list[tuple[str, Path, Path]]:
        """(where, repo folder, snapshot) for each copy on disk that looks complete (sizes
        unchecked: config.json and every shard the index names, or a `*.safetensors`)."""
        out = []
        for where, repo_dir in self.repo_dirs(model):
            snap = snapshot_dir(repo_dir, revision)
            if snap is not None and looks_complete(snap):
                out.append((where, repo_dir, snap))
        return out


def layout_for(cache_dir: Path | None, others: tuple[Path, ...] | None = None) -> CacheLayout:
    """The layout of `cache_dir` (MODEL_CACHE_DIR or RunPod's volume), else the Hugging Face
    default (`HF_HUB_CACHE`, already a `hub/` folder). A `cache_dir` named `hub` is taken as
    the hub folder itself."""
    if others is None:
        others = (RUNPOD_CACHED_MODELS,) if RUNPOD_CACHED_MODELS.is_dir() else ()
    if cache_dir is None:
        from huggingface_hub import constants

        hub = Path(constants.HF_HUB_CACHE)
        return CacheLayout(root=hub, hub=hub, others=others)
    cache = Path(cache_dir)
    if cache.name == "hub":
        return CacheLayout(root=cache, hub=cache, others=others)
    return CacheLayout(root=cache, hub=cache / "hub", legacy=cache, others=others)


def repo_folder(model: str) -> str:
    return "models--" + model.replace("/", "--")


def safe(revision: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in revision)


def snapshot_dir(repo_dir: Path, revision: str | None) -> Path | None:
    """The snapshot folder of `revision` (a ref such as `main`, or a commit), if there is one.
    With no revision and no `refs/main`, a repo holding a single snapshot gives that one."""
    rev = revision or "main"
    ref = repo_dir / "refs" / rev
    try:
        commit = ref.read_text().strip() if ref.is_file() else rev
    except OSError:
        return None
    snap = repo_dir / "snapshots" / commit
    if snap.is_dir():
        return snap
    if revision is None:
        try:
            snaps = [p for p in (repo_dir / "snapshots").iterdir() if p.is_dir()]
        except OSError:
            return None
        if len(snaps) == 1:
            return snaps[0]
    return None


def looks_complete(snap: Path) -> bool:
    """config.json, and every shard the index names (or a single `*.safetensors`), present
    and not empty. No sizes to compare against: a cache filled by other tools."""
    import json

    if not (snap / "config.json").is_file():
        return False
    index = snap / INDEX
    try:
        if index.is_file():
            shards = set(json.loads(index.read_text())["weight_map"].values())
            return bool(shards) and all(
                (snap / s).is_file() and (snap / s).stat().st_size > 0 for s in shards)
        return any(p.is_file() and p.stat().st_size > 0 for p in snap.glob("*.safetensors"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def writable(path: Path) -> bool:
    """Whether we may write under `path` (its nearest existing ancestor): false on a
    read-only mount or without permission."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
