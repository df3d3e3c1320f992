"""Harmony prompts: a `Conversation` -> prompt tokens, and the headers the worker writes itself.

Pure functions over `openai_harmony` (loaded lazily). System settings (reasoning
effort, dates) go into the system message, instructions and function tools into
the developer message, then the history. Past reasoning is rendered as analysis
messages; Harmony's default render config drops every analysis message before the
last final one, so only the reasoning of an unfinished tool-calling turn reaches
the model, as the gpt-oss format asks.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from worker.harmony.conversation import Conversation, Turn
from worker.harmony.tokens import CHANNEL, CONSTRAIN, MESSAGE, START, encode_text, encoding

if TYPE_CHECKING:
    from openai_harmony import Message

_EFFORTS = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH"}


def render_prompt(
    conv: Conversation, *, today: str, knowledge_cutoff: str = "2024-06"
) -> list[int]:
    """The prompt tokens for `conv`, ending with `<|start|>assistant`."""
    from openai_harmony import Conversation as HarmonyConversation
    from openai_harmony import Role

    messages = [_system_message(conv, today, knowledge_cutoff), *_developer_messages(conv)]
    for turn in conv.turns:
        messages.extend(_turn_messages(turn))
    harmony_conv = HarmonyConversation.from_messages(messages)
    return list(encoding().render_conversation_for_completion(harmony_conv, Role.ASSISTANT))


def _system_message(conv: Conversation, today: str, knowledge_cutoff: str) -> Message:
    from openai_harmony import Message, ReasoningEffort, Role, SystemContent

    content = (
        SystemContent.new()
        .with_reasoning_effort(ReasoningEffort[_EFFORTS[conv.effort]])
        .with_conversation_start_date(today)
        .with_knowledge_cutoff(knowledge_cutoff)
    )
    return Message.from_role_and_content(Role.SYSTEM, content)


def _developer_messages(conv: Conversation) -> list[Message]:
    from openai_harmony import DeveloperContent, Message, Role, ToolDescription

    if not conv.instructions and not conv.tools:
        return []
    content = DeveloperContent.new()
    if conv.instructions:
        content = content.with_instructions(conv.instructions)
    if conv.tools:
        content = content.with_function_tools(
            [ToolDescription.new(t.name, t.description, t.parameters) for t in conv.tools]
        )
    return [Message.from_role_and_content(Role.DEVELOPER, content)]


def _turn_messages(turn: Turn) -> list[Message]:
    from openai_harmony import Author, Message, Role

    if turn.role == "user":
        return [Message.from_role_and_content(Role.USER, turn.text)]
    if turn.role == "tool":
        author = Author.new(Role.TOOL, f"functions.{turn.tool_name}")
        return [
            Message.from_author_and_content(author, turn.text)
            .with_channel("commentary")
            .with_recipient("assistant")
        ]
    out: list[Message] = []
    if turn.reasoning:
        out.append(
            Message.from_role_and_content(Role.ASSISTANT, turn.reasoning).with_channel("analysis")
        )
    if turn.text:
        # Text next to tool calls was a preamble (commentary); alone it is the answer.
        channel = "commentary" if turn.tool_calls else "final"
        out.append(Message.from_role_and_content(Role.ASSISTANT, turn.text).with_channel(channel))
    for call in turn.tool_calls:
        out.append(
            Message.from_role_and_content(Role.ASSISTANT, call.arguments)
            .with_channel("commentary")
            .with_recipient(f"functions.{call.name}")
            .with_content_type("<|constrain|>json")
        )
    return out


# --------------------------------------------------------------- forced prefixes


@functools.cache
def _assistant_head() -> tuple[int, ...]:
    return (START, *encode_text("assistant"))


@functools.cache
def _prefix(channel_text: str, constrained: bool) -> tuple[int, ...]:
    body = (CHANNEL, *encode_text(channel_text))
    return (*body, CONSTRAIN, *encode_text("json"), MESSAGE) if constrained else (*body, MESSAGE)


def analysis_prefix_tokens() -> list[int]:
    """`<|channel|>analysis<|message|>`: opens the reasoning right after the prompt."""
    return list(_prefix("analysis", False))


def final_prefix_tokens(*, after_message: bool = True) -> list[int]:
    """Opens the final channel.

    after_message=True (a message was closed with <|end|>):
    `<|start|>assistant<|channel|>final<|message|>`; False (nothing generated yet,
    the prompt ends with `<|start|>assistant`): `<|channel|>final<|message|>`.
    """
    head = _assistant_head() if after_message else ()
    return [*head, *_prefix("final", False)]


def tool_call_prefix_tokens(name: str | None, *, after_message: bool) -> list[int]:
    """Opens a function call exactly as Harmony renders one (and the model emits it).

    With a name: `[<|start|>assistant]<|channel|>commentary to=functions.NAME <|constrain|>json
    <|message|>` (the space before <|constrain|> is its own token, 220). With None the
    tokens stop right after `to=functions.` (the "." is token 13; the canonical tokenization
    would merge it with the name, e.g. ".get"), so the caller can constrain the name.
    """
    head = _assistant_head() if after_message else ()
    if name is None:
        return [*head, CHANNEL, *encode_text("commentary to=functions.")]
    return [*head, *_prefix(f"commentary to=functions.{name} ", True)]


