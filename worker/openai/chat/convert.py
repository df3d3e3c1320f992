"""A chat-completions request -> the Harmony layer's neutral `Conversation`.

System and developer messages become the developer instructions (in order, joined
by a blank line); tool messages are matched to the earlier assistant call by
`tool_call_id` (an unknown id is a 400 naming the message).
"""

from __future__ import annotations

from typing import cast

from worker.harmony.conversation import EFFORTS, Conversation, Effort, FunctionTool, ToolCall, Turn
from worker.harmony.render import render_prompt
from worker.openai.chat.messages import (
    AssistantMessage,
    DeveloperMessage,
    SystemMessage,
    ToolMessage,
    UserMessage,
    text_of,
)
from worker.openai.chat.protocol import ChatCompletionRequest
from worker.openai.errors import InvalidRequest


def to_conversation(
    req: ChatCompletionRequest, *, include_tools: bool, default_effort: str = "medium"
) -> Conversation:
    effort = req.reasoning_effort or default_effort
    if effort not in EFFORTS:
        raise ValueError(f"unknown reasoning effort {effort!r}")
    instructions = [
        text_of(m.content)
        for m in req.messages
        if isinstance(m, SystemMessage | DeveloperMessage) and text_of(m.content)
    ]
    return Conversation(
        turns=_turns(req),
        instructions="\n\n".join(instructions) or None,
        tools=offered_tools(req) if include_tools else (),
        effort=cast(Effort, effort),
    )


def offered_tools(req: ChatCompletionRequest) -> tuple[FunctionTool, ...]:
    """The functions the model is offered: all of `tools`, the `allowed_tools` subset, or
    none for tool_choice "none"."""
    names = set(req.offered_tool_names())
    return tuple(
        FunctionTool(t.function.name, t.function.description or "", t.function.parameters,
                     strict=bool(t.function.strict))
        for t in req.tools or [] if t.function.name in names
    )


def _turns(req: ChatCompletionRequest) -> tuple[Turn, ...]:
    out: list[Turn] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(req.messages):
        if isinstance(m, UserMessage):
            out.append(Turn("user", text_of(m.content)))
        elif isinstance(m, AssistantMessage):
            calls = tuple(ToolCall(c.function.name, c.function.arguments)
                          for c in m.tool_calls or [])
            out.append(Turn("assistant", text_of(m.content),
                            reasoning=m.reasoning or m.reasoning_content, tool_calls=calls))
            for call in m.tool_calls or []:
                call_names[call.id] = call.function.name
        elif isinstance(m, ToolMessage):
            name = call_names.get(m.tool_call_id)
            if name is None:
                raise InvalidRequest(
                    f"tool_call_id {m.tool_call_id!r} matches no earlier assistant tool call",
                    param=f"messages[{i}].tool_call_id",
                )
            out.append(Turn("tool", text_of(m.content), tool_name=name))
    return tuple(out)


def render_chat(
    req: ChatCompletionRequest, *, include_tools: bool, today: str,
    knowledge_cutoff: str = "2024-06", default_effort: str = "medium",
) -> list[int]:
    """The prompt tokens of a chat request, ending with `<|start|>assistant`."""
    conversation = to_conversation(req, include_tools=include_tools, default_effort=default_effort)
    return render_prompt(conversation, today=today, knowledge_cutoff=knowledge_cutoff)
