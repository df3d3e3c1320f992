"""What every OpenAI generation surface shares: limits, the token budget, one choice's plan,
and the run of one choice's events with metrics and abort.

The chat and responses services convert their requests into a Harmony
`Conversation` and call these, so every surface checks the context the same way,
constrains tool calls and structured output the same way (worker.harmony.generation)
and reports the same metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from worker.engine.api import Engine, SamplingOptions
from worker.harmony.choice import REASONING_BUDGET, ChoicePlan, ChoiceResult, JsonAnswer
from worker.harmony.conversation import FunctionTool
from worker.harmony.generation import run_choice
from worker.openai.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from worker.openai.metrics import NULL_REQUEST, RequestObserver
from worker.openai.stops import StopMatcher


@dataclass(frozen=True)
class Limits:
    """Per-request limits; adapters enforce body size and batch lines themselves."""

    max_n: int = 8
    max_messages: int = 2048
    max_completion_tokens: int | None = None
    max_stop_sequences: int = 16
    max_stop_chars: int = 1024
    max_schema_bytes: int = 256 * 1024
    schema_compile_seconds: float = 10.0


def resolve_model(requested: str | None, served: Sequence[str]) -> str:
    if requested and requested not in served:
        raise ModelNotFound(
            f"model {requested!r} is not served here; available: {list(served)}")
    return requested or served[0]


def check_cap(asked: int | None, limits: Limits, param: str) -> None:
    cap = limits.max_completion_tokens
    if cap is not None and asked is not None and asked > cap:
        raise InvalidRequest(f"{param} must be at most {cap} on this worker", param=param)


def token_budget(prompt_len: int, max_len: int, asked: int | None, limits: Limits, *,
                 param: str, input_param: str) -> int:
    """The completion budget: what was asked, else the rest of the context (and the cap)."""
    if prompt_len >= max_len:
        raise ContextLengthExceeded(
            f"this model's maximum context length is {max_len} tokens, but the input is "
            f"{prompt_len} tokens long", param=input_param)
    room = max_len - prompt_len
    if asked is not None and asked > room:
        raise ContextLengthExceeded(
            f"{param}={asked} plus the {prompt_len} prompt tokens exceeds this model's "
            f"maximum context length of {max_len} tokens (at most {room} here)", param=param)
    cap = limits.max_completion_tokens
    return asked if asked is not None else min(room, cap or room)


def sampling_options(
    budget: int, *, temperature: float | None = None, top_p: float | None = None,
    top_k: int | None = None, min_p: float | None = None, seed: int | None = None,
    presence_penalty: float | None = None, frequency_penalty: float | None = None,
    repetition_penalty: float | None = None, logprobs: int | None = None,
    logit_bias: Mapping[str, float] | None = None, min_tokens: int | None = None,
    stop_token_ids: Sequence[int] = (),
) -> SamplingOptions:
    """The engine's options from the OpenAI sampling fields every API shares (None: the
    OpenAI default); `logprobs` is the number of alternatives per token, None for none."""
    return SamplingOptions(
        max_tokens=budget,
        temperature=1.0 if temperature is None else temperature,
        # OpenAI accepts top_p=0 (greedy); vLLM needs it above zero.
        top_p=1.0 if top_p is None else max(top_p, 1e-6),
        top_k=top_k or 0,
        min_p=min_p or 0.0,
        seed=seed,
        presence_penalty=presence_penalty or 0.0,
        frequency_penalty=frequency_penalty or 0.0,
        repetition_penalty=repetition_penalty or 1.0,
        logprobs=logprobs,
        logit_bias=tuple((int(k), float(v)) for k, v in (logit_bias or {}).items()),
        min_tokens=min_tokens or 0,
        stop_token_ids=tuple(stop_token_ids),
    )


def per_choice(plan: ChoicePlan, n: int) -> tuple[ChoicePlan, ...]:
    """`n` copies of one choice's plan; with a seed, choice i samples with seed + i."""
    seed = plan.options.seed
    return tuple(replace(plan, options=replace(plan.options,
                                               seed=None if seed is None else seed + i))
                 for i in range(n))


