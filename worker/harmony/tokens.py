"""The gpt-oss ("o200k_harmony") vocabulary: special token ids, the encoding, text <-> tokens.

`openai_harmony` (the `oss-harmony` package, vocab embedded) is loaded lazily by
`encoding()`; importing this module costs nothing. Every other Harmony module
takes its token ids and byte table from here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding

# Special token ids of the gpt-oss ("o200k_harmony") vocabulary.
RETURN = 200002  # <|return|>: the assistant ends its turn
CONSTRAIN = 200003  # <|constrain|>: content type marker in a header
CHANNEL = 200005  # <|channel|>
START = 200006  # <|start|>
END = 200007  # <|end|>: end of one message (the turn goes on)
MESSAGE = 200008  # <|message|>: header done, content follows
CALL = 200012  # <|call|>: the assistant calls a tool
ENDOFTEXT = 199999  # <|endoftext|>: the tokenizer's end of a plain text
FIRST_SPECIAL = 199998  # every id from here on is a special (or reserved) token
VOCAB_SIZE = 201088


@functools.cache
def encoding() -> HarmonyEncoding:
    """The gpt-oss Harmony encoding, loaded once."""
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def stop_token_ids() -> tuple[int, ...]:
    """Tokens that end an assistant action: <|return|> and <|call|> (not <|end|>)."""
    return (RETURN, CALL)


def text_stop_token_ids() -> tuple[int, ...]:
    """Tokens that end a raw text completion (the checkpoint's end-of-sequence ids)."""
    return (RETURN, ENDOFTEXT, CALL)


def encode_prompt(text: str) -> list[int]:
    """A raw prompt to tokens: special tokens written as text (`<|start|>`) are special, as
    vLLM's tokenizer reads a completion prompt. Only raw text completions use this."""
    return list(encoding().encode(text, allowed_special="all"))


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
