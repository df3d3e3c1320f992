"""One choice of a completion: engine calls in Harmony phases -> parser events.

Every OpenAI surface (chat completions, responses) describes a choice as a
`ChoicePlan` and runs it with `run_choice`; the plan's `mode` picks the phases:

* ``free``: one engine call that stops on the Harmony stop tokens.
* ``forced_call`` (`must_call`: tool_choice `required`, a named function, or
  `allowed_tools` in required mode): the model reasons freely in the analysis
  channel, then the worker writes the tool-call header itself (letting the model
  pick the name when there are several) and the arguments follow that tool's schema.
* ``forced_answer`` (`answer` set and no tools offered): free reasoning, then the
  worker opens the final channel and the answer follows the JSON schema.
* ``guided`` (`answer` set while tools are offered, or a `strict` tool offered):
  the model stays free to reason, write preambles and call any tool. Each
  engine call stops right after a message header (`<|message|>`); the header the
  model wrote decides how its body is generated: the final channel follows the
  `answer` schema, a call `to=functions.NAME` of a strict tool follows NAME's
  schema, anything else stays free. The constraint starts only once the model
  itself chose to answer or to call.

Constraints use the engine's structured output (vLLM structured outputs) on the
body of one message only; reasoning stays free and the constrained part is valid
by construction.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from worker.engine.api import Engine, FinishReason, SamplingOptions, TokenLogprob
from worker.harmony.choice import ChoiceFinish, ChoicePlan, ChoiceResult
from worker.harmony.parser import ContentDelta, HarmonyStreamParser, ToolCallStart
from worker.harmony.raw import AnswerLogprobs as AnswerLogprobs
from worker.harmony.raw import RawDecoder
from worker.harmony.render import (
    analysis_prefix_tokens,
    final_prefix_tokens,
    tool_call_prefix_tokens,
)
from worker.harmony.tokens import (
    CALL,
    END,
    FIRST_SPECIAL,
    MESSAGE,
    RETURN,
    decode_text,
    stop_token_ids,
    text_stop_token_ids,
)


class _Run:
    """The context, budget and parser of one choice across its engine calls."""

    def __init__(self, engine: Engine, request_id: str, plan: ChoicePlan, result: ChoiceResult):
        self.engine, self.request_id, self.plan, self.result = engine, request_id, plan, result
        self.parser = HarmonyStreamParser()
        self.raw = RawDecoder(skip_special_tokens=plan.skip_special_tokens,
                              stop_token_ids=(*text_stop_token_ids(),
                                              *plan.options.stop_token_ids)) \
            if plan.raw else None
        self.pending_logprobs: list[TokenLogprob] = []
        self.ctx = list(plan.prompt)
        self.budget = plan.options.max_tokens
        self.last = -1  # the last token of the latest engine call

    def inject(self, tokens: Sequence[int]) -> list[Any]:
        """Append tokens the worker writes itself (Harmony headers); they count as output."""
        self.ctx.extend(tokens)
        self.budget -= len(tokens)
        self.result.completion_tokens += len(tokens)
        return self.parser.feed(tokens) if tokens else []

    def options(self, **changes: Any) -> SamplingOptions:
        """The plan's sampling options for one engine call: unconstrained unless changed."""
        base = {"max_tokens": max(1, self.budget), "stop_token_ids": stop_token_ids(),
                "json_schema": None, "json_object": False, "choice": None}
        return replace(self.plan.options, **{**base, **changes})

    async def generate(
        self, opts: SamplingOptions, tag: str, *, parse: bool = True, end_with: int | None = None
    ) -> AsyncGenerator[tuple[list[int], list[Any]], None]:
        """One engine call on the context so far. `end_with`: a constrained body ends with the
        tokenizer's end-of-sequence token; the message ends with this one (<|call|>/<|return|>)."""
        rid = f"{self.request_id}-{tag}"
        self.last = -1
        async with aclosing(self.engine.generate(rid, self.ctx, opts)) as deltas:
            async for delta in deltas:
                toks = list(delta.token_ids)
                if (end_with is not None and delta.finish_reason == "stop" and toks
                        and toks[-1] >= FIRST_SPECIAL):
                    toks[-1] = end_with
                self.ctx.extend(toks)
                self.budget -= len(toks)
                self.result.completion_tokens += len(toks)
                self.last = toks[-1] if toks else self.last
                if delta.finished:
                    self.result.finish_reason = _finish(delta.finish_reason)
                if self.raw is not None:
                    events = self.raw.feed(toks, delta.logprobs,
                                           stopped=delta.finish_reason == "stop")
                elif not (parse and toks):
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
    """Yield lists of streaming events (see worker.harmony.parser) for one choice.

    `result` holds the counts so far at every step, also when the caller stops early
    (a `stop` string) and closes this generator.
    """
    run = _Run(engine, request_id, plan, result)
    phases = {"free": _free, "guided": _guided, "forced_call": _forced_call,
              "forced_answer": _forced_answer, "raw": _raw}[plan.mode]
    try:
        async with aclosing(phases(run)) as gen:
            async for events in gen:
                yield events
        yield run.raw.finish() if run.raw is not None else run.parser.finish()
    finally:
        result.malformed = run.parser.malformed
        result.reasoning_tokens = run.parser.reasoning_tokens
        if result.tool_calls and result.finish_reason == "stop":
            result.finish_reason = "tool_calls"


