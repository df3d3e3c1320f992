"""A tiny gpt-oss whose output is valid Harmony that never ends: `<|channel|>final<|message|>`
then one sentence, repeated until max_tokens.

Why not only the random model: its gibberish never completes a Harmony header, so vLLM's
server (openai_harmony's parser) holds every token back and sends the whole completion in
one chunk at the end, which makes its TTFT and inter-token latency meaningless. This model
streams token by token on both servers, always runs to `max_tokens` (same work per request
on both), and costs the same per step as the random model (same shapes; noise elsewhere).

How: a bigram readout. Each script token has a one-hot residual dimension; lm_head's row of
its successor reads that dimension with logit ~60, every other logit stays below ~1, so
sampling at temperature 1 is deterministic. Attention and MoE outputs write only to the
residual dimensions the design does not use (they still compute on the noise weights).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from worker.tiny import ensure_tiny_model
from worker.tiny.models import HIDDEN, NOISE_STD, noise_weights, write_checkpoint
from worker.tiny.tokenizer import harmony_encoding

LOOP_TEXT = (
    " The quick brown fox jumps over a lazy dog while seven wizards quietly hum old songs"
    " beside the river under bright stars"
)
DIRNAME = "bench-loop-gpt-oss-v1"
B = 60.0  # the successor's logit
CONST = 4.0  # a constant residual component every token carries


def _ids(piece: str) -> list[int]:
    enc = harmony_encoding()
    if piece.startswith("<|"):
        return list(enc.encode(piece, allowed_special="all"))
    return list(enc.encode(piece))


def script() -> list[int]:
    """`assistant`, the header tokens, then one period of the loop (successor of the last
    loop token is the first loop token)."""
    head = [t for p in ("assistant", "<|channel|>", "final", "<|message|>") for t in _ids(p)]
    loop = _ids(LOOP_TEXT)
    seq = head + loop
    if len(set(seq)) != len(seq):
        raise RuntimeError("loop script tokens must be distinct")
    return seq


def loop_tokens() -> list[int]:
    return _ids(LOOP_TEXT)


def build(dest: Path, seed: int = 0) -> None:
    import torch

    seq = script()
    loop = loop_tokens()
    succ = dict(itertools.pairwise(seq))
    succ[loop[-1]] = loop[0]
    ident = {tok: 1 + i for i, tok in enumerate(seq)}
    used = 1 + len(seq)
    if used > HIDDEN - 8:
        raise RuntimeError(f"loop script needs {used} of {HIDDEN} residual dims")
    w = noise_weights(seed)
    gen = torch.Generator().manual_seed(seed + 7)
    free = torch.zeros(HIDDEN)
    free[used:] = 1.0
    emb = torch.randn(w["model.embed_tokens.weight"].shape, generator=gen) * NOISE_STD * free
    emb[:, 0] = CONST
    for tok, d in ident.items():
        emb[tok, d] = 1.0
    w["model.embed_tokens.weight"] = emb
    for i in range(2):
        w[f"model.layers.{i}.self_attn.o_proj.weight"] *= free[:, None]
        w[f"model.layers.{i}.mlp.experts.down_proj"] *= free
    unit = (HIDDEN / (CONST**2 + 1)) ** 0.5  # one unit after the final RMS norm
    lm = w["lm_head.weight"]
    for tok in succ.values():
        lm[tok, :used] = 0.0
    for src, nxt in succ.items():
        lm[nxt, ident[src]] += B / unit
    write_checkpoint(dest, w)


def ensure_loop_model(cache_dir: Path) -> Path:
    """Build `<cache_dir>/bench-loop-gpt-oss-v1/` (tokenizer copied from the tiny models)."""
    target = cache_dir / DIRNAME
    if (target / "model.safetensors").is_file():
        return target
    random_dir = ensure_tiny_model("random", cache_dir)
    tmp = cache_dir / f".{DIRNAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in random_dir.iterdir():
        if item.name.startswith("tokenizer"):
            shutil.copy2(item, tmp / item.name)
    build(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
