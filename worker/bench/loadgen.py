"""A closed-loop streaming load against any OpenAI-compatible chat (or Responses) endpoint.

Shared by `python -m worker bench` and `bench/run.py`. `concurrency` workers each send
one streaming chat request at a time (official `openai` async client) until `requests`
are done; every request records when its first generated text arrived, when each later
text chunk arrived and how many completion tokens it produced (from `usage`, else one per
text chunk). `summarize` turns the records into tok/s, TTFT and inter-token latency; it is
pure, so the arithmetic is unit-tested without a server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Write a short story about a lighthouse keeper who befriends a storm.",
    "Explain how a hash map works, with an example in Python.",
    "List five ideas for a weekend trip near the mountains and why each is fun.",
    "What are the trade-offs between TCP and UDP for a multiplayer game?",
    "Summarise the plot of a heist movie you invent, in one paragraph.",
    "Give me a recipe for a vegetarian curry and explain each step.",
    "Describe the water cycle to a ten-year-old.",
    "Draft a polite email asking a colleague to review a pull request.",
)


@dataclass(frozen=True)
class LoadSpec:
    model: str
    concurrency: int
    requests: int
    max_tokens: int
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    seed: int | None = 0  # request i sends seed + i (None: no seed)
    extra_body: dict[str, Any] | None = None
    # min_tokens (vLLM's extension, also this worker's): with min_tokens = max_tokens every
    # request generates exactly max_tokens, so two servers do the same work whatever the model
    min_tokens: int | None = None
    api: str = "chat"  # "chat": /v1/chat/completions; "responses": /v1/responses (no seed)
    offset: int = 0  # the first request's index (a client process's share starts there)


@dataclass
class RequestRecord:
    start: float
    end: float = 0.0
    first_text: float | None = None  # first chunk with generated text (content/reasoning/tool)
    first_chunk: float | None = None  # first chunk with a choice (vLLM sends its role chunk
    # with the first generated token; this worker sends it before)
    text_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    usage_reported: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Summary:
    concurrency: int
    requests: int
    ok: int
    errors: int
    wall_s: float
    output_tokens: int
    prompt_tokens: int
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    itl_p50_s: float
    latency_p50_s: float
    first_chunk_p50_s: float = math.nan
    # means and the first chunk's tail: a closed loop's queueing shows in their shape
    ttft_mean_s: float = math.nan
    first_chunk_p95_s: float = math.nan
    first_chunk_mean_s: float = math.nan
    latency_mean_s: float = math.nan
    procs: int = 1  # client processes
    client_cpu_s: float = math.nan  # CPU seconds the client processes spent

    def cost_per_million(self, price_per_hour: float) -> float:
        """Dollars per million output tokens at `price_per_hour` for the whole machine."""
        if self.tokens_per_s <= 0:
            return math.inf
        return price_per_hour / 3600.0 / self.tokens_per_s * 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize(records: Sequence[RequestRecord], wall_s: float, concurrency: int) -> Summary:
    ok = [r for r in records if r.error is None]
    tokens = sum(r.completion_tokens for r in ok)
    ttfts = [r.first_text - r.start for r in ok if r.first_text is not None]
    firsts = [r.first_chunk - r.start for r in ok if r.first_chunk is not None]
    latencies = [r.end - r.start for r in ok]
    gaps = [b - a for r in ok for a, b in zip(r.text_times, r.text_times[1:], strict=False)]
    return Summary(
        concurrency=concurrency,
        requests=len(records),
        ok=len(ok),
        errors=len(records) - len(ok),
        wall_s=wall_s,
        output_tokens=tokens,
        prompt_tokens=sum(r.prompt_tokens for r in ok),
        tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        itl_p50_s=percentile(gaps, 50),
        latency_p50_s=percentile(latencies, 50),
        first_chunk_p50_s=percentile(firsts, 50),
        ttft_mean_s=mean(ttfts),
        first_chunk_p95_s=percentile(firsts, 95),
        first_chunk_mean_s=mean(firsts),
        latency_mean_s=mean(latencies),
    )


def _has_text(delta: Any) -> bool:
    if delta is None:
        return False
    if delta.content or delta.tool_calls:
        return True
    extra = delta.model_extra or {}
    return bool(extra.get("reasoning") or extra.get("reasoning_content"))


async def one_request(client: Any, spec: LoadSpec, index: int) -> RequestRecord:
    """One streaming chat request; never raises (errors are recorded)."""
    if spec.api == "responses":
        return await one_responses_request(client, spec, index)
    prompt = spec.prompts[index % len(spec.prompts)]
    kwargs: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": spec.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if spec.seed is not None:
        kwargs["seed"] = spec.seed + index
    extra = dict(spec.extra_body or {})
    if spec.min_tokens is not None:
        extra["min_tokens"] = spec.min_tokens
    if extra:
        kwargs["extra_body"] = extra
    rec = RequestRecord(start=time.perf_counter())
    chunks = 0
    try:
        stream = await client.chat.completions.create(**kwargs)
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.usage is not None:
                rec.completion_tokens = int(chunk.usage.completion_tokens)
                rec.prompt_tokens = int(chunk.usage.prompt_tokens)
                rec.usage_reported = True
            if chunk.choices and rec.first_chunk is None:
                rec.first_chunk = now
            for choice in chunk.choices:
                if _has_text(choice.delta):
                    chunks += 1
                    rec.text_times.append(now)
                    if rec.first_text is None:
                        rec.first_text = now
                    break
    except Exception as exc:  # a benchmark reports failures; it does not stop on them
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
    rec.end = time.perf_counter()
    if not rec.usage_reported:
        rec.completion_tokens = chunks
    return rec


_TEXT_EVENTS = frozenset({"response.output_text.delta", "response.reasoning_text.delta",
                          "response.function_call_arguments.delta"})
_LAST_EVENTS = frozenset({"response.completed", "response.incomplete"})


async def one_responses_request(client: Any, spec: LoadSpec, index: int) -> RequestRecord:
    """One streaming /v1/responses request (the same prompt and token limit as chat)."""
    kwargs: dict[str, Any] = {
        "model": spec.model,
        "input": spec.prompts[index % len(spec.prompts)],
        "max_output_tokens": spec.max_tokens,
        "stream": True,
    }
    if spec.extra_body:
        kwargs["extra_body"] = spec.extra_body
    rec = RequestRecord(start=time.perf_counter())
    deltas = 0
    try:
        stream = await client.responses.create(**kwargs)
        async for event in stream:
            now = time.perf_counter()
            if event.type in _TEXT_EVENTS:
                deltas += 1
                rec.text_times.append(now)
                if rec.first_text is None:
                    rec.first_text = now
            elif event.type in _LAST_EVENTS and event.response.usage is not None:
                rec.completion_tokens = int(event.response.usage.output_tokens)
                rec.prompt_tokens = int(event.response.usage.input_tokens)
                rec.usage_reported = True
            elif event.type in ("error", "response.failed"):
                rec.error = f"stream {event.type}"
    except Exception as exc:  # a benchmark reports failures; it does not stop on them
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
    rec.end = time.perf_counter()
    if not rec.usage_reported:
        rec.completion_tokens = deltas
    return rec


async def run_load(
    client: Any, spec: LoadSpec, progress: Callable[[RequestRecord], None] | None = None
) -> tuple[list[RequestRecord], float]:
    """Run `spec.requests` requests, `spec.concurrency` at a time; (records, wall seconds)."""
    records: list[RequestRecord] = []
    next_index = spec.offset
    end = spec.offset + spec.requests

    async def worker() -> None:
        nonlocal next_index
        while next_index < end:
            index = next_index
            next_index += 1
            rec = await one_request(client, spec, index)
            records.append(rec)
            if progress is not None:
                progress(rec)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.requests))))
    return records, time.perf_counter() - t0


def make_client(base_url: str, api_key: str, *, timeout: float = 600.0) -> Any:
    """An `openai.AsyncOpenAI` without retries (its default pool allows 1000 connections)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
