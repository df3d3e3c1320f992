"""Incremental Harmony output parser: completion token ids -> small delta events.

A pure-Python state machine over token ids (openai_harmony's StreamableParser
costs ~1.4 µs per token before any property is read, re-encodes its content on
every token, and raises on malformed output). Headers are parsed with Harmony's
rules (`<|channel|>` value, `to=` recipient, content type, either header order),
content bytes come from the shared token table in `worker.harmony.render`, and an
incremental UTF-8 decoder keeps characters split across tokens whole.

Routing: channel `analysis` -> ReasoningDelta; a recipient `functions.NAME` (any
channel) -> ToolCallStart + ToolCallArgsDelta; `final`, commentary without a
recipient (preambles, as vLLM does) and messages without a channel ->
ContentDelta. Messages to other recipients (built-in tools we never offer) are
reasoning; messages the model writes as another role (user, tool, ...) are
dropped. Consecutive deltas of one kind inside one `feed` come out as one event.

Lenient: a token that breaks the grammar never raises. The parser keeps what it
has, sets `malformed`, logs one warning per parser and resynchronises: a stray
<|start|> or <|channel|> inside content starts a new header, other stray special
tokens are dropped, and text that cannot be a header is treated as content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from worker.harmony.header import (
    MAX_HEADER_TOKENS,
    Header,
    is_header_prefix,
    parse_header,
    salvage_header,
)
from worker.harmony.tokens import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    FIRST_SPECIAL,
    MESSAGE,
    RETURN,
    START,
    decode_text,
)
from worker.harmony.tokens import token_bytes as _token_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    index: int
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArgsDelta:
    index: int
    text: str


Event = ReasoningDelta | ContentDelta | ToolCallStart | ToolCallArgsDelta

_EXPECT_START, _HEADER, _CONTENT = 0, 1, 2
_REASONING, _TEXT, _TOOL, _DROP = 0, 1, 2, 3
_STOPS = frozenset((END, RETURN, CALL))
class HarmonyStreamParser:
    """Feed completion tokens (those after the prompt's `<|start|>assistant`)."""

    def __init__(self) -> None:
        self._state = _HEADER
        self._role_next = False  # the header may start with a role word
        self._header: list[int] = []
        self._pending: list[int] = []
        self._sink = _TEXT
        self._framing = 0
        self._tool_index = -1
        self._carry = b""  # the bytes of a UTF-8 character still incomplete
        self._warned = False
        self.malformed = False
        self.done = False  # saw <|return|> or <|call|>
        self.reasoning_tokens = 0
        self.header: Header | None = None  # the header of the message being read

    def feed(self, token_ids: Sequence[int]) -> list[Event]:
        out: list[Event] = []
        if not token_ids:
            return out
        if self._state == _CONTENT and max(token_ids) < FIRST_SPECIAL:
            self._pending.extend(token_ids)  # hot path: a run of plain content
        else:
            pending = self._pending
            for tok in token_ids:
                if self._state == _CONTENT:
                    if tok < FIRST_SPECIAL:
                        pending.append(tok)
                    else:
                        self._content_special(tok, out)
                elif self._state == _HEADER:
                    self._header_token(tok, out)
                else:
                    self._between(tok, out)
        self._flush(out)
        return out

    def finish(self) -> list[Event]:
        """End of output (also without a stop token, e.g. at max_tokens)."""
        out: list[Event] = []
        if self._state == _CONTENT:
            self._close(out, counted=False)
        # A header cut off by max_tokens is dropped: it was never content.
        self._header = []
        self._state = _EXPECT_START
        return out

    # ------------------------------------------------------------------ states

    def _content_special(self, tok: int, out: list[Event]) -> None:
        if tok in _STOPS:
            self._close(out, counted=True)
            self.done = tok != END
            self._state = _EXPECT_START
        elif tok in (START, CHANNEL):
            self._bad(f"token {tok} inside a message")
            self._close(out, counted=False)
            self._open_header(tok)
        else:
            self._bad(f"stray special token {tok} inside a message")

    def _header_token(self, tok: int, out: list[Event]) -> None:
        header = self._header
        if tok == MESSAGE:
            self._begin_content(decode_text(header), out)
        elif tok in _STOPS:
            if header:
                self._bad("message header ended by a stop token")
                h, body = salvage_header(decode_text(header))
                self._set_sink(h, out)
                self._emit(body, out)
                self._sink = _TEXT
            self._header = []
            self.done = tok != END
            self._state = _EXPECT_START
        elif tok == START:
            self._bad("<|start|> inside a message header")
            self._open_header(tok)
        elif tok < FIRST_SPECIAL or tok in (CHANNEL, CONSTRAIN):
            header.append(tok)
            if not self._plausible():
                self._header_was_text(out)
        else:
            self._bad(f"stray special token {tok} in a message header")

    def _between(self, tok: int, out: list[Event]) -> None:
        if tok == START:
            self._open_header(tok)
        elif tok in _STOPS:
            return  # a repeated stop is harmless
        elif tok == MESSAGE:
            self._bad("<|message|> without a header")
            self._begin_content("", out)
        elif tok < FIRST_SPECIAL or tok == CHANNEL:
            self._bad("message without <|start|>")
            self._open_header(START)
            self._header_token(tok, out)
        else:
            self._bad(f"stray special token {tok} between messages")

    # ----------------------------------------------------------------- helpers

    def _open_header(self, tok: int) -> None:
        self._state = _HEADER
        self._role_next = tok == START
        self._header = [] if tok == START else [tok]

    def _plausible(self) -> bool:
        header = self._header
        if len(header) > MAX_HEADER_TOKENS:
            return False
        return is_header_prefix(decode_text(header))

    def _header_was_text(self, out: list[Event]) -> None:
        """The header cannot be one: it was content (after a channel, if any)."""
        self._bad("text where a message header was expected")
        header = self._header
        self._framing = 0
        self._state = _CONTENT
        if CHANNEL in header:
            h, body = salvage_header(decode_text(header))
            self._set_sink(h, out)
            self._emit(body, out)
        else:
            self._sink = _TEXT
            self._pending.extend(header)  # still undecoded: keeps UTF-8 splits whole
        self._header = []

    def _begin_content(self, text: str, out: list[Event]) -> None:
        h = self.header = parse_header(text)
        if h.rest:
            self._bad(f"unexpected text in message header: {text!r}")
        self._framing = len(self._header) + 1 + self._role_next
        self._header = []
        self._set_sink(h, out)
        self._state = _CONTENT

    def _set_sink(self, h: Header, out: list[Event]) -> None:
        recipient = h.recipient
        if h.role not in (None, "assistant"):
            self._bad(f"the model wrote a {h.role} message")
            self._sink = _DROP
        elif recipient is not None and recipient.startswith("functions."):
            self._sink = _TOOL
            self._tool_index += 1
            out.append(ToolCallStart(self._tool_index, recipient[10:]))
        elif recipient not in (None, "assistant", "user", "all") or h.channel == "analysis":
            self._sink = _REASONING
        else:
            self._sink = _TEXT

    def _flush(self, out: list[Event]) -> None:
        pending = self._pending
        if not pending:
            return
        data = _token_bytes(pending)
        if self._sink == _REASONING:
            self.reasoning_tokens += len(pending)
        pending.clear()
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if not data.isascii():
            cut = _incomplete_tail(data)
            if cut:
                self._carry = data[-cut:]
                data = data[:-cut]
        self._emit(data.decode("utf-8", "replace"), out)

    def _close(self, out: list[Event], *, counted: bool) -> None:
        self._flush(out)
        if self._carry:  # a character cut off by the end of the message
            self._emit(self._carry.decode("utf-8", "replace"), out)
            self._carry = b""
        if self._sink == _REASONING:
            self.reasoning_tokens += self._framing + counted
        self._framing = 0
        self._sink = _TEXT

    def _emit(self, text: str, out: list[Event]) -> None:
        if not text:
            return
        sink = self._sink
        last = out[-1] if out else None
        if sink == _TEXT:
            if type(last) is ContentDelta:
                out[-1] = ContentDelta(last.text + text)
            else:
                out.append(ContentDelta(text))
        elif sink == _REASONING:
            if type(last) is ReasoningDelta:
                out[-1] = ReasoningDelta(last.text + text)
            else:
                out.append(ReasoningDelta(text))
        elif sink == _TOOL:
            index = self._tool_index
            if type(last) is ToolCallArgsDelta and last.index == index:
                out[-1] = ToolCallArgsDelta(index, last.text + text)
            else:
                out.append(ToolCallArgsDelta(index, text))

    def _bad(self, why: str) -> None:
        self.malformed = True
        if not self._warned:
            self._warned = True
            log.warning("malformed Harmony output (%s); recovering", why)


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of `data` start a UTF-8 character not yet complete."""
    for i in range(1, min(4, len(data) + 1)):
        b = data[-i]
        if b < 0x80:
            return 0
        if b >= 0xC0:  # a lead byte: complete when enough continuation bytes follow
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return i if need > i else 0
    return 0
