"""Tiny gpt-oss checkpoints built on the fly, offline, for tests and GPU-less runs.

`ensure_tiny_model("random", cache)` gives a random-weight model (gibberish, stray Harmony
specials); `ensure_tiny_model("scripted", cache)` gives one whose greedy output is valid
Harmony chosen from the prompt (see `worker.tiny.scripted`). Both load in vLLM (bf16) and
transformers. `ensure_tiny_model("random-mxfp4", cache)` gives a random model in the real
gpt-oss MXFP4 checkpoint format (hidden 1024, ~840 MB; see `worker.tiny.mxfp4`): vLLM runs it
on a GPU only, transformers dequantises it on any device. `ensure_tiny_model("shape-20b", cache)`
(or `shape-120b`) is not tiny: gpt-oss's real config with no weights, for `LOAD_FORMAT=dummy`
(see `worker.tiny.shapes`); `weights-20b` adds random weights at the real size (~13 GiB), to
time weight loading (see `worker.tiny.weights`). Importing this package is instant:
torch, transformers and openai_harmony load inside the functions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from worker.tiny.tokenizer import build_tokenizer

__all__ = ["KINDS", "TOKENIZER_DIRNAME", "build_tokenizer", "ensure_tiny_model", "model_dirname"]

Kind = Literal["random", "scripted", "random-mxfp4", "shape-20b", "shape-120b", "weights-20b"]
KINDS: tuple[Kind, ...] = ("random", "scripted", "random-mxfp4", "shape-20b", "shape-120b",
                           "weights-20b")
VERSION = "v1"
TOKENIZER_DIRNAME = f"tiny-o200k-tokenizer-{VERSION}"


def model_dirname(kind: Kind) -> str:
    return f"tiny-gpt-oss-{kind}-{VERSION}"


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` and rename tmp to `target`, once across threads and processes."""
    from filelock import FileLock

    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            with contextlib.suppress(OSError):  # mkdtemp makes 0700; safetensors writes 0600
                tmp.chmod(0o755)
                for item in tmp.iterdir():
                    item.chmod(0o644)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _ensure_tokenizer(cache_dir: Path) -> Path:
    return _build_once(cache_dir / TOKENIZER_DIRNAME, build_tokenizer)


def ensure_tiny_model(kind: Kind, cache_dir: Path) -> Path:
    """Build `<cache_dir>/tiny-gpt-oss-<kind>-v1/` unless it exists; return that directory.

    It holds config.json, generation_config.json, model.safetensors and the tokenizer files.
    Safe to call from several processes at once: one builds, the others wait and reuse it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    cache_dir = Path(cache_dir)
    target = cache_dir / model_dirname(kind)
    if target.is_dir():
        return target

    def build(tmp: Path) -> None:
        tokenizer = _ensure_tokenizer(cache_dir)
        for item in tokenizer.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        if kind == "random":
            from worker.tiny.models import build_random_model

            build_random_model(tmp)
        elif kind in ("shape-20b", "shape-120b"):
            from worker.tiny.shapes import build_shape_model

            build_shape_model(tmp, kind)
        elif kind == "weights-20b":
            from worker.tiny.weights import build_weights_model

            build_weights_model(tmp, kind)
        elif kind == "random-mxfp4":
            from worker.tiny.mxfp4 import build_random_mxfp4_model

            build_random_mxfp4_model(tmp)
        else:
            from worker.tiny.scripted import build_scripted_model

            build_scripted_model(tmp)

    return _build_once(target, build)
