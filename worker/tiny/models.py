"""Tiny gpt-oss checkpoints (bf16, ~26 M parameters) in the Hugging Face layout vLLM loads.

The architecture is gpt-oss in miniature: 2 layers (sliding then full attention), 4 query
heads over 2 KV heads of width 64 with attention sinks, a 4-expert top-2 MoE, the real
yarn rope settings and the real 201,088-token vocabulary. Weights are written straight to
`model.safetensors` (no model object is built), in the names transformers' `GptOss*` uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

VOCAB_SIZE = 201_088
HIDDEN = 64
INTERMEDIATE = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 64
EXPERTS = 4
EXPERTS_PER_TOKEN = 2
SLIDING_WINDOW = 128
LAYER_TYPES = ("sliding_attention", "full_attention")
ROPE_PARAMETERS: dict[str, Any] = {
    "rope_type": "yarn",
    "rope_theta": 150_000.0,
    "factor": 32.0,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
}
MAX_POSITION_EMBEDDINGS = 131_072
BOS_ID = 199_998  # <|startoftext|>
PAD_ID = 199_999  # <|endoftext|>
RETURN_ID = 200_002  # <|return|>
CALL_ID = 200_012  # <|call|>
EOS_IDS = [RETURN_ID, PAD_ID, CALL_ID]
NOISE_STD = 0.02


def tiny_config_dict() -> dict[str, Any]:
    """config.json contents (no `quantization_config`: the weights are plain bf16)."""
    from transformers import GptOssConfig

    config = GptOssConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        num_local_experts=EXPERTS,
        num_experts_per_tok=EXPERTS_PER_TOKEN,
        sliding_window=SLIDING_WINDOW,
        layer_types=list(LAYER_TYPES),
        rope_parameters=dict(ROPE_PARAMETERS),
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        bos_token_id=BOS_ID,
        eos_token_id=RETURN_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )
    data: dict[str, Any] = config.to_dict()
    data["architectures"] = ["GptOssForCausalLM"]
    data["dtype"] = "bfloat16"
    data["torch_dtype"] = "bfloat16"
    data.pop("quantization_config", None)
    return data


def rope_frequencies() -> tuple[list[float], float]:
    """Per-pair rope frequencies (pair i rotates dims i and i + 32) and yarn's attention
    factor, exactly as transformers computes them for this config."""
    from transformers import GptOssConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    skip = ("architectures", "dtype", "torch_dtype")
    config = GptOssConfig(**{k: v for k, v in tiny_config_dict().items() if k not in skip})
    inv_freq, factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    return [float(x) for x in inv_freq], float(factor)


def generation_config_dict() -> dict[str, Any]:
    """generation_config.json as the real gpt-oss ships it: stop on return, endoftext, call."""
    return {"bos_token_id": BOS_ID, "eos_token_id": list(EOS_IDS), "pad_token_id": PAD_ID}


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, by transformers' GptOss names."""
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (VOCAB_SIZE, HIDDEN),
        "model.norm.weight": (HIDDEN,),
        "lm_head.weight": (VOCAB_SIZE, HIDDEN),
    }
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.sinks": (HEADS,),
            p + "self_attn.q_proj.weight": (q, HIDDEN),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, HIDDEN),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, HIDDEN),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (HIDDEN, q),
            p + "self_attn.o_proj.bias": (HIDDEN,),
            p + "mlp.router.weight": (EXPERTS, HIDDEN),
            p + "mlp.router.bias": (EXPERTS,),
            p + "mlp.experts.gate_up_proj": (EXPERTS, HIDDEN, 2 * INTERMEDIATE),
            p + "mlp.experts.gate_up_proj_bias": (EXPERTS, 2 * INTERMEDIATE),
            p + "mlp.experts.down_proj": (EXPERTS, INTERMEDIATE, HIDDEN),
            p + "mlp.experts.down_proj_bias": (EXPERTS, HIDDEN),
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
        })
    return shapes


def noise_weights(seed: int, std: float = NOISE_STD) -> dict[str, torch.Tensor]:
    """float32 tensors: N(0, std) everywhere, ones for the norms, zeros for the biases."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in weight_shapes().items():
        if name.endswith("norm.weight"):
            out[name] = torch.ones(shape)
        elif name.endswith(("bias", "sinks")):
            out[name] = torch.zeros(shape)
        else:
            out[name] = torch.randn(shape, generator=gen) * std
    return out


def write_checkpoint(dest: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write config.json, generation_config.json and a bf16 model.safetensors to `dest`."""
    import torch
    from safetensors.torch import save_file

    expected = weight_shapes()
    if set(tensors) != set(expected):
        raise ValueError(f"tensor names differ: {sorted(set(tensors) ^ set(expected))}")
    for name, t in tensors.items():
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {expected[name]}")
    dest.mkdir(parents=True, exist_ok=True)
    bf16 = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    save_file(bf16, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(tiny_config_dict(), indent=2) + "\n")
    (dest / "generation_config.json").write_text(
        json.dumps(generation_config_dict(), indent=2) + "\n")


def build_random_model(dest: Path, seed: int = 0) -> None:
    """A tiny gpt-oss with random weights (std 0.02, as transformers initialises): it emits
    gibberish, stray Harmony special tokens included. Tokenizer files are not written here."""
    import torch

    tensors = noise_weights(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for i in range(LAYERS):  # sinks and biases off zero so those code paths see real values
        p = f"model.layers.{i}."
        for name in ("self_attn.sinks", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
                     "self_attn.v_proj.bias", "self_attn.o_proj.bias", "mlp.router.bias",
                     "mlp.experts.gate_up_proj_bias", "mlp.experts.down_proj_bias"):
            tensors[p + name] = torch.randn(tensors[p + name].shape, generator=gen) * NOISE_STD
    write_checkpoint(dest, tensors)