def plan_text(prompt: Sequence[int], options: SamplingOptions, *,
              skip_special_tokens: bool = True) -> ChoicePlan:
    """One choice of a raw text completion: the prompt as given, no Harmony grammar."""
    return ChoicePlan(prompt=tuple(prompt), options=options, raw=True,
                      skip_special_tokens=skip_special_tokens)


def plan_choice(
    prompt: Sequence[int], options: SamplingOptions, *, effort: str, asked: int | None,
    tools: tuple[FunctionTool, ...], must_call: tuple[str, ...], answer: JsonAnswer | None,
    schema_params: Mapping[str, str], answer_param: str,
) -> ChoicePlan:
    """One choice's plan. Every schema the output will be constrained to (a must-call or
    strict tool's parameters, the answer's schema) is checked first; `schema_params` and
    `answer_param` say where they are in the request, for the 400."""
    for t in tools:
        if t.name in must_call or t.strict:
            check_schema(t.parameters or {"type": "object"}, schema_params.get(t.name, "tools"))
    if answer is not None and answer.schema is not None:
        check_schema(answer.schema, answer_param)
    if options.min_tokens and (must_call or answer is not None):
        raise InvalidRequest("min_tokens applies to free generation only, not with a forced "
                             "tool_choice or a JSON response_format", param="min_tokens")
    budget = options.max_tokens
    reasoning = budget // 2 if asked is not None else REASONING_BUDGET.get(effort, 4096)
    return ChoicePlan(prompt=tuple(prompt), options=options, tools=tools, must_call=must_call,
                      answer=answer, reasoning_budget=max(1, min(reasoning, budget - 1)))


def constrained_schemas(
    tools: tuple[FunctionTool, ...], must_call: tuple[str, ...], answer: JsonAnswer | None,
    schema_params: Mapping[str, str], answer_param: str,
) -> tuple[tuple[str, Any], ...]:
    """(param, schema) of every JSON schema the output may be constrained to; the services'
    `admit` compiles each with the engine's grammar backend before the response starts."""
    out: list[tuple[str, Any]] = [
        (schema_params.get(t.name, "tools"), t.parameters or {"type": "object"})
        for t in tools if t.name in must_call or t.strict]
    if answer is not None and answer.schema is not None:
        out.append((answer_param, answer.schema))
    return tuple(out)


async def admit_schemas(engine: Engine, schemas: Sequence[tuple[str, Any]],
                        limits: Limits) -> None:
    """Each schema compiles within the size and time limits (off the event loop), else a
    400 naming its field."""
    from worker.openai.bounds import check_schema as compile_check

    for param, schema in schemas:
        await compile_check(engine, schema, param=param, max_bytes=limits.max_schema_bytes,
                            time_limit=limits.schema_compile_seconds)


def check_schema(schema: Any, param: str) -> None:
    """A schema the output will be constrained to must be a valid JSON schema object."""
    import jsonschema

    if not isinstance(schema, dict):
        raise InvalidRequest("must be a JSON schema object", param=param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except RecursionError:
        raise InvalidRequest("the JSON schema is nested too deeply", param=param) from None
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(f"invalid JSON schema{' at ' + where if where else ''}: "
                             f"{exc.message[:200]}", param=param) from None


async def choice_events(
    engine: Engine, request_id: str, plan: ChoicePlan, result: ChoiceResult,
    obs: RequestObserver = NULL_REQUEST, stop: Sequence[str] = (),
) -> AsyncGenerator[list[Any], None]:
    """One choice's parser events, with token metrics, `stop` strings and abort on close."""
    stops = StopMatcher(stop) if stop else None
    gen = run_choice(engine, request_id, plan, result)
    seen = 0
    try:
        async for events in gen:
            if result.completion_tokens > seen:  # tokens of this delta (headers included)
                obs.tokens(result.completion_tokens - seen)
                seen = result.completion_tokens
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


Events = AsyncGenerator[list, None]  # one choice's event lists


async def merge(gens: list[Events]) -> AsyncGenerator[tuple[int, list | None], None]:
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
