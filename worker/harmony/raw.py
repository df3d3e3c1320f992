"""Raw text output: completion tokens -> text deltas, without the Harmony grammar.

A text completion (`/v1/completions`, a RunPod `prompt` job) renders no chat
template and parses no messages: its output is the tokens' text, as vLLM's
detokenizer gives it. Special tokens (`<|channel|>`, `<|end|>`...) are left out
unless `skip_special_tokens` is off; the stop token that ended the generation is
never part of the text. Characters split across tokens stay whole (an
incremental UTF-8 decoder), and each delta's logprobs follow the text they made,
as `AnswerLogprobs`, so `stop` strings and metrics work on these events exactly
as on a chat answer.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.engine.api import TokenLogprob
from worker.harmony.parser import ContentDelta
from worker.harmony.tokens import FIRST_SPECIAL, token_bytes


@dataclass(frozen=True, slots=True)
class AnswerLogprobs:
    """Event: logprobs of the tokens that produced the content before it."""

    entries: tuple[TokenLogprob, ...]


class RawDecoder:
    """Feed output tokens; get `ContentDelta` (and `AnswerLogprobs`) events back."""

    def __init__(self, *, skip_special_tokens: bool = True,
                 stop_token_ids: Sequence[int] = ()):
        self.skip_special = skip_special_tokens
        self.stops = frozenset(stop_token_ids)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, toks: Sequence[int], logprobs: Sequence[TokenLogprob] | None = None,
             *, stopped: bool = False) -> list[Any]:
        """`stopped`: the generation ended on its last token; a stop token there is not text."""
        shown = list(toks)
        if stopped and shown and shown[-1] in self.stops:
            shown.pop()
        if self.skip_special:
            shown = [t for t in shown if t < FIRST_SPECIAL]
        text = self.decoder.decode(token_bytes(shown)) if shown else ""
        events: list[Any] = [ContentDelta(text)] if text else []
        if logprobs:
            events.append(AnswerLogprobs(tuple(logprobs)))
        return events

    def finish(self) -> list[Any]:
        """What a split character left behind once the output ended (as U+FFFD)."""
        text = self.decoder.decode(b"", final=True)
        return [ContentDelta(text)] if text else []
