"""A whole completion (tokens after the prompt) -> reasoning, content and tool calls.

It only drives the streaming parser, so a streamed and a non-streamed answer can
never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.harmony.parser import (
    ContentDelta,
    HarmonyStreamParser,
    ReasoningDelta,
    ToolCallArgsDelta,
    ToolCallStart,
)


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    name: str
    arguments: str


@dataclass(slots=True)
class ParsedCompletion:
    reasoning: str | None = None
    content: str | None = None
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    malformed: bool = False
    num_reasoning_tokens: int = 0


def parse_completion(token_ids: Sequence[int]) -> ParsedCompletion:
    """Parse a whole completion (tokens after the prompt) with the streaming parser."""
    parser = HarmonyStreamParser()
    events = parser.feed(token_ids) + parser.finish()
    reasoning: list[str] = []
    content: list[str] = []
    names: list[str] = []
    args: list[list[str]] = []
    for ev in events:
        if type(ev) is ContentDelta:
            content.append(ev.text)
        elif type(ev) is ReasoningDelta:
            reasoning.append(ev.text)
        elif type(ev) is ToolCallStart:
            names.append(ev.name)
            args.append([])
        elif type(ev) is ToolCallArgsDelta:
            args[ev.index].append(ev.text)
    return ParsedCompletion(
        reasoning="".join(reasoning) or None,
        content="".join(content) or None,
        tool_calls=[ParsedToolCall(n, "".join(a)) for n, a in zip(names, args, strict=True)],
        malformed=parser.malformed,
        num_reasoning_tokens=parser.reasoning_tokens,
    )
