"""The Harmony layer's own input: a conversation, independent of any OpenAI API.

Each OpenAI surface (chat completions, responses, completions) converts its
request into these plain values; `worker.harmony.render` turns them into prompt
tokens. Nothing here knows a request model, so the APIs share one renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Effort = Literal["low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the model may call (rendered into the developer message).

    `strict`: its arguments must follow `parameters` (generation constrains them; the
    prompt is the same either way).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made earlier: `to=functions.NAME` with JSON arguments."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the history.

    user: `text`. assistant: optional `reasoning` (analysis), `text` (the answer, or a
    preamble when it comes with tool calls) and `tool_calls`. tool: `text` is the result of
    the function `tool_name`.
    """

    role: Literal["user", "assistant", "tool"]
    text: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """Everything the prompt is rendered from."""

    turns: tuple[Turn, ...]
    instructions: str | None = None  # developer instructions (system/developer text joined)
    tools: tuple[FunctionTool, ...] = ()
    effort: Effort = "medium"
