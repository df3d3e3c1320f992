"""The shape of any gpt-oss checkpoint on the Hub, read before its weights are downloaded.

The catalog knows `openai/gpt-oss-120b` and `openai/gpt-oss-20b`. For any other repo (a
fine-tune, a bf16 copy, a private or gated repo) `describe` reads its `config.json` and
`model.safetensors.index.json` (the weight size): from the cache when a copy is there (no
network, so offline starts work), else from the Hub (two small files, kept in the cache for
the download that follows; a repo without an index is sized from the Hub's file listing).
It refuses a repo that is not a gpt-oss architecture, naming `MODEL`, and returns the
`ModelShape` the planner needs. Hub errors are `WeightsError`s naming what to fix
(`MODEL`, `MODEL_REVISION`, `HF_TOKEN`), never the token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.setup.cache_layout import layout_for, repo_folder, snapshot_dir, writable
from worker.setup.config import SettingsError
from worker.setup.models_catalog import ModelShape, catalog_weight_bytes, shape_from_config
from worker.setup.snapshot import INDEX, WeightsError

log = logging.getLogger(__name__)

GPT_OSS_MODEL_TYPES = frozenset({"gpt_oss"})
GPT_OSS_ARCHITECTURES = frozenset({"GptOssForCausalLM"})


def is_gpt_oss(config: Mapping[str, Any]) -> bool:
    archs = config.get("architectures")
    return (config.get("model_type") in GPT_OSS_MODEL_TYPES
            or (isinstance(archs, list) and bool(GPT_OSS_ARCHITECTURES & set(map(str, archs)))))


def require_gpt_oss(config: Mapping[str, Any], model: str) -> None:
    """A start-up error naming MODEL when `config` is not a gpt-oss architecture."""
    if not is_gpt_oss(config):
        kind = config.get("model_type") or "unknown"
        archs = config.get("architectures") or []
        raise SettingsError(
            f"MODEL={model} is not a gpt-oss checkpoint (model_type {kind!r}, architectures "
            f"{list(archs)}): this worker serves gpt-oss models only (model_type 'gpt_oss', "
            "GptOssForCausalLM); set MODEL to one")


def describe(model: str, *, revision: str | None, cache_dir: Path | None, token: str | None,
             endpoint: str | None = None, others: tuple[Path, ...] | None = None,
             offline: bool = False) -> ModelShape | None:
    """The planner's shape of the Hub repo `model` (see the module docstring). With
    `offline`, only the cache is read and None means it holds no copy."""
    found = read_config(model, revision=revision, cache_dir=cache_dir, token=token,
                        endpoint=endpoint, others=others, offline=offline)
    if found is None:
        return None
    config, weight_bytes = found
    try:
        return shape_from_config(config, max(weight_bytes, catalog_weight_bytes(config)),
                                 name=model)
    except ValueError as exc:
        raise SettingsError(f"MODEL={model}: its config.json cannot be planned: {exc}") from None


def read_config(model: str, *, revision: str | None, cache_dir: Path | None,
                token: str | None, endpoint: str | None = None,
                others: tuple[Path, ...] | None = None,
                offline: bool = False) -> tuple[dict[str, Any], int] | None:
    """config.json of a gpt-oss repo and its weight size (bytes), from the cache, else from
    the Hub (never with `offline`: None then). Refuses a repo that is not gpt-oss."""
    cached = _from_cache(model, revision, cache_dir, others)
    if cached is None and offline:
        return None
    if cached is not None:
        config, weight_bytes, where = cached
        log.info("MODEL=%s: config.json from the cache (%s)", model, where)
    else:
        config, weight_bytes = _from_hub(model, revision, cache_dir, token, endpoint)
        log.info("MODEL=%s: config.json and weight size from the Hub", model)
    require_gpt_oss(config, model)
    return config, weight_bytes


def _from_cache(model: str, revision: str | None, cache_dir: Path | None,
                others: tuple[Path, ...] | None) -> tuple[dict[str, Any], int, Path] | None:
    """config.json and the weight size from a snapshot on disk (complete or not), if any."""
    for _, repo_dir in layout_for(cache_dir, others).repo_dirs(model):
        snap = snapshot_dir(repo_dir, revision)
        if snap is None or not (snap / "config.json").is_file():
            continue
        try:
            config = json.loads((snap / "config.json").read_text(encoding="utf-8"))
            size = _index_size(snap / INDEX) or sum(
                p.stat().st_size for p in snap.glob("*.safetensors"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and size:
            return config, size, snap
    return None


def _from_hub(model: str, revision: str | None, cache_dir: Path | None, token: str | None,
              endpoint: str | None) -> tuple[dict[str, Any], int]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    from worker.setup.hub_download import explain, list_snapshot

    hub = layout_for(cache_dir, ()).hub
    if not writable(hub / repo_folder(model)):
        raise WeightsError(f"the weight cache {hub} is not writable and holds no copy of "
                           f"{model}: fix MODEL_CACHE_DIR")

    def fetch(name: str) -> Path | None:
        try:
            return Path(hf_hub_download(model, name, revision=revision, cache_dir=hub,
                                        token=token, endpoint=endpoint))
        except EntryNotFoundError as exc:
            if isinstance(exc, LocalEntryNotFoundError):  # offline, not a missing file
                raise explain(exc, model, revision, token) from None
            return None
        except Exception as exc:
            raise explain(exc, model, revision, token) from None

    config_path = fetch("config.json")
    if config_path is None:
        raise SettingsError(f"MODEL={model} has no config.json at revision "
                            f"{revision or 'main'}: not a checkpoint vLLM can load")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SettingsError(f"MODEL={model}: its config.json is not valid JSON") from None
    if not isinstance(config, dict):
        raise SettingsError(f"MODEL={model}: its config.json is not a JSON object")
    require_gpt_oss(config, model)  # before fetching anything more of a wrong repo
    index = fetch(INDEX)
    size = _index_size(index) if index is not None else 0
    if not size:
        snap = list_snapshot(model, revision, token, endpoint)
        size = sum(f.size for f in snap.files if f.path.endswith(".safetensors"))
    return config, size


def _index_size(index: Path) -> int:
    """`metadata.total_size` of a safetensors index (0 when it has none)."""
    try:
        raw = json.loads(index.read_text(encoding="utf-8"))
        size = raw.get("metadata", {}).get("total_size", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return int(size) if isinstance(size, int | float) and not isinstance(size, bool) else 0
