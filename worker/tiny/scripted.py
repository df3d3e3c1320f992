"""A tiny gpt-oss whose hand-set weights make greedy decoding emit valid Harmony.

Three scripts, chosen from the rendered prompt (which ends with `<|start|>assistant`):

* ``answer`` (default): analysis `REASONING`, then final `ANSWER`, then `<|return|>`.
* ``tool_call``: the last message is the user's and mentions weather (` weather`, `Weather`,
  ...), a `get_weather` tool is declared, and no tool result is in the conversation:
  analysis `TOOL_REASONING`, then `commentary to=functions.get_weather <|constrain|>json`
  with `TOOL_ARGS`, then `<|call|>`.
* ``after_tool``: the last message is a tool result: analysis `AFTER_TOOL_REASONING`, then
  final `ANSWER_AFTER_TOOL`, then `<|return|>`.

How (residual width 64, one dimension per feature, see `_layout`): embeddings are one-hot
per script token on top of a constant, and lm_head rows read out the script's next token (a
bigram); only `<|channel|>` and `<|message|>` need context. Layer 0 (sliding) head 0 is a
*state* head: it attends to the nearest "marker" (role tokens `user`/`functions`/`developer`/
`system`, `<|constrain|>`, the last token of each reasoning text), nearer ones scoring higher
through a slow rope pair, and copies the marker's state (USER, TOOL, JSON, RA, RB, RC). Layer 1
(full) heads 0-2 are presence detectors with a constant query whose attention sink takes the
mass unless some key passes its threshold: W = a weather word in a user message (token AND
state USER), G = `_weather` anywhere (the tool declaration), T = `assistant` inside a tool
message (a tool result exists). The logits after `<|channel|>` / `<|message|>` add state and
detector terms to the bigram. Everything else is small noise (the MoE and the other heads
still compute). Limits: the last message's role token must lie within the 128-token sliding
window of the reply's start (else: ``answer``); bf16 logit margins are >= 5.5 (M = 6).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from worker.tiny.models import (
    HEAD_DIM,
    HIDDEN,
    NOISE_STD,
    noise_weights,
    rope_frequencies,
    write_checkpoint,
)
from worker.tiny.tokenizer import harmony_encoding

if TYPE_CHECKING:
    import torch

Branch = Literal["answer", "tool_call", "after_tool"]
BRANCHES: tuple[Branch, ...] = ("answer", "tool_call", "after_tool")

REASONING = "Reply tersely"
ANSWER = "Hello from the tiny model!"
TOOL_REASONING = "Fetch forecast forthwith"
TOOL_NAME = "get_weather"
TOOL_RECIPIENT = "functions.get_weather"
TOOL_CONTENT_TYPE = "<|constrain|>json"
TOOL_ARGS = '{"location":"Paris"}'
AFTER_TOOL_REASONING = "Relay tool output verbatim"
ANSWER_AFTER_TOOL = "It is sunny in Paris."
SCRIPTED_ANSWER = ANSWER
SCRIPTED_TOOL_ARGS = TOOL_ARGS
SCRIPTED_ANSWER_AFTER_TOOL = ANSWER_AFTER_TOOL
# (channel, recipient, content_type, text) of each parsed message, per branch.
EXPECTED_MESSAGES: dict[Branch, list[tuple[str, str | None, str | None, str]]] = {
    "answer": [("analysis", None, None, REASONING), ("final", None, None, ANSWER)],
    "tool_call": [("analysis", None, None, TOOL_REASONING),
                  ("commentary", TOOL_RECIPIENT, TOOL_CONTENT_TYPE, TOOL_ARGS)],
    "after_tool": [("analysis", None, None, AFTER_TOOL_REASONING),
                   ("final", None, None, ANSWER_AFTER_TOOL)],
}
WEATHER_WORDS = (" weather", "weather", " Weather", "Weather", " WEATHER")
MAX_SCRIPT_TOKENS = 30

_SCRIPTS: dict[Branch, tuple[str, ...]] = {
    "answer": ("<|channel|>", "analysis", "<|message|>", REASONING, "<|end|>", "<|start|>",
               "assistant", "<|channel|>", "final", "<|message|>", ANSWER, "<|return|>"),
    "tool_call": ("<|channel|>", "analysis", "<|message|>", TOOL_REASONING, "<|end|>", "<|start|>",
                  "assistant", "<|channel|>", f"commentary to={TOOL_RECIPIENT} ", "<|constrain|>",
                  "json", "<|message|>", TOOL_ARGS, "<|call|>"),
    "after_tool": ("<|channel|>", "analysis", "<|message|>", AFTER_TOOL_REASONING, "<|end|>",
                   "<|start|>", "assistant", "<|channel|>", "final", "<|message|>",
                   ANSWER_AFTER_TOOL, "<|return|>"),
}

# Target scores and logits (bf16 keeps ~3 significant digits; margins stay >= M).
B, M = 60.0, 6.0  # bigram logit; context margin
REC_AMP, REC_BASE, JSON_BONUS = 240.0, 170.0, 8.0  # layer-0 recency head
DET_UNIT = 24.0  # layer-1 detector score per unit of feature
CONST = 4.0  # the constant residual component every token carries
REC_PAIR, CONST_PAIR_L0, DET_PAIRS = 11, 31, (31, 30)  # rope pairs (i, i + 32) used
STATES = ("USER", "TOOL", "JSON", "RA", "RB", "RC")


def _ids(piece: str) -> list[int]:
    enc = harmony_encoding()
    if piece in enc.special_tokens_set:
        return list(enc.encode(piece, allowed_special="all"))
    return list(enc.encode(piece))


def completion_tokens(branch: Branch) -> list[int]:
    """The exact tokens greedy decoding emits after `<|start|>assistant` in `branch`."""
    return [t for piece in _SCRIPTS[branch] for t in _ids(piece)]


def _single(piece: str) -> int:
    ids = _ids(piece)
    if len(ids) != 1:
        raise RuntimeError(f"{piece!r} is {len(ids)} tokens, expected one")
    return ids[0]


@dataclass(frozen=True)
class _Layout:
    chan: int  # <|channel|>
    msg: int  # <|message|>
    succ: dict[int, int]  # script token -> its one successor (all but chan and msg)
    markers: dict[str, list[int]]  # state -> marker tokens (OTHER: value zero)
    dims: dict[str, int]  # named residual dims (CONST, S_*, D_*, M_USER, M_OTHER, W)
    ident: dict[int, int]  # token -> its one-hot residual dim
    used: int  # dims [0, used) are designed; the rest carry noise


def _layout() -> _Layout:
    chan, msg = _single("<|channel|>"), _single("<|message|>")
    succ: dict[int, int] = {}
    for branch in BRANCHES:
        seq = [_single("assistant"), *completion_tokens(branch)]
        if len(seq) > MAX_SCRIPT_TOKENS:
            raise RuntimeError(f"{branch} script too long")
        for a, b in itertools.pairwise(seq):
            if a not in (chan, msg) and succ.setdefault(a, b) != b:
                raise RuntimeError(f"token {a} has two successors in the scripts")
    markers = {
        "USER": [_single("user")], "TOOL": [_single("functions")],
        "JSON": [_single("<|constrain|>")], "RA": [_ids(REASONING)[-1]],
        "RB": [_ids(TOOL_REASONING)[-1]], "RC": [_ids(AFTER_TOOL_REASONING)[-1]],
        "OTHER": [_single("developer"), _single("system")],
    }
    dims: dict[str, int] = {"CONST": 0}
    for name in (*(f"S_{s}" for s in STATES), "D_W", "D_G", "D_T", "M_USER", "M_OTHER", "W"):
        dims[name] = len(dims)
    ident = {tok: len(dims) + i for i, tok in enumerate(sorted({*succ, chan, msg}))}
    ident[markers["USER"][0]] = dims["M_USER"]
    ident.update({tok: dims["M_OTHER"] for tok in markers["OTHER"]})
    ident.update({_single(word): dims["W"] for word in WEATHER_WORDS})
    used = len(set(ident.values()) | set(dims.values()))
    if used > HIDDEN:
        raise RuntimeError(f"scripted layout needs {used} dims > {HIDDEN}")
    return _Layout(chan, msg, succ, markers, dims, ident, used)


def _after(branch: Branch, token: int, nth: int) -> int:
    """The token that follows the `nth` occurrence of `token` in `branch`'s script."""
    seq = completion_tokens(branch)
    return seq[[i for i, t in enumerate(seq) if t == token][nth] + 1]


