"""One choice of a chat completion: engine calls in Harmony phases -> parser events.

Free mode is one engine call that stops on the Harmony stop tokens. When the
output must obey a constraint (tool_choice `required` or a named function,
or a JSON response_format) the model first reasons freely in the analysis
channel, then the worker opens the constrained message itself (the Harmony
header of a tool call or of the final channel) and lets vLLM's structured
output constrain only that message's body to the JSON schema. Reasoning stays
free; the constrained part is valid by construction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from worker.engine.api import Engine, FinishReason, SamplingOptions, TokenLogprob
from worker.harmony.parser import ContentDelta, HarmonyStreamParser, ToolCallStart
from worker.harmony.render import (
    analysis_prefix_tokens,
    final_prefix_tokens,
    tool_call_prefix_tokens,
)
from worker.harmony.tokens import CALL, END, FIRST_SPECIAL, RETURN, decode_text, stop_token_ids

Mode = Literal["free", "tool", "json"]

# Reasoning budget of a constrained request when the client sets no max_tokens.
REASONING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}


@dataclass(frozen=True)
class ChoicePlan:
    """How to generate one choice; built by the service from a validated request."""

    prompt: tuple[int, ...]
    options: SamplingOptions  # max_tokens = the whole completion budget
    mode: Mode = "free"
    tool_names: tuple[str, ...] = ()  # mode "tool": the allowed functions (one = named)
    tool_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None  # mode "json": None means any JSON object
    reasoning_budget: int = 4096


@dataclass(frozen=True, slots=True)
class AnswerLogprobs:
    """Event: logprobs of the answer (final channel) tokens that produced the content before it."""

    entries: tuple[TokenLogprob, ...]


@dataclass
class ChoiceResult:
    """Filled in while the events stream; final once the iterator is exhausted."""

    completion_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: FinishReason = "stop"
    malformed: bool = False
    tool_calls: int = 0


class _Run:
    """The context, budget and parser of one choice across its engine calls."""

    def __init__(self, engine: Engine, request_id: str, plan: ChoicePlan, result: ChoiceResult):
        self.engine, self.request_id, self.plan, self.result = engine, request_id, plan, result
        self.parser = HarmonyStreamParser()
        self.pending_logprobs: list[TokenLogprob] = []
        self.ctx = list(plan.prompt)
        self.budget = plan.options.max_tokens

    def inject(self, tokens: Sequence[int]) -> list[Any]:
        """Append tokens the worker writes itself (Harmony headers); they count as output."""
        self.ctx.extend(tokens)
        self.budget -= len(tokens)
        self.result.completion_tokens += len(tokens)
        return self.parser.feed(tokens) if tokens else []

    async def generate(
        self, opts: SamplingOptions, tag: str, *, parse: bool = True, call_not_return: bool = False
    ) -> AsyncGenerator[tuple[list[int], list[Any]], None]:
        rid = f"{self.request_id}-{tag}"
        async with aclosing(self.engine.generate(rid, self.ctx, opts)) as deltas:
            async for delta in deltas:
                toks = list(delta.token_ids)
                if call_not_return and delta.finished and toks and toks[-1] == RETURN:
                    # A grammar ends the JSON body with the tokenizer's EOS; a tool call ends
                    # with <|call|>.
                    toks[-1] = CALL
                self.ctx.extend(toks)
                self.budget -= len(toks)
                self.result.completion_tokens += len(toks)
                if delta.finished:
                    self.result.finish_reason = delta.finish_reason or "stop"
                if not (parse and toks):
                    events = []
                elif delta.logprobs:
                    events = self._feed_with_logprobs(toks, delta.logprobs)
                else:
                    events = self.parser.feed(toks)
                _count(events, self.result)
                yield toks, events


    def _feed_with_logprobs(
        self, toks: list[int], logprobs: tuple[TokenLogprob, ...]
    ) -> list[Any]:
        """Feed token by token so each answer token's logprob follows the text it made."""
        events: list[Any] = []
        for tok, lp in zip(toks, logprobs, strict=False):
            fed = self.parser.feed([tok])
            events.extend(fed)
            if not fed:
                if tok < FIRST_SPECIAL:
                    self.pending_logprobs.append(lp)  # half a character, or a header word
                else:
                    self.pending_logprobs.clear()
                continue
            if any(isinstance(e, ContentDelta) for e in fed):
                events.append(AnswerLogprobs((*self.pending_logprobs, lp)))
            self.pending_logprobs.clear()
        return events


