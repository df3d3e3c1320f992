"""vLLM's completion outputs in the interface's terms: finish reasons, token logprobs.
Duck-typed over vLLM's objects (no vLLM import: `vllm_engine.py` stays the one module)."""

from __future__ import annotations

from typing import Any

from worker.engine.api import FinishReason, TokenLogprob


def finish_reason_of(reason: str | None) -> FinishReason:
    """vLLM's finish reason in the interface's terms (stop tokens and strings: `stop`)."""
    if reason == "length":
        return "length"
    if reason == "abort":
        return "abort"
    return "stop"


def logprobs_of(comp: Any, k: int) -> tuple[TokenLogprob, ...]:
    """The sampled token's logprob and the top `k` alternatives (vLLM adds the sampled one)."""
    out: list[TokenLogprob] = []
    entries = comp.logprobs or []
    for token_id, entry in zip(comp.token_ids, entries, strict=False):
        chosen = entry.get(token_id)
        top = [(tid, lp.logprob) for tid, lp in entry.items() if (lp.rank or k + 1) <= k]
        ranked = sorted(top, key=lambda kv: -kv[1])
        out.append(TokenLogprob(
            token_id=token_id,
            logprob=float(chosen.logprob) if chosen is not None else float("-inf"),
            top=tuple((int(t), float(v)) for t, v in ranked),
        ))
    return tuple(out)
