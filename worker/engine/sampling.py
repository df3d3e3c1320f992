"""`SamplingOptions` in vLLM's keyword names: what `SamplingParams` and
`StructuredOutputsParams` are built from (worker.engine.vllm_engine builds them)."""

from __future__ import annotations

from typing import Any

from worker.engine.api import SamplingOptions


def structured_kwargs(o: SamplingOptions) -> dict[str, Any] | None:
    """`StructuredOutputsParams` keywords for the request's constraint, None without one."""
    if o.json_schema is not None:
        return {"json": o.json_schema}
    if o.json_object:
        return {"json_object": True}
    if o.choice is not None:
        return {"choice": list(o.choice)}
    return None


def sampling_kwargs(o: SamplingOptions) -> dict[str, Any]:
    """`SamplingParams` keywords, less `structured_outputs` and `output_kind`."""
    return {
        "n": 1, "max_tokens": o.max_tokens, "temperature": o.temperature, "top_p": o.top_p,
        "top_k": o.top_k, "min_p": o.min_p, "min_tokens": o.min_tokens, "seed": o.seed,
        "presence_penalty": o.presence_penalty, "frequency_penalty": o.frequency_penalty,
        "repetition_penalty": o.repetition_penalty, "stop_token_ids": list(o.stop_token_ids),
        "logprobs": o.logprobs, "logit_bias": dict(o.logit_bias) or None,
        "detokenize": False,  # the Harmony layer decodes; skip vLLM's detokenizer
    }