async def _free(run: _Run) -> AsyncGenerator[list[Any], None]:
    """One engine call up to <|return|> or <|call|>."""
    async with aclosing(run.generate(run.options(), "0")) as gen:
        async for _, events in gen:
            yield events


async def _raw(run: _Run) -> AsyncGenerator[list[Any], None]:
    """One engine call up to an end-of-sequence token (or a requested stop token)."""
    stops = (*text_stop_token_ids(), *run.plan.options.stop_token_ids)
    async with aclosing(run.generate(run.options(stop_token_ids=stops), "0")) as gen:
        async for _, events in gen:
            yield events


async def _guided(run: _Run) -> AsyncGenerator[list[Any], None]:
    """Free, but each message header the model writes decides how its body is generated."""
    plan = run.plan
    strict = {t.name for t in plan.tools if t.strict}
    for step in itertools.count():
        opts = run.options(stop_token_ids=(*stop_token_ids(), MESSAGE))
        async with aclosing(run.generate(opts, f"g{step}")) as gen:
            async for _, events in gen:
                yield events
        header = run.parser.header
        if run.last != MESSAGE or header is None:
            return  # the turn ended (<|return|>, <|call|>) or the budget did
        if run.budget <= 0:
            run.result.finish_reason = "length"  # a header with no room left for its body
            return
        recipient = header.recipient or ""
        by_assistant = header.role in (None, "assistant")
        called = recipient[len("functions."):] if recipient.startswith("functions.") else None
        if by_assistant and called in strict:
            opts, end_with = run.options(json_schema=plan.arguments_schema(called)), CALL
        elif (by_assistant and plan.answer is not None and header.channel == "final"
              and recipient in ("", "all")):
            opts, end_with = _answer_options(run), RETURN
        else:
            continue  # reasoning, a preamble, a call of a non-strict tool: the body stays free
        async with aclosing(run.generate(opts, f"c{step}", end_with=end_with)) as gen:
            async for _, events in gen:
                yield events
        return


def _answer_options(run: _Run) -> SamplingOptions:
    answer = run.plan.answer
    assert answer is not None
    return run.options(json_schema=answer.schema, json_object=answer.schema is None)


async def _forced_answer(run: _Run) -> AsyncGenerator[list[Any], None]:
    """Free reasoning, then the worker opens the final channel; the body follows the schema."""
    async with aclosing(_reason(run)) as reason:
        async for events in reason:
            yield events
    if run.budget <= 0:
        run.result.finish_reason = "length"
        return
    yield run.inject(final_prefix_tokens())
    if run.budget <= 0:  # the header took the last of the budget
        run.result.finish_reason = "length"
        return
    async with aclosing(run.generate(_answer_options(run), "j", end_with=RETURN)) as gen:
        async for _, events in gen:
            yield events


async def _reason(run: _Run) -> AsyncGenerator[list[Any], None]:
    """Phase 1 of a forced choice: free reasoning in the analysis channel."""
    stops = stop_token_ids()
    opts = run.options(max_tokens=max(1, min(run.plan.reasoning_budget, run.budget - 1)),
                       stop_token_ids=(END, *stops))
    yield run.inject(analysis_prefix_tokens())
    async with aclosing(run.generate(opts, "a")) as gen:
        async for _, events in gen:
            yield events
    if run.last != END:
        # Budget spent, or the model ended the turn: close the analysis message ourselves.
        if run.last in stops:
            run.ctx.pop()
        yield run.inject([END])


async def _forced_call(run: _Run) -> AsyncGenerator[list[Any], None]:
    """Reasoning, then the worker opens a tool-call header; the arguments follow the schema."""
    async with aclosing(_reason(run)) as reason:
        async for events in reason:
            yield events
    if run.budget <= 0:
        run.result.finish_reason = "length"
        return
    names = run.plan.must_call
    name = names[0]
    if len(names) > 1:
        # Let the model pick the function after `to=functions.`, constrained to the names.
        mark = len(run.ctx)
        header = tool_call_prefix_tokens(None, after_message=True)
        run.ctx.extend(header)
        pick = run.options(max_tokens=64, choice=names)
        picked: list[int] = []
        async with aclosing(run.generate(pick, "n", parse=False)) as gen:
            async for toks, _ in gen:
                picked.extend(t for t in toks if t < FIRST_SPECIAL)
        text = decode_text(picked).strip()
        name = text if text in names else names[0]
        generated = len(run.ctx) - mark - len(header)
        run.result.completion_tokens -= generated  # the header is re-added whole below
        run.budget += generated
        del run.ctx[mark:]
    yield run.inject(tool_call_prefix_tokens(name, after_message=True))
    opts = run.options(json_schema=run.plan.arguments_schema(name))
    async with aclosing(run.generate(opts, "t", end_with=CALL)) as gen:
        async for _, events in gen:
            yield events
    run.result.tool_calls = max(run.result.tool_calls, 1)


def _finish(reason: FinishReason | None) -> ChoiceFinish:
    """The engine's end of a call as an OpenAI value: an abort cut the output short."""
    return "length" if reason in ("length", "abort") else "stop"


def _count(events: list[Any], result: ChoiceResult) -> None:
    for ev in events:
        if isinstance(ev, ToolCallStart):
            result.tool_calls += 1


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
