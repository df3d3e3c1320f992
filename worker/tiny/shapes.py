"""gpt-oss at its real sizes, config only: serve it with `LOAD_FORMAT=dummy` (random weights).

`python -m worker.tiny --kind shape-20b` (or `shape-120b`) writes the public gpt-oss config.json
(24 / 36 layers, 32 / 128 experts, top-4, hidden and intermediate 2880, 64 query heads over 8 KV
heads of width 64, sliding window 128 on alternate layers starting with sliding, YaRN x32 over
4096, swiglu limit 7.0, MXFP4 experts), generation_config.json and the offline tokenizer, and no
weights. vLLM builds the model at that shape with random weights from the config alone, so it
costs what gpt-oss costs per token and per start, while its output is noise. The fit planner
sizes its weights from the catalogue (`worker.setup.models_catalog`), as there are no files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.tiny.models import generation_config_dict
from worker.tiny.mxfp4 import mxfp4_config_dict

# What differs between the two public configs; everything else is shared.
SHAPES: dict[str, dict[str, int]] = {
    "shape-20b": {"num_hidden_layers": 24, "num_local_experts": 32},
    "shape-120b": {"num_hidden_layers": 36, "num_local_experts": 128},
}
COMMON: dict[str, int] = {
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "experts_per_token": 4,
    "num_experts_per_tok": 4,
}
NOISE_NOTE = ("Config only: serve with LOAD_FORMAT=dummy. The weights are random, so every "
              "answer is noise; what is real is the cost per token and per start.\n")


def shape_config_dict(kind: str) -> dict[str, Any]:
    """config.json of openai/gpt-oss-20b or -120b (`kind` shape-20b / shape-120b)."""
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}: use one of {', '.join(SHAPES)}")
    config = {**mxfp4_config_dict(), **COMMON, **SHAPES[kind]}
    layers = config["num_hidden_layers"]
    config["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                             for i in range(layers)]
    return config


def build_shape_model(dest: Path, kind: str) -> None:
    """Write config.json, generation_config.json and a README (no weights) to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(shape_config_dict(kind), indent=2) + "\n")
    (dest / "generation_config.json").write_text(
        json.dumps(generation_config_dict(), indent=2) + "\n")
    (dest / "README.md").write_text(f"# gpt-oss {kind.removeprefix('shape-')}, shape only\n\n"
                                    + NOISE_NOTE)
