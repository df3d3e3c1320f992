"""`stop` strings, applied to the answer text (the final channel) as it streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.harmony.generation import AnswerLogprobs
from worker.harmony.parser import ContentDelta


class StopMatcher:
    """Cuts content at the first stop string; holds back a possible partial match."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.hit = False

    def filter(self, events: list[Any]) -> list[Any]:
        out: list[Any] = []
        for ev in events:
            if self.hit:
                break
            if not isinstance(ev, ContentDelta):
                if self.pending and not isinstance(ev, AnswerLogprobs):
                    # The answer text ended (a tool call or reasoning follows): what was held
                    # back can no longer start a stop string; release it first, in order.
                    out.append(ContentDelta(self.pending))
                    self.pending = ""
                out.append(ev)
                continue
            text = self.pending + ev.text
            cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
            if cut >= 0:
                self.hit = True
                self.pending = ""
                if cut:
                    out.append(ContentDelta(text[:cut]))
                break
            split = max(0, len(text) - self.keep)
            self.pending = text[split:]
            if split:
                out.append(ContentDelta(text[:split]))
        return out

    def flush(self) -> list[Any]:
        """The held-back text once generation ended without a stop string."""
        if self.hit or not self.pending:
            return []
        text, self.pending = self.pending, ""
        return [ContentDelta(text)]
