"""Harmony message headers, parsed leniently: role, `<|channel|>` value, `to=` recipient,
content type, in either order; unknown words are kept apart, never raised on."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEADER_TOKENS = 64  # a longer header is text, not a header
_ROLES = frozenset(("assistant", "user", "system", "developer", "tool"))
_TO = r"(?:to(?:=[^\s<]*)?\s*)?"
# Every prefix of a well-formed header matches (tokens arrive one by one).
_ROLE = r"(?:(?:assistant|user|system|developer|tool|[\w\-]+\.[\w\-.]*)\s*)?"
_HEADER_PREFIX = re.compile(
    rf"\s*{_ROLE}{_TO}(?:<\|channel\|>[\w\-]*\s*{_TO})?(?:(?:<\|constrain\|>\s*[^\s<]*|json)\s*)?"
)
_CHANNEL_MARK = "<|channel|>"
_CONSTRAIN_MARK = "<|constrain|>"
_VALUE = re.compile(r"[^\s<]*")
_TAIL = re.compile(r"^[^\s<]*\s*(?:to=[^\s<]*\s*)?(?:<\|constrain\|>[^\s<]*\s*)?")


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed message header: who wrote it, its channel, its recipient."""

    role: str | None
    channel: str | None
    recipient: str | None
    rest: str  # words that are no part of a header ("" when well formed)


def parse_header(text: str) -> Header:
    """Harmony's header rules, without errors: unknown words end up in `rest`."""
    channel = None
    i = text.find(_CHANNEL_MARK)
    if i >= 0:
        after = text[i + len(_CHANNEL_MARK) :]
        end = _VALUE.match(after).end()  # type: ignore[union-attr]
        channel = after[:end] or None
        text = f"{text[:i]} {after[end:]}"
    parts = text.replace(_CONSTRAIN_MARK, " " + _CONSTRAIN_MARK).split()
    role = None
    if parts and parts[0] in _ROLES:
        role = parts.pop(0)
    elif len(parts) > 1 and "." in parts[0] and parts[1].startswith("to="):
        role = "tool"  # a tool author such as `functions.f to=assistant`
        parts.pop(0)
    recipient = None
    rest: list[str] = []
    for p in parts:
        if p.startswith("to=") and recipient is None:
            recipient = p[3:]
        elif p.startswith(_CONSTRAIN_MARK) or p == "json":
            continue  # the content type; we do not need it
        elif recipient is None and p.startswith("functions."):
            recipient = p
        else:
            rest.append(p)
    return Header(role, channel, recipient, " ".join(rest))


def salvage_header(text: str) -> tuple[Header, str]:
    """A header that never reached <|message|>: its metadata and the text it swallowed."""
    h = parse_header(text)
    i = text.find(_CHANNEL_MARK)
    if i >= 0:
        return h, _TAIL.sub("", text[i + len(_CHANNEL_MARK) :], count=1)
    if h.role is None and h.recipient is None:
        return h, text
    return h, h.rest


def is_header_prefix(text: str) -> bool:
    """Whether `text` can still grow into a well-formed header (tokens arrive one by one)."""
    return _HEADER_PREFIX.fullmatch(text) is not None
