"""Harmony as small pure functions: request -> prompt tokens, output tokens -> parts.

`openai_harmony` (the `oss-harmony` package, vocab embedded) is loaded lazily
by `encoding()`; importing this module costs nothing. Output parsing lives in
`worker.streaming`; `parse_completion` here only drives that parser, so a
streamed and a non-streamed answer can never disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.errors import InvalidRequest
from worker.protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    DeveloperMessage,
    SystemMessage,
    ToolMessage,
    UserMessage,
    text_of,
)

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding, Message

# Special token ids of the gpt-oss ("o200k_harmony") vocabulary.
RETURN = 200002  # <|return|>: the assistant ends its turn
CONSTRAIN = 200003  # <|constrain|>: content type marker in a header
CHANNEL = 200005  # <|channel|>
START = 200006  # <|start|>
END = 200007  # <|end|>: end of one message (the turn goes on)
MESSAGE = 200008  # <|message|>: header done, content follows
CALL = 200012  # <|call|>: the assistant calls a tool
FIRST_SPECIAL = 199998  # every id from here on is a special (or reserved) token
VOCAB_SIZE = 201088

_EFFORTS = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH"}


@functools.cache
def encoding() -> HarmonyEncoding:
    """The gpt-oss Harmony encoding, loaded once."""
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def stop_token_ids() -> tuple[int, ...]:
    """Tokens that end an assistant action: <|return|> and <|call|> (not <|end|>)."""
    return (RETURN, CALL)


def encode_text(text: str) -> list[int]:
    """Plain text to tokens; text that looks like a special token stays text."""
    return list(encoding().encode(text, disallowed_special=()))


@functools.cache
def _byte_table() -> list[bytes | None]:
    return [None] * VOCAB_SIZE


def _fill_byte_table(ids: Sequence[int]) -> None:
    """Decode the ids the shared id -> bytes table does not know yet (None = not yet)."""
    table = _byte_table()
    enc = encoding()
    for tok in ids:
        if 0 <= tok < VOCAB_SIZE and table[tok] is None:
            try:
                text = enc.decode([tok], errors="surrogateescape")
                table[tok] = text.encode("utf-8", "surrogateescape")
            except Exception:  # an id the tokenizer cannot decode: no bytes
                table[tok] = b""


def token_bytes(ids: Sequence[int]) -> bytes:
    """The raw bytes of `ids` (special tokens as their literal text); a table lookup."""
    table = _byte_table()
    try:
        if len(ids) == 1:
            one = table[ids[0]]
            if one is not None:
                return one
        return b"".join([table[t] for t in ids])  # type: ignore[misc]
    except (TypeError, IndexError):
        _fill_byte_table(ids)
        return b"".join([table[t] or b"" for t in ids if 0 <= t < VOCAB_SIZE])


def decode_text(ids: Sequence[int]) -> str:
    """Tokens to text, UTF-8 safe: bytes are joined before decoding (invalid ones -> U+FFFD)."""
    return token_bytes(ids).decode("utf-8", "replace")


# --------------------------------------------------------------------------- prompt


def render_prompt(
    req: ChatCompletionRequest,
    *,
    include_tools: bool,
    today: str,
    knowledge_cutoff: str = "2024-06",
    default_effort: str = "medium",
) -> list[int]:
    """The prompt tokens for `req`, ending with `<|start|>assistant`.

    System and developer messages become the developer message's instructions
    (in order, joined by a blank line). Past reasoning is rendered as analysis
    messages and Harmony's default render config drops every analysis message
    before the last final one, so only the reasoning of an unfinished tool-calling
    turn reaches the model, as the gpt-oss format asks.
    """
    from openai_harmony import Conversation, Role

    conv = Conversation.from_messages(
        [
            _system_message(req, today, knowledge_cutoff, default_effort),
            *_developer_messages(req, include_tools),
            *_history(req),
        ]
    )
    return list(encoding().render_conversation_for_completion(conv, Role.ASSISTANT))


def _system_message(
    req: ChatCompletionRequest, today: str, knowledge_cutoff: str, default_effort: str
) -> Message:
    from openai_harmony import Message, ReasoningEffort, Role, SystemContent

    effort = req.reasoning_effort or default_effort
    if effort not in _EFFORTS:
        raise ValueError(f"unknown reasoning effort {effort!r}")
    content = (
        SystemContent.new()
        .with_reasoning_effort(ReasoningEffort[_EFFORTS[effort]])
        .with_conversation_start_date(today)
        .with_knowledge_cutoff(knowledge_cutoff)
    )
    return Message.from_role_and_content(Role.SYSTEM, content)


def _developer_messages(req: ChatCompletionRequest, include_tools: bool) -> list[Message]:
    from openai_harmony import DeveloperContent, Message, Role, ToolDescription

    parts = [
        text_of(m.content)
        for m in req.messages
        if isinstance(m, SystemMessage | DeveloperMessage) and text_of(m.content)
    ]
    tools = req.tools if include_tools and req.tools else []
    if not parts and not tools:
        return []
    content = DeveloperContent.new()
    if parts:
        content = content.with_instructions("\n\n".join(parts))
    if tools:
        content = content.with_function_tools(
            [
                ToolDescription.new(
                    t.function.name, t.function.description or "", t.function.parameters
                )
                for t in tools
            ]
        )
    return [Message.from_role_and_content(Role.DEVELOPER, content)]


def _history(req: ChatCompletionRequest) -> list[Message]:
    from openai_harmony import Author, Message, Role

    out: list[Message] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(req.messages):
        if isinstance(m, UserMessage):
            out.append(Message.from_role_and_content(Role.USER, text_of(m.content)))
        elif isinstance(m, AssistantMessage):
            out.extend(_assistant_messages(m))
            for call in m.tool_calls or []:
                call_names[call.id] = call.function.name
        elif isinstance(m, ToolMessage):
            name = call_names.get(m.tool_call_id)
            if name is None:
                raise InvalidRequest(
                    f"tool_call_id {m.tool_call_id!r} matches no earlier assistant tool call",
                    param=f"messages[{i}].tool_call_id",
                )
            author = Author.new(Role.TOOL, f"functions.{name}")
            out.append(
                Message.from_author_and_content(author, text_of(m.content))
                .with_channel("commentary")
                .with_recipient("assistant")
            )
    return out


def _assistant_messages(m: AssistantMessage) -> list[Message]:
    from openai_harmony import Message, Role

    out: list[Message] = []
    reasoning = m.reasoning or m.reasoning_content
    if reasoning:
        out.append(
            Message.from_role_and_content(Role.ASSISTANT, reasoning).with_channel("analysis")
        )
    text = text_of(m.content)
    if text:
        # Text next to tool calls was a preamble (commentary); alone it is the answer.
        channel = "commentary" if m.tool_calls else "final"
        out.append(Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel))
    for call in m.tool_calls or []:
        out.append(
            Message.from_role_and_content(Role.ASSISTANT, call.function.arguments)
            .with_channel("commentary")
            .with_recipient(f"functions.{call.function.name}")
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


# ------------------------------------------------------------------ output parsing


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
    from worker.streaming import (
        ContentDelta,
        HarmonyStreamParser,
        ReasoningDelta,
        ToolCallArgsDelta,
        ToolCallStart,
    )

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
