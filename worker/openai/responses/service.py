"""ResponsesService: the OpenAI Responses API on the one generation path.

`prepare` validates, converts the input into a Harmony conversation, renders it
and plans the one choice with the same limits and constraints as chat
(worker.openai.core); every 4xx is raised there, before anything is generated.
`complete` and `stream` run the same events through one `OutputBuilder`, so the
streamed items always add up to the non-streamed response.
"""

from __future__ import annotations

import datetime as dt
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from worker.engine.api import Engine, SamplingOptions
from worker.harmony.choice import ChoicePlan, ChoiceResult, JsonAnswer
from worker.harmony.render import render_prompt
from worker.openai import core
from worker.openai.core import Limits
from worker.openai.errors import InvalidRequest, openai_error
from worker.openai.metrics import NULL_OBSERVER, Observer
from worker.openai.responses.convert import echo_tools, to_conversation
from worker.openai.responses.output import OutputBuilder, new_id
from worker.openai.responses.protocol import (
    JsonSchemaText,
    NamedFunction,
    ResponsesRequest,
)
from worker.openai.responses.validate import function_tools, validate_request


@dataclass(frozen=True)
class Prepared:
    """A validated Responses request, rendered and planned; ready to run."""

    request: ResponsesRequest
    id: str
    created: int
    model: str
    prompt_tokens: int
    plan: ChoicePlan
    tools: list[dict[str, Any]]  # echoed
    # (param, schema) of every JSON schema the output is constrained to; `admit` compiles them
    schemas: tuple[tuple[str, Any], ...] = ()