def scripted_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 tensors of the scripted model (see the module docstring)."""
    import torch

    lay = _layout()
    dims, ident, markers, used = lay.dims, lay.ident, lay.markers, lay.used
    chan, msg, succ = lay.chan, lay.msg, lay.succ
    inv_freq, mscale = rope_frequencies()
    qk_gain = mscale**2 / math.sqrt(HEAD_DIM)  # score = q . k * qk_gain on a slow pair
    u0 = 8.0 / math.sqrt(CONST**2 + 1)  # normalised size of one unit, layer 0 input
    u1 = 8.0 / math.sqrt(CONST**2 + 2)  # layer 1 input (token + state)
    uf = 8.0 / math.sqrt(CONST**2 + 3)  # final norm input (token + state + a detector)

    w = noise_weights(seed)
    gen = torch.Generator().manual_seed(seed + 7)
    free = torch.zeros(HIDDEN)
    free[used:] = 1.0  # undesigned residual dims: only they receive noise writes

    emb = torch.randn(w["model.embed_tokens.weight"].shape, generator=gen) * NOISE_STD * free
    emb[:, dims["CONST"]] = CONST
    for tok, d in ident.items():
        emb[tok, d] = 1.0
    w["model.embed_tokens.weight"] = emb
    for name in ("model.layers.0.self_attn.o_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                 "model.layers.0.mlp.experts.down_proj", "model.layers.1.mlp.experts.down_proj"):
        w[name] = w[name] * (free[:, None] if "o_proj" in name else free)

    def state_dim(s: str) -> int:
        return dims[f"S_{s}"]
    # Layer 0, head 0 (KV head 0): nearest-marker state.
    p = "model.layers.0.self_attn."
    theta = inv_freq[REC_PAIR]
    psi = math.pi / 2 - 63.5 * theta  # keeps cos(psi + theta * dist) falling over the window
    q_amp = 32.0
    w[p + "q_proj.weight"][:HEAD_DIM] = 0.0
    qb = w[p + "q_proj.bias"]
    qb[REC_PAIR], qb[REC_PAIR + 32] = q_amp * math.cos(psi), q_amp * math.sin(psi)
    qb[CONST_PAIR_L0] = q_amp
    kw, vw = w[p + "k_proj.weight"], w[p + "v_proj.weight"]
    kw[[REC_PAIR, REC_PAIR + 32, CONST_PAIR_L0, CONST_PAIR_L0 + 32]] = 0.0
    for state, toks in markers.items():
        for tok in toks:
            d = ident[tok]
            kw[REC_PAIR, d] = REC_AMP / (q_amp * qk_gain * u0)
            bonus = JSON_BONUS if state == "JSON" else 0.0
            kw[CONST_PAIR_L0, d] = (REC_BASE + bonus) / (q_amp * qk_gain * u0)
    vw[:len(STATES)] = 0.0
    for i, state in enumerate(STATES):
        vw[i, ident[markers[state][0]]] = 1.0 / u0
        w[p + "o_proj.weight"][state_dim(state), i] = 1.0

    # Layer 1: presence detectors; the query is a constant (bias only).
    p = "model.layers.1.self_attn."
    q_amp = 16.0
    k_unit = DET_UNIT / (q_amp * qk_gain * u1)
    wq, qb, kw = w[p + "q_proj.weight"], w[p + "q_proj.bias"], w[p + "k_proj.weight"]
    wq[: 3 * HEAD_DIM] = 0.0
    pair_w, pair_g = DET_PAIRS
    detectors = (  # head, kv head, rope dim, key features, sink (threshold), output dim
        (0, 0, pair_w, (dims["W"], state_dim("USER")), 1.5, "D_W"),
        (1, 0, pair_g, (ident[_ids(" get_weather")[-1]],) * 2, 1.0, "D_G"),
        (2, 1, pair_w, (ident[_single("assistant")], state_dim("TOOL")), 1.5, "D_T"),
    )
    for head, kv, rope_dim, feats, sink, out in detectors:
        qb[head * HEAD_DIM + rope_dim] = q_amp
        row = kv * HEAD_DIM + rope_dim
        kw[[row, row + 32]] = 0.0
        for d in feats:
            kw[row, d] += k_unit
        w[p + "sinks"][head] = sink * DET_UNIT
        w[p + "v_proj.weight"][kv * HEAD_DIM] = 0.0
        w[p + "v_proj.bias"][kv * HEAD_DIM] = 1.0
        w[p + "o_proj.weight"][dims[out], head * HEAD_DIM] = 1.0

    # Readout: bigram rows plus context terms after <|channel|> and <|message|>.
    lm = w["lm_head.weight"]
    ctx: list[tuple[int, int, float, dict[str, float]]] = [  # token, after, base, terms
        (_after("answer", chan, 0), chan, B, {}),
        (_after("answer", chan, 1), chan, B - M, {"S_RA": 2 * M, "S_RC": 2 * M}),
        (_after("tool_call", chan, 1), chan, B - M, {"S_RB": 2 * M}),
        (_after("answer", msg, 0), msg, B, {}),
        (_after("tool_call", msg, 0), msg, B - 5 * M,
         {"S_USER": 2 * M, "D_W": 2 * M, "D_G": 2 * M, "D_T": -2 * M}),
        (_after("after_tool", msg, 0), msg, B - M, {"S_TOOL": 2 * M}),
        (_after("answer", msg, 1), msg, B - M, {"S_RA": 2 * M}),
        (_after("after_tool", msg, 1), msg, B - M, {"S_RC": 2 * M}),
        (_after("tool_call", msg, 1), msg, B - M, {"S_JSON": 2 * M}),
    ]
    for tok in {*succ.values(), *(c[0] for c in ctx)}:
        lm[tok, :used] = 0.0
    for src, nxt in succ.items():
        lm[nxt, ident[src]] += B / uf
    for tok, after, base, terms in ctx:
        lm[tok, ident[after]] += base / uf
        for name, value in terms.items():
            lm[tok, dims[name]] += value / uf
    return w


def build_scripted_model(dest: Path, seed: int = 0) -> None:
    """Write the scripted checkpoint (config, generation config, weights) to `dest`."""
    write_checkpoint(dest, scripted_weights(seed))
