"""One text choice's events -> its text and OpenAI's completions `logprobs` object.

The events are those of a raw choice (worker.harmony.raw): `ContentDelta` text and
`AnswerLogprobs` for the tokens that made it. The logprobs shape is the legacy
completions one: parallel lists `tokens`, `token_logprobs`, `top_logprobs` (a dict
token -> logprob per position, the sampled token included) and `text_offset` (where
each token's text starts in the choice's text, echoed prompt included).
"""

from __future__ import annotations

from typing import Any

from worker.harmony.parser import ContentDelta
from worker.harmony.raw import AnswerLogprobs
from worker.harmony.tokens import FIRST_SPECIAL, token_bytes


def token_text(token_id: int) -> str:
    return token_bytes([token_id]).decode("utf-8", "replace")


class ChoiceText:
    def __init__(self, *, echo: str = "", logprobs: bool = False,
                 skip_special_tokens: bool = True):
        self.parts = [echo] if echo else []
        self.offset = len(echo)
        self.skip_special = skip_special_tokens
        self.lp: dict[str, list[Any]] | None = (
            {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            if logprobs else None)

    def feed(self, events: list[Any]) -> tuple[str, dict[str, list[Any]] | None]:
        """Take one step's events; return the text and logprobs they add."""
        text: list[str] = []
        delta: dict[str, list[Any]] | None = None
        for ev in events:
            if isinstance(ev, ContentDelta):
                text.append(ev.text)
            elif isinstance(ev, AnswerLogprobs) and self.lp is not None:
                delta = delta or {k: [] for k in self.lp}
                for e in ev.entries:
                    tok = token_text(e.token_id)
                    top = {token_text(t): lp for t, lp in e.top}
                    top.setdefault(tok, e.logprob)
                    delta["tokens"].append(tok)
                    delta["token_logprobs"].append(e.logprob)
                    delta["top_logprobs"].append(top)
                    delta["text_offset"].append(self.offset)
                    if not (self.skip_special and e.token_id >= FIRST_SPECIAL):
                        self.offset += len(tok)
        if delta is not None and self.lp is not None:
            for k, v in delta.items():
                self.lp[k].extend(v)
        out = "".join(text)
        if out:
            self.parts.append(out)
        return out, delta

    def text(self) -> str:
        return "".join(self.parts)

    def logprobs(self) -> dict[str, list[Any]] | None:
        return self.lp
