"""Parser events -> Responses output items, and the stream events that build them.

One `OutputBuilder` serves both paths: the non-streamed response is the
builder's items once the events are exhausted, and the stream is the events
it returned along the way, so the two can never disagree.

Items: a run of reasoning deltas is one `reasoning` item (its text in
`content[0]`, and in `encrypted_content` when the client asked for it: the
text is not secret here, and clients such as Codex replay only that field);
a run of answer text is one `message`; each tool call is one `function_call`.
"""

from __future__ import annotations

import uuid
from typing import Any

from worker.harmony.parser import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputBuilder:
    def __init__(self, *, encrypted_reasoning: bool):
        self.encrypted = encrypted_reasoning
        self.items: list[dict[str, Any]] = []  # finished items, then the open one
        self._kind: str | None = None  # type of the open item
        self._text: list[str] = []  # the open item's text (or arguments) so far

    # -- feeding ------------------------------------------------------------------
    def feed(self, events: list[Any]) -> list[dict[str, Any]]:
        """Stream events (without sequence numbers) for a list of parser events."""
        out: list[dict[str, Any]] = []
        for ev in events:
            kind = type(ev)
            if kind is ReasoningDelta:
                if self._kind != "reasoning":
                    self._open_reasoning(out)
                self._delta("response.reasoning_text.delta", ev.text, out)
            elif kind is ContentDelta:
                if self._kind != "message":
                    self._open_message(out)
                self._delta("response.output_text.delta", ev.text, out, logprobs=[])
            elif kind is ToolCallStart:
                self._open_call(ev.name, out)
            elif kind is ToolCallArgsDelta and self._kind == "function_call":
                self._text.append(ev.text)
                out.append({"type": "response.function_call_arguments.delta",
                            "item_id": self.items[-1]["id"],
                            "output_index": len(self.items) - 1, "delta": ev.text})
        return out

    def finish(self, *, incomplete: bool = False) -> list[dict[str, Any]]:
        """Close the open item (`incomplete`: output stopped at the token limit)."""
        out: list[dict[str, Any]] = []
        self._close(out, "incomplete" if incomplete else "completed")
        return out

    # -- items ----------------------------------------------------------------------
    def _open_reasoning(self, out: list[dict[str, Any]]) -> None:
        self._close(out, "completed")
        item = {"id": new_id("rs"), "type": "reasoning", "summary": [], "content": [],
                "status": "in_progress"}
        self._open(item, out)
        out.append(self._part_event("response.content_part.added",
                                    {"type": "reasoning_text", "text": ""}))

    def _open_message(self, out: list[dict[str, Any]]) -> None:
        self._close(out, "completed")
        item = {"id": new_id("msg"), "type": "message", "role": "assistant", "content": [],
                "status": "in_progress"}
        self._open(item, out)
        out.append(self._part_event("response.content_part.added", _output_text("")))

    def _open_call(self, name: str, out: list[dict[str, Any]]) -> None:
        self._close(out, "completed")
        item = {"id": new_id("fc"), "type": "function_call", "call_id": new_id("call"),
                "name": name, "arguments": "", "status": "in_progress"}
        self._open(item, out)

    def _open(self, item: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self.items.append(item)
        self._kind = item["type"]
        self._text = []
        out.append({"type": "response.output_item.added", "output_index": len(self.items) - 1,
                    "item": dict(item)})

    def _close(self, out: list[dict[str, Any]], status: str) -> None:
        kind = self._kind
        if kind is None:
            return
        item = self.items[-1]
        text = "".join(self._text)
        where = {"item_id": item["id"], "output_index": len(self.items) - 1}
        if kind == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            out.append({"type": "response.reasoning_text.done", **where, "content_index": 0,
                        "text": text})
            out.append(self._part_event("response.content_part.done", part))
            item["content"] = [part]
            if self.encrypted:
                item["encrypted_content"] = text
        elif kind == "message":
            part = _output_text(text)
            out.append({"type": "response.output_text.done", **where, "content_index": 0,
                        "text": text, "logprobs": []})
            out.append(self._part_event("response.content_part.done", part))
            item["content"] = [part]
        else:
            item["arguments"] = text
            out.append({"type": "response.function_call_arguments.done", **where,
                        "name": item["name"], "arguments": text})
        item["status"] = status
        out.append({"type": "response.output_item.done", "output_index": where["output_index"],
                    "item": item})
        self._kind = None
        self._text = []

    def _delta(self, kind: str, text: str, out: list[dict[str, Any]], **extra: Any) -> None:
        self._text.append(text)
        out.append({"type": kind, "item_id": self.items[-1]["id"],
                    "output_index": len(self.items) - 1, "content_index": 0, "delta": text,
                    **extra})

    def _part_event(self, kind: str, part: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "item_id": self.items[-1]["id"],
                "output_index": len(self.items) - 1, "content_index": 0, "part": dict(part)}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
