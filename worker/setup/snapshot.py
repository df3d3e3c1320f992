"""A model snapshot on the volume: which files vLLM needs, and whether they are all there.

Shared by the download (`hub_download`) and the start-up check (`weights`).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from worker.openai.errors import WorkerError

# Top-level files vLLM reads; sub-folders (gpt-oss: original/, metal/) are never fetched.
NEEDED = ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
          "tokenizer*", "special_tokens_map.json", "chat_template*", "*.tiktoken")
INDEX = "model.safetensors.index.json"
OURS = ".gpt-oss-worker"  # our folder inside the cache: markers, locks, compile caches


class WeightsError(WorkerError):
    """The model's weights cannot be made available; the message says what to fix."""

    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message, code="weights_unavailable")
        self.unreachable = unreachable  # the Hub could not be asked (offline, network, 5xx)


@dataclass(frozen=True)
class WeightFile:
    path: str  # relative to the repo root
    size: int  # bytes, as the Hub reports them
    blob: str  # name in the cache's blobs/ folder: LFS sha256, else the git blob id


@dataclass(frozen=True)
class Snapshot:
    repo: str
    commit: str
    files: tuple[WeightFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def needed(path: str) -> bool:
    return "/" not in path and any(fnmatch.fnmatch(path, p) for p in NEEDED)


def check(snapshot_dir: Path, snap: Snapshot) -> list[str]:
    """Files missing or of the wrong size, or shards the index names but the repo lacks."""
    bad = []
    for f in snap.files:
        p = snapshot_dir / f.path
        if not p.is_file() or p.stat().st_size != f.size:
            bad.append(f.path)
    names = {f.path for f in snap.files}
    index = snapshot_dir / INDEX
    if INDEX in names and INDEX not in bad:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return [*bad, INDEX]
        missing = sorted(shards - names)
        if missing:
            raise WeightsError(f"{snap.repo}@{snap.commit[:12]}: the index names shards the "
                               f"repo does not have: {missing[:3]}")
    elif INDEX not in names and not any(n.endswith(".safetensors") for n in names):
        raise WeightsError(f"{snap.repo}@{snap.commit[:12]} has no top-level *.safetensors "
                           "weights: vLLM cannot load it")
    return bad