class ResponsesService:
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
        self.observer = observer or NULL_OBSERVER

    # -- preparation ----------------------------------------------------------
    def prepare(self, req: ResponsesRequest) -> Prepared:
        tools = function_tools(req)
        validate_request(req, tools)
        model = core.resolve_model(req.model, self.engine.info.served_model_names)
        items = req.items()
        if len(items) > self.limits.max_messages:
            raise InvalidRequest(f"at most {self.limits.max_messages} input items per request",
                                 param="input")
        asked = req.max_output_tokens
        core.check_cap(asked, self.limits, "max_output_tokens")
        include_tools = bool(tools) and req.tool_choice != "none"
        conv = to_conversation(req, tools, include_tools=include_tools,
                               default_effort=self.default_effort)
        prompt = render_prompt(conv, today=self.today())
        max_len = self.engine.info.max_model_len
        # name the tools when they, not the input, make the prompt too long (as chat does)
        alone = len(prompt) >= max_len and include_tools and len(render_prompt(
            to_conversation(req, tools, include_tools=False,
                            default_effort=self.default_effort),
            today=self.today())) < max_len
        budget = core.token_budget(len(prompt), max_len, asked, self.limits,
                                   param="max_output_tokens",
                                   input_param="tools" if alone else "input")
        options = SamplingOptions(
            max_tokens=budget,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else max(req.top_p, 1e-6),
        )
        choice = req.tool_choice
        must_call: tuple[str, ...] = ()
        if choice == "required":
            must_call = tuple(t.name for t in conv.tools)
        elif isinstance(choice, NamedFunction):
            must_call = (choice.name,)
        fmt = req.answer_format()
        answer = None
        if fmt is not None and fmt.type != "text":
            answer = JsonAnswer(dict(fmt.schema_) if isinstance(fmt, JsonSchemaText) else None)
        plan = core.plan_choice(
            prompt, options, effort=conv.effort, asked=asked, tools=conv.tools,
            must_call=must_call, answer=answer,
            schema_params={str(raw.get("name")): f"tools[{i}].parameters"
                           for i, raw in enumerate(req.tools or [])
                           if raw.get("type") == "function"},
            answer_param="text.format.schema")
        schemas = core.constrained_schemas(
            plan.tools, plan.must_call, answer,
            {str(raw.get("name")): f"tools[{i}].parameters"
             for i, raw in enumerate(req.tools or []) if raw.get("type") == "function"},
            "text.format.schema")
        return Prepared(request=req, id=new_id("resp"), created=int(time.time()), model=model,
                        prompt_tokens=len(prompt), plan=plan, tools=echo_tools(tools),
                        schemas=schemas)

    async def admit(self, req: ResponsesRequest) -> Prepared:
        """`prepare`, then every JSON schema the output is constrained to must compile within
        the size and time limits (worker.openai.bounds), as for chat. Adapters call this."""
        p = self.prepare(req)
        await core.admit_schemas(self.engine, p.schemas, self.limits)
        return p

    # -- running ----------------------------------------------------------------
    async def complete(self, p: Prepared) -> dict[str, Any]:
        """The response object (a dict in the wire shape, see openai's `Response`)."""
        builder = OutputBuilder(encrypted_reasoning=p.request.encrypted_reasoning())
        result = ChoiceResult()
        async with aclosing(self._events(p, result)) as events_of:
            async for events in events_of:
                builder.feed(events)
        builder.finish(incomplete=result.finish_reason == "length")
        return self.response(p, builder, result)

    async def stream(self, p: Prepared) -> AsyncGenerator[dict[str, Any], None]:
        """Stream events as dicts with `type` and `sequence_number`, in OpenAI's order.

        An error after the start is an `error` event, then `response.failed`."""
        builder = OutputBuilder(encrypted_reasoning=p.request.encrypted_reasoning())
        result = ChoiceResult()
        seq = 0

        def numbered(event: dict[str, Any]) -> dict[str, Any]:
            nonlocal seq
            event["sequence_number"] = seq
            seq += 1
            return event

        head = self.response(p, None, None)
        yield numbered({"type": "response.created", "response": head})
        yield numbered({"type": "response.in_progress", "response": head})
        try:
            async with aclosing(self._events(p, result)) as events_of:
                async for events in events_of:
                    for event in builder.feed(events):
                        yield numbered(event)
        except Exception as exc:
            _, err = openai_error(exc)  # logs what is not the client's doing
            yield numbered({"type": "error", "code": err["code"] or err["type"],
                            "message": err["message"], "param": err["param"]})
            failed = self.response(p, builder, result, status="failed")
            failed["error"] = {"code": "server_error", "message": err["message"]}
            yield numbered({"type": "response.failed", "response": failed})
            return
        for event in builder.finish(incomplete=result.finish_reason == "length"):
            yield numbered(event)
        final = self.response(p, builder, result)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield numbered({"type": kind, "response": final})

    async def _events(self, p: Prepared, result: ChoiceResult) -> AsyncGenerator[list, None]:
        obs = self.observer.request()
        try:
            async with aclosing(core.choice_events(self.engine, f"{p.id}-0", p.plan, result,
                                                   obs)) as events_of:
                async for events in events_of:
                    yield events
        finally:
            obs.finished(p.prompt_tokens, result.completion_tokens)

    # -- the response object ------------------------------------------------------
    def response(self, p: Prepared, builder: OutputBuilder | None, result: ChoiceResult | None,
                 *, status: str | None = None) -> dict[str, Any]:
        req = p.request
        if status is None:
            status = ("in_progress" if result is None
                      else "incomplete" if result.finish_reason == "length" else "completed")
        fmt = req.answer_format()
        out: dict[str, Any] = {
            "id": p.id, "object": "response", "created_at": p.created, "status": status,
            "model": p.model, "output": list(builder.items) if builder is not None else [],
            "instructions": req.instructions, "metadata": req.metadata or {},
            "parallel_tool_calls": True if req.parallel_tool_calls is None
            else req.parallel_tool_calls,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "tool_choice": _echo_choice(req.tool_choice), "tools": p.tools,
            "max_output_tokens": req.max_output_tokens, "store": bool(req.store),
            "background": False, "truncation": "disabled", "user": req.user,
            "previous_response_id": None, "error": None, "incomplete_details": None,
            "reasoning": {"effort": req.effort() or self.default_effort,
                          "summary": req.reasoning.summary if req.reasoning else None},
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True)
                     if fmt is not None else {"type": "text"}},
            "usage": None,
        }
        if status == "incomplete":
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        if status == "completed":
            out["completed_at"] = int(time.time())
        if result is not None:
            out["usage"] = {
                "input_tokens": p.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": result.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens},
                "total_tokens": p.prompt_tokens + result.completion_tokens,
            }
        return out


def _echo_choice(choice: Any) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, NamedFunction):
        return {"type": "function", "name": choice.name}
    return choice


_SHARED: weakref.WeakKeyDictionary[Any, ResponsesService] = weakref.WeakKeyDictionary()


def responses_service(chat: Any) -> ResponsesService:
    """The Responses service next to a chat service: same engine, limits, effort and metrics
    (adapters hold the chat service; this one is made once per chat service)."""
    service = _SHARED.get(chat)
    if service is None:
        service = ResponsesService(chat.engine, default_effort=chat.default_effort,
                                   today=chat.today, limits=chat.limits, observer=chat.observer)
        _SHARED[chat] = service
    return service
