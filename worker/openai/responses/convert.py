"""A Responses request -> the Harmony layer's neutral `Conversation`.

`instructions` and system/developer messages become the developer instructions
(in order, joined by a blank line). User messages are user turns. Consecutive
assistant-side items (`reasoning`, assistant `message`, `function_call`) form one
assistant turn: its reasoning (analysis), its text (final, or a preamble when
calls follow) and its calls (`to=functions.NAME`). A `function_call_output` is
a tool turn, its function found by `call_id` (an unknown id is a 400 naming
the item). Reasoning text comes from the item's `content`, else from
`encrypted_content` (where this worker puts it, not encrypted), else its summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from worker.harmony.conversation import EFFORTS, Conversation, Effort, ToolCall, Turn
from worker.harmony.conversation import FunctionTool as HarmonyTool
from worker.openai.errors import InvalidRequest
from worker.openai.responses.protocol import (
    FunctionCallItem,
    FunctionCallOutput,
    FunctionTool,
    Message,
    ReasoningItem,
    ResponsesRequest,
)


@dataclass
class _Assistant:
    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)

    def turn(self) -> Turn | None:
        if not (self.reasoning or self.text or self.calls):
            return None
        return Turn("assistant", "\n".join(self.text), reasoning="\n".join(self.reasoning) or None,
                    tool_calls=tuple(self.calls))


def to_conversation(
    req: ResponsesRequest, tools: list[FunctionTool], *, include_tools: bool,
    default_effort: str = "medium",
) -> Conversation:
    effort = req.effort() or default_effort
    if effort not in EFFORTS:
        raise ValueError(f"unknown reasoning effort {effort!r}")
    instructions = [req.instructions] if req.instructions else []
    turns: list[Turn] = []
    call_names: dict[str, str] = {}
    pending = _Assistant()

    def flush() -> None:
        nonlocal pending
        turn = pending.turn()
        if turn is not None:
            turns.append(turn)
        pending = _Assistant()

    for i, item in enumerate(req.items()):
        if isinstance(item, Message):
            text = item.text()
            if item.role in ("system", "developer"):
                if text:
                    instructions.append(text)
            elif item.role == "user":
                flush()
                turns.append(Turn("user", text))
            else:
                if pending.text or pending.calls:
                    flush()
                if text:
                    pending.text.append(text)
        elif isinstance(item, ReasoningItem):
            if pending.reasoning or pending.text or pending.calls:
                flush()
            text = item.text()
            if text:
                pending.reasoning.append(text)
        elif isinstance(item, FunctionCallItem):
            pending.calls.append(ToolCall(item.name, item.arguments))
            call_names[item.call_id] = item.name
        elif isinstance(item, FunctionCallOutput):
            flush()
            name = call_names.get(item.call_id)
            if name is None:
                raise InvalidRequest(
                    f"call_id {item.call_id!r} matches no earlier function_call item in input",
                    param=f"input[{i}].call_id")
            turns.append(Turn("tool", item.text(), tool_name=name))
    flush()
    offered = tools if include_tools else []
    return Conversation(
        turns=tuple(turns),
        instructions="\n\n".join(instructions) or None,
        tools=tuple(HarmonyTool(t.name, t.description or "", t.parameters, strict=bool(t.strict))
                    for t in offered),
        effort=cast(Effort, effort),
    )


def echo_tools(tools: list[FunctionTool]) -> list[dict[str, Any]]:
    """The function tools as the response object echoes them."""
    return [{"type": "function", "name": t.name, "description": t.description,
             "parameters": t.parameters, "strict": t.strict} for t in tools]
