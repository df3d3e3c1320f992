"""One choice described (`ChoicePlan`: prompt, sampling, tools, constraints; its `mode`
picks the phases `generation.run_choice` runs) and reported (`ChoiceResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from worker.engine.api import SamplingOptions
from worker.harmony.conversation import FunctionTool

Mode = Literal["free", "forced_call", "forced_answer", "guided", "raw"]
# What a choice reports as its end (OpenAI's values; an engine abort counts as "length").
ChoiceFinish = Literal["stop", "length", "tool_calls"]

# Reasoning budget of a forced phase when the client sets no max_tokens.
REASONING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """The answer (final channel) must be JSON: matching `schema`, or any object when None."""

    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChoicePlan:
    """How to generate one choice; built by an OpenAI service from a validated request.

    prompt: the rendered prompt, ending with `<|start|>assistant`.
    options: sampling; `max_tokens` is the whole completion budget (headers included).
    tools: the functions offered in the prompt; a `strict` one's arguments are constrained
        to its `parameters` whenever the model calls it.
    must_call: non-empty = the turn must be a call to one of these names (the arguments
        are then constrained whatever `strict` says).
    answer: constrain the final answer to JSON (response_format json_object/json_schema).
    reasoning_budget: analysis tokens before a forced phase opens its message.
    raw: a text completion: no Harmony grammar, the output is the tokens' text
        (worker.harmony.raw), ended by the checkpoint's end-of-sequence tokens and any
        `options.stop_token_ids`; `skip_special_tokens` leaves special tokens out of it.
    """

    prompt: tuple[int, ...]
    options: SamplingOptions
    tools: tuple[FunctionTool, ...] = ()
    must_call: tuple[str, ...] = ()
    answer: JsonAnswer | None = None
    reasoning_budget: int = 4096
    raw: bool = False
    skip_special_tokens: bool = True

    @property
    def mode(self) -> Mode:
        if self.raw:
            return "raw"
        if self.must_call:
            return "forced_call"
        if self.answer is not None and not self.tools:
            return "forced_answer"
        if self.answer is not None or any(t.strict for t in self.tools):
            return "guided"
        return "free"

    def arguments_schema(self, name: str) -> dict[str, Any]:
        """The JSON schema of `name`'s arguments (any object when it declares none)."""
        tool = next((t for t in self.tools if t.name == name), None)
        return (tool.parameters if tool is not None else None) or ANY_OBJECT


@dataclass
class ChoiceResult:
    """Filled in while the events stream; final once the iterator ends or is closed."""

    completion_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: ChoiceFinish = "stop"
    malformed: bool = False
    tool_calls: int = 0
