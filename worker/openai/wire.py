"""Fast JSON for the streaming hot path (one encode per SSE chunk)."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    """JSON bytes of plain dicts/lists/str/numbers (no pydantic models)."""
    return _encoder.encode(obj)


def sse(obj: Any) -> bytes:
    """One server-sent event carrying `obj` as JSON."""
    return b"data: " + _encoder.encode(obj) + b"\n\n"


def named_sse(name: str, obj: Any) -> bytes:
    """One server-sent event with an `event:` name (the Responses API's form)."""
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(obj) + b"\n\n"