async def run_choice(
    engine: Engine, request_id: str, plan: ChoicePlan, result: ChoiceResult
) -> AsyncGenerator[list[Any], None]:
    """Yield lists of streaming events (see worker.harmony.parser) for one choice."""
    run = _Run(engine, request_id, plan, result)
    stops = stop_token_ids()
    if plan.mode == "free":
        opts = replace(plan.options, stop_token_ids=stops)
        async with aclosing(run.generate(opts, "0")) as gen:
            async for _, events in gen:
                yield events
    else:
        async with aclosing(_reason(run)) as reason:
            async for events in reason:
                yield events
        if run.budget <= 0:
            result.finish_reason = "length"
        elif plan.mode == "tool":
            async with aclosing(_forced_tool(run)) as tool:
                async for events in tool:
                    yield events
        else:
            yield run.inject(final_prefix_tokens())
            if run.budget <= 0:  # the header took the last of the budget
                result.finish_reason = "length"
            else:
                opts = replace(
                    plan.options, max_tokens=run.budget, stop_token_ids=stops,
                    json_schema=plan.json_schema, json_object=plan.json_schema is None,
                )
                async with aclosing(run.generate(opts, "j")) as gen:
                    async for _, events in gen:
                        yield events
    yield run.parser.finish()
    result.malformed = run.parser.malformed
    result.reasoning_tokens = run.parser.reasoning_tokens
    if result.tool_calls and result.finish_reason == "stop":
        result.finish_reason = "tool_calls"  # type: ignore[assignment]


async def _reason(run: _Run) -> AsyncGenerator[list[Any], None]:
    """Phase 1 of a constrained choice: free reasoning in the analysis channel."""
    stops = stop_token_ids()
    opts = replace(
        run.plan.options,
        max_tokens=max(1, min(run.plan.reasoning_budget, run.budget - 1)),
        stop_token_ids=(END, *stops), json_schema=None, json_object=False, choice=None,
    )
    yield run.inject(analysis_prefix_tokens())
    last = -1
    async with aclosing(run.generate(opts, "a")) as gen:
        async for toks, events in gen:
            last = toks[-1] if toks else last
            yield events
    if last != END:
        # Budget spent, or the model ended the turn: close the analysis message ourselves.
        if last in stops:
            run.ctx.pop()
        yield run.inject([END])


async def _forced_tool(run: _Run) -> AsyncGenerator[list[Any], None]:
    """Phase 2: the worker opens a tool-call header; the arguments follow the schema."""
    names = run.plan.tool_names
    stops = stop_token_ids()
    name = names[0]
    if len(names) > 1:
        # Let the model pick the function after `to=functions.`, constrained to the names.
        mark = len(run.ctx)
        header = tool_call_prefix_tokens(None, after_message=True)
        run.ctx.extend(header)
        pick = replace(run.plan.options, max_tokens=64, choice=names, stop_token_ids=stops,
                       json_schema=None, json_object=False)
        picked: list[int] = []
        async with aclosing(run.generate(pick, "n", parse=False)) as gen:
            async for toks, _ in gen:
                picked.extend(t for t in toks if t not in stops)
        text = decode_text(picked).strip()
        name = text if text in names else names[0]
        generated = len(run.ctx) - mark - len(header)
        run.result.completion_tokens -= generated  # the header is re-added whole below
        run.budget += generated
        del run.ctx[mark:]
    yield run.inject(tool_call_prefix_tokens(name, after_message=True))
    opts = replace(
        run.plan.options, max_tokens=max(1, run.budget), stop_token_ids=stops,
        json_schema=run.plan.tool_schemas.get(name) or {"type": "object"},
        json_object=False, choice=None,
    )
    async with aclosing(run.generate(opts, "t", call_not_return=True)) as gen:
        async for _, events in gen:
            yield events
    run.result.tool_calls = max(run.result.tool_calls, 1)


def _count(events: list[Any], result: ChoiceResult) -> None:
    for ev in events:
        if isinstance(ev, ToolCallStart):
            result.tool_calls += 1


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
