"""ChatService: OpenAI chat completions on top of the engine interface.

No transport and no environment here: adapters call `prepare` (which raises
the 4xx errors before anything is generated), then `complete` or `stream`.
Streaming and non-streaming share one code path (`run_choice` events), so the
concatenated stream always equals the non-streaming result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from worker.engine.api import Engine
from worker.harmony.choice import ChoicePlan, ChoiceResult, JsonAnswer
from worker.openai import core
from worker.openai.bounds import check_stops
from worker.openai.chat.convert import offered_tools, render_chat
from worker.openai.chat.events import Accumulated, accumulate, chunk_choices, merge
from worker.openai.chat.protocol import (
    ChatCompletionRequest,
    validate_request,
)
from worker.openai.chat.response import (
    ChatCompletion,
    ModelList,
)
from worker.openai.core import Limits
from worker.openai.errors import InvalidRequest, InvalidResponse
from worker.openai.metrics import NULL_OBSERVER, NULL_REQUEST, Observer, RequestObserver

log = logging.getLogger(__name__)


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
    # (param, schema) of every JSON schema the output is constrained to; `admit` compiles them
    schemas: tuple[tuple[str, Any], ...] = ()


class ChatService:
    def __init__(
        self,
        engine: Engine,
        *,
        default_effort: str = "medium",
        today: Callable[[], str] = lambda: dt.date.today().isoformat(),
        limits: Limits | None = None,
        observer: Observer | None = None,
    ):
        self.engine = engine
        self.default_effort = default_effort
        self.today = today
        self.limits = limits or Limits()
        self.observer = observer or NULL_OBSERVER  # metrics: tokens as they come, counts at the end

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
    async def admit(self, req: ChatCompletionRequest) -> Prepared:
        """`prepare`, then what needs the engine: every JSON schema the output is constrained
        to must compile within the time limit (off the event loop). Adapters call this."""
        p = self.prepare(req)
        await core.admit_schemas(self.engine, p.schemas, self.limits)
        return p

    def prepare(self, req: ChatCompletionRequest) -> Prepared:
        """Validate, render and plan `req`; every 4xx that needs no engine call is raised here."""
        validate_request(req)
        stops = req.stop_list()
        check_stops(stops, max_count=self.limits.max_stop_sequences,
                    max_chars=self.limits.max_stop_chars)
        model = core.resolve_model(req.model, self.model_names)
        n = req.n or 1
        if n > self.limits.max_n:
            raise InvalidRequest(f"n must be at most {self.limits.max_n}", param="n")
        if len(req.messages) > self.limits.max_messages:
            raise InvalidRequest(
                f"at most {self.limits.max_messages} messages per request", param="messages")
        asked = req.effective_max_tokens()
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        core.check_cap(asked, self.limits, param)
        tools = offered_tools(req)
        prompt = render_chat(req, include_tools=bool(tools), today=self.today(),
                             default_effort=self.default_effort)
        max_len = self.engine.info.max_model_len
        # name the tools when they, not the messages, make the prompt too long
        alone = len(prompt) >= max_len and bool(tools) and len(render_chat(
            req, include_tools=False, today=self.today(),
            default_effort=self.default_effort)) < max_len
        budget = core.token_budget(len(prompt), max_len, asked, self.limits, param=param,
                                   input_param="tools" if alone else "messages")
        if req.min_tokens and req.min_tokens > budget:
            raise InvalidRequest(f"min_tokens={req.min_tokens} is above the {budget} tokens "
                                 "this request may generate", param="min_tokens")
        base = core.sampling_options(
            budget, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
            min_p=req.min_p, seed=req.seed, presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty, repetition_penalty=req.repetition_penalty,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            logit_bias=req.logit_bias, min_tokens=req.min_tokens)
        answer = None
        if req.response_format is not None and req.response_format.type != "text":
            answer = JsonAnswer(_schema_of(req.response_format))
        schema_params = {t.function.name: f"tools[{i}].function.parameters"
                         for i, t in enumerate(req.tools or [])}
        answer_param = "response_format.json_schema.schema"
        plan = core.plan_choice(
            prompt, base, effort=req.reasoning_effort or self.default_effort, asked=asked,
            tools=tools, must_call=req.must_call(), answer=answer,
            schema_params=schema_params, answer_param=answer_param)
        plans = core.per_choice(plan, n)
        return Prepared(
            request=req, id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
            model=model, prompt_tokens=len(prompt), plans=plans,
            stop=tuple(s for s in stops if s),
            schemas=core.constrained_schemas(plan.tools, plan.must_call, answer, schema_params,
                                             answer_param),
        )

    # -- running ----------------------------------------------------------------
    async def complete(self, p: Prepared) -> ChatCompletion:
        results = [ChoiceResult() for _ in p.plans]
        acc = [Accumulated() for _ in p.plans]
        obs = self.observer.request()

        async def one(i: int) -> None:
            async with aclosing(self._events(p, i, results[i], obs)) as events_of:
                async for events in events_of:
                    accumulate(acc[i], events)

        try:
            await asyncio.gather(*(one(i) for i in range(len(p.plans))))
        finally:
            obs.finished(p.prompt_tokens, sum(r.completion_tokens for r in results))
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
        try:
            return ChatCompletion.model_validate({
                "id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
                "choices": choices, "usage": self._usage(p, results),
            })
        except ValidationError as exc:  # our bug, not the client's: a 500, never a 400
            log.error("chat completion %s failed response validation: %s", p.id,
                      exc.errors(include_url=False, include_input=False)[:3])
            raise InvalidResponse("the worker built an invalid response; please report this "
                                  f"(request {p.id})") from None

    async def stream(self, p: Prepared) -> AsyncGenerator[dict[str, Any], None]:
        """Chat completion chunks as plain dicts in the wire shape (see `ChatCompletionChunk`).

        Dicts, not models: validating and dumping a pydantic model per chunk costs ten times
        what the chunk's JSON encoding does (`worker.openai.wire.encode`); the tests validate every
        chunk against the model instead.
        """
        results = [ChoiceResult() for _ in p.plans]
        head = {"id": p.id, "object": "chat.completion.chunk", "created": p.created,
                "model": p.model}

        include_usage = bool(p.request.stream_options and p.request.stream_options.include_usage)

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
            # OpenAI's shape: every choice has finish_reason and logprobs (null until set), and
            # with include_usage every chunk has usage (null but on the last one).
            out = {**head, "choices": [{"finish_reason": None, "logprobs": None, **c}
                                       for c in choices]}
            if include_usage:
                out["usage"] = usage
            return out

        for i in range(len(p.plans)):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}}])
        obs = self.observer.request()
        streams = [self._events(p, i, results[i], obs) for i in range(len(p.plans))]
        try:
            async with aclosing(merge(streams)) as merged:
                async for i, events in merged:
                    if events is None:
                        reason = results[i].finish_reason
                        yield chunk([{"index": i, "delta": {}, "finish_reason": reason}])
                        continue
                    for entry in chunk_choices(events):
                        yield chunk([{"index": i, **entry}])
        finally:
            obs.finished(p.prompt_tokens, sum(r.completion_tokens for r in results))
        if include_usage:
            yield chunk([], usage=self._usage(p, results))

    def _events(
        self, p: Prepared, i: int, result: ChoiceResult, obs: RequestObserver = NULL_REQUEST
    ) -> AsyncGenerator[list, None]:
        return core.choice_events(self.engine, f"{p.id}-{i}", p.plans[i], result, obs, p.stop)

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


def _schema_of(fmt: Any) -> dict[str, Any] | None:
    if fmt.type != "json_schema" or fmt.json_schema is None:
        return None
    js = fmt.json_schema
    schema = getattr(js, "schema_", None) or getattr(js, "json_schema", None)
    return dict(schema) if schema else {"type": "object"}
