"""Model shapes the fit planner needs: layers, KV heads, sliding window, weight size.

The two gpt-oss checkpoints are known here (and which one MODEL unset serves); any other
model is described from its config.json (`shape_from_config`) and the size of its safetensors
(`weight_bytes_from_dir`). Pure, apart from reading the files it is pointed at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1024**3

DEFAULT_MAX_POSITIONS = 4096


@dataclass(frozen=True)
class ModelShape:
    """What decides memory: weights on the GPU and KV cache per token and per sequence.

    `weight_bytes` is the whole model's size in GPU memory at tensor-parallel
    size 1 (it divides by TP). `expert_bytes` is the part of it in MoE experts: with
    data parallelism vLLM splits the experts over every GPU (TP x DP) while each
    data-parallel engine keeps its own copy of the rest (0: nothing split, as for a dense
    model). `num_sliding_layers` of the `num_layers` keep only `sliding_window` tokens of
    K/V per sequence; the rest keep them all.
    """

    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    sliding_window: int | None
    num_sliding_layers: int
    max_position_embeddings: int
    weight_bytes: int
    is_mxfp4: bool
    has_attention_sinks: bool = False
    vocab_size: int = 0
    hidden_size: int = 0
    expert_bytes: int = 0

    @property
    def num_full_layers(self) -> int:
        return self.num_layers - self.num_sliding_layers


def dense_bytes(*, layers: int, heads: int, kv_heads: int, head_dim: int, hidden: int,
                vocab: int, experts: int, tied: bool = False) -> int:
    """The bf16 weights outside the experts: attention projections, router, embeddings
    (twice unless tied). Norms and biases are left out (well under 0.1%)."""
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    per_layer = attention + hidden * experts
    return 2 * (layers * per_layer + (1 if tied else 2) * vocab * hidden)


def _gpt_oss_experts(weight_bytes: int, layers: int, experts: int) -> int:
    dense = dense_bytes(layers=layers, heads=64, kv_heads=8, head_dim=64, hidden=2880,
                        vocab=201088, experts=experts)
    return max(0, weight_bytes - dense)


# gpt-oss config.json (both sizes): 64 query heads, 8 KV heads, head_dim 64, hidden
# 2880, vocab 201088, sliding window 128 on every other layer (layer_types starts
# with "sliding_attention"), 131072 positions (YaRN x32 over 4096), attention sinks.
# Weights are what vLLM reports after loading ("Model loading took ... GiB"), measured
# on an H100 with vLLM 0.26 and its Triton MXFP4 MoE (dummy weights, real shapes):
# 61.43 and 13.03 GiB (the checkpoints are 60.8 / 12.8 GiB on disk). Marlin (Ampere,
# Ada) repacks the experts into more memory: see `worker.setup.fit.MARLIN_WEIGHT_FACTOR`.
# Outside the experts (`dense_bytes`): 3.96 and 3.35 GiB.
GPT_OSS_120B = ModelShape(
    name="openai/gpt-oss-120b",
    num_layers=36,
    num_kv_heads=8,
    head_dim=64,
    sliding_window=128,
    num_sliding_layers=18,
    max_position_embeddings=131072,
    weight_bytes=int(61.43 * GiB),
    is_mxfp4=True,
    has_attention_sinks=True,
    vocab_size=201088,
    hidden_size=2880,
    expert_bytes=_gpt_oss_experts(int(61.43 * GiB), 36, 128),
)
GPT_OSS_20B = ModelShape(
    name="openai/gpt-oss-20b",
    num_layers=24,
    num_kv_heads=8,
    head_dim=64,
    sliding_window=128,
    num_sliding_layers=12,
    max_position_embeddings=131072,
    weight_bytes=int(13.03 * GiB),
    is_mxfp4=True,
    has_attention_sinks=True,
    vocab_size=201088,
    hidden_size=2880,
    expert_bytes=_gpt_oss_experts(int(13.03 * GiB), 24, 32),
)

KNOWN_MODELS: dict[str, ModelShape] = {m.name: m for m in (GPT_OSS_120B, GPT_OSS_20B)}
# What MODEL unset serves, on every GPU: one endpoint, one model under one name
# (MODEL=auto picks per GPU instead). gpt-oss-20b fits every 24 GB+ card.
DEFAULT_MODEL = GPT_OSS_20B.name
_EXPERTS = {GPT_OSS_120B.name: 128, GPT_OSS_20B.name: 32}  # num_local_experts


def known_model(model: str) -> ModelShape | None:
    """The catalogued shape for a hub id (case-insensitive), else None."""
    wanted = model.strip().rstrip("/").lower()
    for name, shape in KNOWN_MODELS.items():
        if name.lower() == wanted:
            return shape
    return None


def shape_from_config(config: Mapping[str, Any], weight_bytes: int, name: str = "") -> ModelShape:
    """Describe any decoder from its Hugging Face config.json contents.

    Sliding layers come from `layer_types` when present; otherwise gpt-oss
    alternates (even layers slide), and other models with a `sliding_window`
    (and `use_sliding_window` not false) slide on every layer.
    """
    cfg = dict(config)
    if isinstance(cfg.get("text_config"), Mapping):
        cfg = {**cfg, **cfg["text_config"]}
    num_layers = _first_int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    if num_layers is None:
        raise ValueError("config.json has no num_hidden_layers")
    heads = _first_int(cfg, "num_attention_heads", "n_head")
    kv_heads = _first_int(cfg, "num_key_value_heads", "n_kv_heads") or heads
    hidden = _first_int(cfg, "hidden_size", "n_embd", "d_model") or 0
    head_dim = _first_int(cfg, "head_dim")
    if head_dim is None:
        if not heads or not hidden:
            raise ValueError("config.json has neither head_dim nor hidden_size/num_attention_heads")
        head_dim = hidden // heads
    if kv_heads is None:
        raise ValueError("config.json has no num_key_value_heads or num_attention_heads")

    window = _first_int(cfg, "sliding_window")
    layer_types = cfg.get("layer_types")
    is_gpt_oss = cfg.get("model_type") == "gpt_oss"
    if isinstance(layer_types, list) and layer_types:
        sliding = sum(1 for t in layer_types if t == "sliding_attention")
    elif window and is_gpt_oss:
        sliding = num_layers // 2
    elif window and cfg.get("use_sliding_window", True):
        sliding = num_layers
    else:
        sliding = 0
    if not window:
        sliding = 0

    quant = cfg.get("quantization_config") or {}
    is_mxfp4 = isinstance(quant, Mapping) and str(quant.get("quant_method", "")).lower() == "mxfp4"
    positions = _first_int(cfg, "max_position_embeddings", "n_positions", "max_seq_len")
    experts = _first_int(cfg, "num_local_experts", "num_experts") or 0
    vocab = _first_int(cfg, "vocab_size") or 0
    expert_bytes = 0
    if experts > 1 and weight_bytes and heads and hidden:
        dense = dense_bytes(layers=num_layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                            hidden=hidden, vocab=vocab, experts=experts,
                            tied=bool(cfg.get("tie_word_embeddings")))
        expert_bytes = max(0, int(weight_bytes) - dense)
    return ModelShape(
        name=name or str(cfg.get("_name_or_path") or cfg.get("model_type") or "model"),
        num_layers=num_layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        sliding_window=window or None,
        num_sliding_layers=sliding,
        max_position_embeddings=positions or DEFAULT_MAX_POSITIONS,
        weight_bytes=int(weight_bytes),
        is_mxfp4=is_mxfp4,
        has_attention_sinks=is_gpt_oss,
        vocab_size=vocab,
        hidden_size=hidden,
        expert_bytes=expert_bytes,
    )


def weight_bytes_from_dir(path: str | Path) -> int:
    """Sum of the *.safetensors files in a model folder (links followed, as in the HF cache)."""
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))


def shape_from_dir(path: str | Path, name: str = "") -> ModelShape:
    """Read `<path>/config.json` and size the weights next to it. A folder with no weights
    (a config for `LOAD_FORMAT=dummy`, see `worker.tiny.shapes`) that has a catalogued
    model's shape gets that model's loaded size."""
    folder = Path(path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    size = weight_bytes_from_dir(folder) or catalog_weight_bytes(config)
    return shape_from_config(config, size, name=name or str(folder))


def catalog_weight_bytes(config: Mapping[str, Any]) -> int:
    """The loaded size of the catalogued model whose shape `config` has, else 0."""
    try:
        shape = shape_from_config(config, 0)
    except ValueError:
        return 0
    experts = config.get("num_local_experts")
    for known in KNOWN_MODELS.values():
        same = (shape.num_layers, shape.num_kv_heads, shape.head_dim, shape.hidden_size,
                shape.vocab_size, shape.is_mxfp4) == (
            known.num_layers, known.num_kv_heads, known.head_dim, known.hidden_size,
            known.vocab_size, known.is_mxfp4)
        if same and experts == _EXPERTS.get(known.name):
            return known.weight_bytes
    return 0


def _first_int(cfg: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
    return None
