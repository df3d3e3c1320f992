"""ChatService: OpenAI chat completions on top of the engine interface.

No transport and no environment here: adapters call `prepare` (which raises
the 4xx errors before anything is generated), then `complete` or `stream`.
Streaming and non-streaming share one code path (`run_choice` events), so the
concatenated stream always equals the non-streaming result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from worker import harmony
from worker.engine_api import Engine, SamplingOptions
from worker.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from worker.generation import (
    REASONING_BUDGET,
    AnswerLogprobs,
    ChoicePlan,
    ChoiceResult,
    run_choice,
)
from worker.protocol import (
    ChatCompletionRequest,
    validate_request,
)
from worker.responses import (
    ChatCompletion,
    ModelList,
)
from worker.stops import StopMatcher
from worker.streaming import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart


@dataclass(frozen=True)
class Limits:
    """Per-request limits; adapters enforce body size and batch lines themselves."""

    max_n: int = 8
    max_messages: int = 2048
    max_completion_tokens: int | None = None


@dataclass(frozen=True)
class Prepared:
    """A validated request, rendered and planned; ready to run."""

    request: ChatCompletionRequest
    id: str
    created: int
    model: str
    prompt_tokens: int
    plans: tuple[ChoicePlan, ...]
    stop: tuple[str, ...] = ()


@dataclass
class _Choice:
    """Accumulates one choice for the non-streaming response."""

    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class ChatService:
    def __init__(
        self,
        engine: Engine,
        *,
        default_effort: str = "medium",
        today: Callable[[], str] = lambda: dt.date.today().isoformat(),
        limits: Limits | None = None,
    ):
        self.engine = engine
        self.default_effort = default_effort
        self._today = today
        self.limits = limits or Limits()

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.engine.info.served_model_names

    def models(self) -> ModelList:
        return ModelList.model_validate({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "openai",
             "max_model_len": self.engine.info.max_model_len}
            for name in self.model_names
        ]})

    # -- preparation ----------------------------------------------------------
    def prepare(self, req: ChatCompletionRequest) -> Prepared:
        validate_request(req)
        if req.model and req.model not in self.model_names:
            raise ModelNotFound(
                f"model {req.model!r} is not served here; available: {list(self.model_names)}"
            )
        n = req.n or 1
        if n > self.limits.max_n:
            raise InvalidRequest(f"n must be at most {self.limits.max_n}", param="n")
        if len(req.messages) > self.limits.max_messages:
            raise InvalidRequest(
                f"at most {self.limits.max_messages} messages per request", param="messages")
        cap = self.limits.max_completion_tokens
        asked = req.effective_max_tokens()
        if cap is not None and asked is not None and asked > cap:
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise InvalidRequest(f"{param} must be at most {cap} on this worker", param=param)
        tool_choice = req.tool_choice
        tools = req.tools or []
        include_tools = bool(tools) and tool_choice != "none"
        prompt = harmony.render_prompt(
            req, include_tools=include_tools, today=self._today(),
            default_effort=self.default_effort,
        )
        max_len = self.engine.info.max_model_len
        if len(prompt) >= max_len:
            raise ContextLengthExceeded(
                f"this model's maximum context length is {max_len} tokens, but the messages "
                f"are {len(prompt)} tokens long"
            )
        room = max_len - len(prompt)
        if asked is not None and asked > room:
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise ContextLengthExceeded(
                f"{param}={asked} plus the {len(prompt)} prompt tokens exceeds this model's "
                f"maximum context length of {max_len} tokens (at most {room} here)",
                param=param,
            )
        budget = asked if asked is not None else min(room, cap or room)
        base = SamplingOptions(
            max_tokens=budget,
            temperature=1.0 if req.temperature is None else req.temperature,
            # OpenAI accepts top_p=0 (greedy); vLLM needs it above zero.
            top_p=1.0 if req.top_p is None else max(req.top_p, 1e-6),
            top_k=req.top_k or 0,
            min_p=req.min_p or 0.0,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        )
        effort = req.reasoning_effort or self.default_effort
        reasoning_budget = budget // 2 if asked is not None else REASONING_BUDGET.get(effort, 4096)
        plan = ChoicePlan(prompt=tuple(prompt), options=base,
                          reasoning_budget=max(1, min(reasoning_budget, budget - 1)))
        forced = _forced_tools(tool_choice, tools)
        if forced:
            schemas = {}
            for i, t in enumerate(tools):
                schema = t.function.parameters or {"type": "object"}
                if t.function.name in forced:
                    _check_schema(schema, f"tools[{i}].function.parameters")
                schemas[t.function.name] = schema
            plan = replace(plan, mode="tool", tool_names=forced, tool_schemas=schemas)
        elif req.response_format is not None and req.response_format.type != "text":
            answer_schema = _schema_of(req.response_format)
            if answer_schema is not None:
                _check_schema(answer_schema, "response_format.json_schema.schema")
            plan = replace(plan, mode="json", json_schema=answer_schema)
        plans = tuple(
            replace(plan, options=replace(base, seed=None if req.seed is None else req.seed + i))
            for i in range(n)
        )
        stop = req.stop if isinstance(req.stop, list) else ([req.stop] if req.stop else [])
        return Prepared(
            request=req, id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
            model=req.model or self.model_names[0], prompt_tokens=len(prompt), plans=plans,
            stop=tuple(s for s in stop if s),
        )

    # -- running ----------------------------------------------------------------
    async def complete(self, p: Prepared) -> ChatCompletion:
        results = [ChoiceResult() for _ in p.plans]
        acc = [_Choice() for _ in p.plans]

        async def one(i: int) -> None:
            async with aclosing(self._events(p, i, results[i])) as events_of:
                async for events in events_of:
                    _accumulate(acc[i], events)

        await asyncio.gather(*(one(i) for i in range(len(p.plans))))
        choices = []
        for i, (a, r) in enumerate(zip(acc, results, strict=True)):
            reasoning = "".join(a.reasoning) or None
            calls = [a.calls[k] for k in sorted(a.calls)]
            choices.append({
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": "".join(a.content) if a.content or not calls else None,
                    "reasoning": reasoning,
                    "reasoning_content": reasoning,
                    "tool_calls": calls or None,
                },
                "finish_reason": r.finish_reason,
                "logprobs": {"content": a.logprobs} if p.request.logprobs else None,
            })
        return ChatCompletion.model_validate({
            "id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
            "choices": choices, "usage": self._usage(p, results),
        })

    async def stream(self, p: Prepared) -> AsyncGenerator[dict[str, Any], None]:
        """Chat completion chunks as plain dicts in the wire shape (see `ChatCompletionChunk`).

        Dicts, not models: validating and dumping a pydantic model per chunk costs ten times
        what the chunk's JSON encoding does (`worker.wire.encode`); the tests validate every
        chunk against the model instead.
        """
        results = [ChoiceResult() for _ in p.plans]
        head = {"id": p.id, "object": "chat.completion.chunk", "created": p.created,
                "model": p.model}

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
            out = {**head, "choices": choices}
            if usage is not None:
                out["usage"] = usage
            return out

        for i in range(len(p.plans)):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}}])
        streams = [self._events(p, i, results[i]) for i in range(len(p.plans))]
        async with aclosing(_merge(streams)) as merged:
            async for i, events in merged:
                if events is None:
                    reason = results[i].finish_reason
                    yield chunk([{"index": i, "delta": {}, "finish_reason": reason}])
                    continue
                for entry in _deltas(events):
                    yield chunk([{"index": i, **entry}])
        opts = p.request.stream_options
        if opts is not None and opts.include_usage:
            yield chunk([], usage=self._usage(p, results))

    async def _events(
        self, p: Prepared, i: int, result: ChoiceResult
    ) -> AsyncGenerator[list, None]:
        stops = StopMatcher(p.stop) if p.stop else None
        gen = run_choice(self.engine, f"{p.id}-{i}", p.plans[i], result)
        try:
            async for events in gen:
                if stops is not None:
                    events = stops.filter(events)
                if events:
                    yield events
                if stops is not None and stops.hit:
                    result.finish_reason = "stop"
                    break
            if stops is not None:
                tail = stops.flush()
                if tail:
                    yield tail
        finally:
            await gen.aclose()  # aborts the engine request if it is still running

    def _usage(self, p: Prepared, results: list[ChoiceResult]) -> dict[str, Any]:
        completion = sum(r.completion_tokens for r in results)
        return {
            "prompt_tokens": p.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": p.prompt_tokens + completion,
            "completion_tokens_details": {
                "reasoning_tokens": sum(r.reasoning_tokens for r in results)
            },
        }


def _forced_tools(tool_choice: Any, tools: list[Any]) -> tuple[str, ...]:
    if tool_choice == "required":
        return tuple(t.function.name for t in tools)
    if tool_choice is not None and not isinstance(tool_choice, str):
        return (tool_choice.function.name,)
    return ()


def _check_schema(schema: Any, param: str) -> None:
    """A schema the output will be constrained to must be a valid JSON schema object."""
    import jsonschema

    if not isinstance(schema, dict):
        raise InvalidRequest("must be a JSON schema object", param=param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(f"invalid JSON schema{' at ' + where if where else ''}: "
                             f"{exc.message[:200]}", param=param) from None


def _schema_of(fmt: Any) -> dict[str, Any] | None:
    if fmt.type != "json_schema" or fmt.json_schema is None:
        return None
    js = fmt.json_schema
    schema = getattr(js, "schema_", None) or getattr(js, "json_schema", None)
    return dict(schema) if schema else {"type": "object"}


def _accumulate(acc: _Choice, events: list[Any]) -> None:
    for ev in events:
        if isinstance(ev, ContentDelta):
            acc.content.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            acc.reasoning.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            acc.calls[ev.index] = {"id": _call_id(), "type": "function",
                                   "function": {"name": ev.name, "arguments": ""}}
        elif isinstance(ev, ToolCallArgsDelta) and ev.index in acc.calls:
            acc.calls[ev.index]["function"]["arguments"] += ev.text
        elif isinstance(ev, AnswerLogprobs):
            acc.logprobs.extend(_logprob_entries(ev))


def _deltas(events: list[Any]) -> list[dict[str, Any]]:
    """Stream chunk choices (without index) for a list of events."""
    out: list[dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, ContentDelta):
            out.append({"delta": {"content": ev.text}})
        elif isinstance(ev, ReasoningDelta):
            out.append({"delta": {"reasoning": ev.text, "reasoning_content": ev.text}})
        elif isinstance(ev, ToolCallStart):
            call = {"index": ev.index, "id": _call_id(), "type": "function",
                    "function": {"name": ev.name, "arguments": ""}}
            out.append({"delta": {"tool_calls": [call]}})
        elif isinstance(ev, ToolCallArgsDelta):
            call = {"index": ev.index, "function": {"arguments": ev.text}}
            out.append({"delta": {"tool_calls": [call]}})
        elif isinstance(ev, AnswerLogprobs):
            logprobs = {"content": _logprob_entries(ev)}
            if out and "content" in out[-1]["delta"] and "logprobs" not in out[-1]:
                out[-1]["logprobs"] = logprobs  # ride on the content it belongs to
            else:
                out.append({"delta": {}, "logprobs": logprobs})
    return out


def _logprob_entries(ev: AnswerLogprobs) -> list[dict[str, Any]]:
    def one(token_id: int, logprob: float) -> dict[str, Any]:
        raw = harmony.token_bytes([token_id])
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    return [
        {**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
        for e in ev.entries
    ]


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


Events = AsyncGenerator[list, None]


async def _merge(gens: list[Events]) -> AsyncGenerator[tuple[int, list | None], None]:
    """Interleave several event streams; yields (index, events), and (index, None) at each end."""
    if len(gens) == 1:
        async with aclosing(gens[0]) as only:
            async for events in only:
                yield 0, events
        yield 0, None
        return
    queue: asyncio.Queue[tuple[int, list | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, g: AsyncGenerator[list, None]) -> None:
        try:
            async for events in g:
                await queue.put((i, events))
            await queue.put((i, None))
        except BaseException as exc:
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    live = len(gens)
    try:
        while live:
            i, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                live -= 1
                yield i, None
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for g in gens:
            await g.aclose()  # type: ignore[attr-defined]
