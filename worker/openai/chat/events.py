"""Streaming events -> OpenAI shapes: stream chunk deltas, an accumulated message.

`worker.harmony.generation.run_choice` yields lists of parser events per engine step; the
service turns them into chunk choices here (streaming) or accumulates them into a
message (non-streaming), so both paths see the same events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from worker.harmony.generation import AnswerLogprobs
from worker.harmony.parser import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from worker.harmony.tokens import token_bytes


@dataclass
class Accumulated:
    """Accumulates one choice for the non-streaming response."""

    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] = field(default_factory=list)


def accumulate(acc: Accumulated, events: list[Any]) -> None:
    for ev in events:
        if isinstance(ev, ContentDelta):
            acc.content.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            acc.reasoning.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            acc.calls[ev.index] = {"id": _call_id(), "type": "function",
                                   "function": {"name": ev.name, "arguments": ""}}
        elif isinstance(ev, ToolCallArgsDelta) and ev.index in acc.calls:
            acc.calls[ev.index]["function"]["arguments"] += ev.text
        elif isinstance(ev, AnswerLogprobs):
            acc.logprobs.extend(_logprob_entries(ev))


def chunk_choices(events: list[Any]) -> list[dict[str, Any]]:
    """Stream chunk choices (without index) for a list of events."""
    out: list[dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, ContentDelta):
            out.append({"delta": {"content": ev.text}})
        elif isinstance(ev, ReasoningDelta):
            out.append({"delta": {"reasoning": ev.text, "reasoning_content": ev.text}})
        elif isinstance(ev, ToolCallStart):
            call = {"index": ev.index, "id": _call_id(), "type": "function",
                    "function": {"name": ev.name, "arguments": ""}}
            out.append({"delta": {"tool_calls": [call]}})
        elif isinstance(ev, ToolCallArgsDelta):
            call = {"index": ev.index, "function": {"arguments": ev.text}}
            out.append({"delta": {"tool_calls": [call]}})
        elif isinstance(ev, AnswerLogprobs):
            logprobs = {"content": _logprob_entries(ev)}
            if out and "content" in out[-1]["delta"] and "logprobs" not in out[-1]:
                out[-1]["logprobs"] = logprobs  # ride on the content it belongs to
            else:
                out.append({"delta": {}, "logprobs": logprobs})
    return out


def _logprob_entries(ev: AnswerLogprobs) -> list[dict[str, Any]]:
    def one(token_id: int, logprob: float) -> dict[str, Any]:
        raw = token_bytes([token_id])
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    return [
        {**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
        for e in ev.entries
    ]


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


Events = AsyncGenerator[list, None]


async def merge(gens: list[Events]) -> AsyncGenerator[tuple[int, list | None], None]:
    """Interleave several event streams; yields (index, events), and (index, None) at each end."""
    if len(gens) == 1:
        async with aclosing(gens[0]) as only:
            async for events in only:
                yield 0, events
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, list | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, g: AsyncGenerator[list, None]) -> None:
        try:
            async for events in g:
                await queue.put((i, events))
            await queue.put((i, None))
        except BaseException as exc:
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    live = len(gens)
    try:
        while live:
            i, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                live -= 1
                yield i, None
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in gens:
            await g.aclose()  # type: ignore[attr-defined]
