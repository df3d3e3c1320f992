"""A tiny random gpt-oss in the real gpt-oss checkpoint format: MXFP4 experts, bf16 elsewhere.

Like openai/gpt-oss-20b's safetensors, each layer's MoE experts are stored as
`mlp.experts.{gate_up,down}_proj_blocks` (uint8 `[E, out, in/32, 16]`: 32-element blocks of
e2m1 nibbles, element 2j in the low nibble of byte j, 2j+1 in the high one) plus
`..._scales` (uint8 `[E, out, in/32]`, e8m0: the block's scale is 2**(byte - 127)), with bf16
`..._bias`; `gate_up` rows interleave gate (even) and up (odd) as transformers' `GptOssExperts`
does. This is the layout transformers' `integrations/mxfp4.py` dequantises and vLLM's
`gpt_oss.py` mxfp4 loader reads. config.json is the real one's fields at tiny sizes, with
`quantization_config = {"quant_method": "mxfp4", "modules_to_not_convert": [...]}`.

Hidden and intermediate size are 1024: vLLM's Triton MXFP4 MoE kernel on Hopper needs
`BLOCK_N % 128 == 0` and fails at 64. With the real 201,088-token vocabulary the embedding and
lm_head alone take ~824 MB (the checkpoint is ~840 MB), so build it where it is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.tiny.models import (
    EXPERTS,
    EXPERTS_PER_TOKEN,
    HEAD_DIM,
    LAYER_TYPES,
    LAYERS,
    MAX_POSITION_EMBEDDINGS,
    NOISE_STD,
    PAD_ID,
    RETURN_ID,
    ROPE_PARAMETERS,
    SLIDING_WINDOW,
    VOCAB_SIZE,
    generation_config_dict,
)

if TYPE_CHECKING:
    import torch

HIDDEN = 1024
INTERMEDIATE = 1024
HEADS = 8  # like gpt-oss, HEADS * HEAD_DIM (512) != HIDDEN
KV_HEADS = 2
BLOCK = 32  # MXFP4 elements per shared scale
SCALE_BIAS = 127  # e8m0
# e2m1 magnitudes by code 0-7; code | 8 is the negative (as transformers' FP4_VALUES).
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
MODULES_TO_NOT_CONVERT = [
    "model.layers.*.self_attn",
    "model.layers.*.mlp.router",
    "model.embed_tokens",
    "lm_head",
]
EXPERT_PROJS = ("gate_up_proj", "down_proj")


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise `w` `[..., K]` along its last dim: (blocks uint8 `[..., K/32, 16]`, scales
    uint8 `[..., K/32]`). Each block's scale is the smallest power of two that brings its
    largest magnitude within 6 (the largest e2m1 value); values round to the nearest e2m1
    grid point (ties toward zero)."""
    import torch

    *prefix, k = w.shape
    if k % BLOCK:
        raise ValueError(f"last dim {k} is not a multiple of {BLOCK}")
    x = w.detach().float().contiguous().reshape(*prefix, k // BLOCK, BLOCK)
    amax = x.abs().amax(dim=-1, keepdim=True)
    exp = torch.ceil(torch.log2(amax / E2M1[-1])).clamp(-SCALE_BIAS, SCALE_BIAS)  # 0 -> -127
    scaled = x / torch.exp2(exp)
    grid = torch.tensor(E2M1)
    code = torch.bucketize(scaled.abs(), (grid[1:] + grid[:-1]) / 2)  # 0..7, saturates at 6
    code = code | (((scaled < 0) & (code > 0)).long() << 3)
    packed = (code[..., 0::2] | (code[..., 1::2] << 4)).to(torch.uint8)
    scales = (exp.squeeze(-1) + SCALE_BIAS).to(torch.uint8)
    return packed.contiguous(), scales.contiguous()


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_mxfp4`: float32 `[..., K]` (exact: e2m1 times a power of two)."""
    import torch

    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError("MXFP4 blocks and scales are uint8")
    if tuple(blocks.shape[:-1]) != tuple(scales.shape) or blocks.shape[-1] != BLOCK // 2:
        raise ValueError(f"blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    lut = torch.tensor(E2M1 + tuple(-v for v in E2M1))
    b = blocks.long()
    values = torch.stack((lut[b & 0x0F], lut[b >> 4]), dim=-1).flatten(-2)  # [..., G, 32]
    values = values * torch.exp2(scales.float() - SCALE_BIAS).unsqueeze(-1)
    return values.flatten(-2)


def mxfp4_config_dict() -> dict[str, Any]:
    """config.json: openai/gpt-oss-20b's fields (legacy `rope_scaling` + `rope_theta`,
    `quantization_config`) at the tiny sizes. Written by hand, not by `GptOssConfig`, so it is
    the same whatever transformers builds it."""
    rope = {k: v for k, v in ROPE_PARAMETERS.items() if k != "rope_theta"}
    return {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": RETURN_ID,
        "experts_per_token": EXPERTS_PER_TOKEN,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initial_context_length": rope["original_max_position_embeddings"],
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_types": list(LAYER_TYPES),
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "model_type": "gpt_oss",
        "num_attention_heads": HEADS,
        "num_experts_per_tok": EXPERTS_PER_TOKEN,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "num_local_experts": EXPERTS,
        "output_router_logits": False,
        "pad_token_id": PAD_ID,
        "quantization_config": {
            "modules_to_not_convert": list(MODULES_TO_NOT_CONVERT),
            "quant_method": "mxfp4",
        },
        "rms_norm_eps": 1e-05,
        "rope_scaling": rope,
        "rope_theta": ROPE_PARAMETERS["rope_theta"],
        "router_aux_loss_coef": 0.9,
        "sliding_window": SLIDING_WINDOW,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "transformers_version": "4.55.0.dev0",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    }


def expert_shapes(config: dict[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """The unquantised expert weights, per layer, as transformers' `GptOssExperts` holds them
    (`[E, in, out]`; the checkpoint stores their transpose). `config`: a gpt-oss config.json
    (default: this module's tiny one)."""
    c = config or mxfp4_config_dict()
    e, h, i = c["num_local_experts"], c["hidden_size"], c["intermediate_size"]
    return {"gate_up_proj": (e, h, 2 * i), "down_proj": (e, i, h)}


def checkpoint_layout(config: dict[str, Any] | None = None
                      ) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor of a gpt-oss MXFP4 checkpoint with `config` (default: this module's tiny
    one): name -> (shape, dtype name)."""
    c = config or mxfp4_config_dict()
    hidden, heads, experts = c["hidden_size"], c["num_attention_heads"], c["num_local_experts"]
    q, kv = heads * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    vocab = c["vocab_size"]
    bf16, u8 = "bfloat16", "uint8"
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "model.embed_tokens.weight": ((vocab, hidden), bf16),
        "model.norm.weight": ((hidden,), bf16),
        "lm_head.weight": ((vocab, hidden), bf16),
    }
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({
            p + "input_layernorm.weight": ((hidden,), bf16),
            p + "post_attention_layernorm.weight": ((hidden,), bf16),
            p + "self_attn.sinks": ((heads,), bf16),
            p + "self_attn.q_proj.weight": ((q, hidden), bf16),
            p + "self_attn.q_proj.bias": ((q,), bf16),
            p + "self_attn.k_proj.weight": ((kv, hidden), bf16),
            p + "self_attn.k_proj.bias": ((kv,), bf16),
            p + "self_attn.v_proj.weight": ((kv, hidden), bf16),
            p + "self_attn.v_proj.bias": ((kv,), bf16),
            p + "self_attn.o_proj.weight": ((hidden, q), bf16),
            p + "self_attn.o_proj.bias": ((hidden,), bf16),
            p + "mlp.router.weight": ((experts, hidden), bf16),
            p + "mlp.router.bias": ((experts,), bf16),
        })
        for proj, (e, k, n) in expert_shapes(c).items():
            out[p + f"mlp.experts.{proj}_blocks"] = ((e, n, k // BLOCK, BLOCK // 2), u8)
            out[p + f"mlp.experts.{proj}_scales"] = ((e, n, k // BLOCK), u8)
            out[p + f"mlp.experts.{proj}_bias"] = ((e, n), bf16)
    return out


def random_expert_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 expert weights N(0, NOISE_STD) before quantisation, by transformers' names
    (`model.layers.N.mlp.experts.gate_up_proj` `[E, H, 2I]`, `...down_proj` `[E, I, H]`)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 2)
    return {f"model.layers.{i}.mlp.experts.{proj}": torch.randn(shape, generator=gen) * NOISE_STD
            for i in range(LAYERS) for proj, shape in expert_shapes().items()}


def build_random_mxfp4_model(dest: Path, seed: int = 0) -> None:
    """Write config.json, generation_config.json and model.safetensors (MXFP4 experts from
    `random_expert_weights(seed)`, everything else bf16 noise) to `dest`. Tokenizer files are
    not written here."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, (shape, _) in checkpoint_layout().items():
        if ".mlp.experts." in name:  # below
            continue
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:  # weights, attention biases, sinks, router: small noise (none exactly zero)
            tensors[name] = torch.randn(shape, generator=gen, dtype=torch.bfloat16) * NOISE_STD
    for name, w in random_expert_weights(seed).items():
        # [E, in, out] -> [E, out, in]: the checkpoint blocks the input (contraction) dim.
        tensors[name + "_blocks"], tensors[name + "_scales"] = quantize_mxfp4(w.transpose(1, 2))
        shape = (w.shape[0], w.shape[2])
        tensors[name + "_bias"] = (torch.randn(shape, generator=gen) * NOISE_STD).bfloat16()

    layout = checkpoint_layout()
    for name, t in tensors.items():
        shape, dtype = layout[name]
        if tuple(t.shape) != shape or str(t.dtype) != f"torch.{dtype}":
            raise AssertionError(f"{name}: {tuple(t.shape)} {t.dtype}, expected {shape} {dtype}")
    if set(tensors) != set(layout):
        raise AssertionError(f"tensor names differ: {sorted(set(tensors) ^ set(layout))}")

    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(mxfp4_config_dict(), indent=2) + "\n")
    (dest / "generation_config.json").write_text(
        json.dumps(generation_config_dict(), indent=2) + "\n")
