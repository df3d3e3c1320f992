"""Streaming events -> OpenAI shapes: stream chunk deltas, an accumulated message.

`worker.harmony.generation.run_choice` yields lists of parser events per engine step; the
service turns them into chunk choices here (streaming) or accumulates them into a
message (non-streaming), so both paths see the same events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from worker.harmony.generation import AnswerLogprobs
from worker.harmony.parser import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from worker.harmony.tokens import token_bytes
from worker.openai.core import merge as merge


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
