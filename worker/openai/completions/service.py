"""CompletionsService: OpenAI text completions on the one generation path.

`prepare` validates, tokenizes each prompt as written (no chat template) and plans
its choices with the shared limits and budget (worker.openai.core); every 4xx is
raised there. Each choice is a raw `ChoicePlan` run by `core.choice_events`, so
`stop`, metrics and abort work as for chat. `complete` and `stream` read the same
events through `ChoiceText`, so the stream adds up to the non-streamed result.

Several prompts (a list of strings or of token lists) give `n` choices each:
prompt i's choice j has index i * n + j, as OpenAI numbers them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from worker.engine.api import Engine
from worker.harmony.choice import ChoicePlan, ChoiceResult
from worker.harmony.tokens import decode_text, encode_prompt
from worker.openai import core
from worker.openai.bounds import check_stops
from worker.openai.completions.output import ChoiceText
from worker.openai.completions.protocol import CompletionRequest, validate_request
from worker.openai.core import Limits
from worker.openai.errors import InvalidRequest
from worker.openai.metrics import NULL_OBSERVER, NULL_REQUEST, Observer, RequestObserver


@dataclass(frozen=True)
class Prepared:
    """A validated completions request, tokenized and planned; ready to run."""

    request: CompletionRequest
    id: str
    created: int
    model: str
    prompt_tokens: int  # of every prompt, each counted once
    plans: tuple[ChoicePlan, ...]  # choice k is prompt k // n's choice k % n
    echoes: tuple[str, ...]  # per choice: the prompt text with `echo`, else ""
    stop: tuple[str, ...] = ()


class CompletionsService:
    def __init__(self, engine: Engine, *, limits: Limits | None = None,
                 observer: Observer | None = None):
        self.engine = engine
        self.limits = limits or Limits()
        self.observer = observer or NULL_OBSERVER

    # -- preparation ----------------------------------------------------------
    def prepare(self, req: CompletionRequest) -> Prepared:
        validate_request(req)
        stops = req.stop_list()
        check_stops(stops, max_count=self.limits.max_stop_sequences,
                    max_chars=self.limits.max_stop_chars)
        model = core.resolve_model(req.model, self.engine.info.served_model_names)
        n = req.n or 1
        if n > self.limits.max_n:
            raise InvalidRequest(f"n must be at most {self.limits.max_n}", param="n")
        prompts = req.prompts()
        if len(prompts) > self.limits.max_messages:
            raise InvalidRequest(f"at most {self.limits.max_messages} prompts per request",
                                 param="prompt")
        core.check_cap(req.max_tokens, self.limits, "max_tokens")
        plans: list[ChoicePlan] = []
        echoes: list[str] = []
        total = 0
        for i, raw in enumerate(prompts):
            ids = encode_prompt(raw) if isinstance(raw, str) else list(raw)
            where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
            budget = core.token_budget(len(ids), self.engine.info.max_model_len,
                                       req.max_tokens, self.limits, param="max_tokens",
                                       input_param=where)
            min_tokens = budget if req.ignore_eos else req.min_tokens
            if min_tokens and min_tokens > budget:
                raise InvalidRequest(f"min_tokens={min_tokens} is above the {budget} tokens "
                                     "this request may generate", param="min_tokens")
            options = core.sampling_options(
                budget, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                min_p=req.min_p, seed=req.seed, presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty,
                repetition_penalty=req.repetition_penalty, logprobs=req.logprobs,
                logit_bias=req.logit_bias, min_tokens=min_tokens,
                stop_token_ids=req.stop_token_ids or ())
            plan = core.plan_text(ids, options,
                                  skip_special_tokens=req.skip_special_tokens is not False)
            plans.extend(core.per_choice(plan, n))
            echo = (raw if isinstance(raw, str) else decode_text(ids)) if req.echo else ""
            echoes.extend([echo] * n)
            total += len(ids)
        return Prepared(request=req, id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()),
                        model=model, prompt_tokens=total, plans=tuple(plans),
                        echoes=tuple(echoes), stop=tuple(s for s in stops if s))

    async def admit(self, req: CompletionRequest) -> Prepared:
        """`prepare` (a text completion constrains nothing: no schema to compile)."""
        return self.prepare(req)

    # -- running ----------------------------------------------------------------
    async def complete(self, p: Prepared) -> dict[str, Any]:
        """The `text_completion` object (a dict in the wire shape, see openai's `Completion`)."""
        results = [ChoiceResult() for _ in p.plans]
        texts = [self._text(p, i) for i in range(len(p.plans))]
        obs = self.observer.request()

        async def one(i: int) -> None:
            async with aclosing(self._events(p, i, results[i], obs)) as events_of:
                async for events in events_of:
                    texts[i].feed(events)

        try:
            await asyncio.gather(*(one(i) for i in range(len(p.plans))))
        finally:
            obs.finished(p.prompt_tokens, sum(r.completion_tokens for r in results))
        choices = [{"index": i, "text": t.text(), "logprobs": t.logprobs(),
                    "finish_reason": r.finish_reason}
                   for i, (t, r) in enumerate(zip(texts, results, strict=True))]
        return {**self._head(p), "choices": choices, "usage": self._usage(p, results)}

    async def stream(self, p: Prepared) -> AsyncGenerator[dict[str, Any], None]:
        """Completion chunks as dicts (openai's `Completion` shape, one choice each), then
        one per choice with its finish_reason; with include_usage, a last one with usage."""
        results = [ChoiceResult() for _ in p.plans]
        texts = [self._text(p, i) for i in range(len(p.plans))]
        head = self._head(p)
        include_usage = bool(p.request.stream_options and p.request.stream_options.include_usage)

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
            out = {**head, "choices": choices}
            if include_usage:
                out["usage"] = usage
            return out

        for i, echo in enumerate(p.echoes):
            if echo:
                yield chunk([{"index": i, "text": echo, "logprobs": None,
                              "finish_reason": None}])
        obs = self.observer.request()
        streams = [self._events(p, i, results[i], obs) for i in range(len(p.plans))]
        try:
            async with aclosing(core.merge(streams)) as merged:
                async for i, events in merged:
                    if events is None:
                        yield chunk([{"index": i, "text": "", "logprobs": None,
                                      "finish_reason": results[i].finish_reason}])
                        continue
                    text, logprobs = texts[i].feed(events)
                    if text or logprobs:
                        yield chunk([{"index": i, "text": text, "logprobs": logprobs,
                                      "finish_reason": None}])
        finally:
            obs.finished(p.prompt_tokens, sum(r.completion_tokens for r in results))
        if include_usage:
            yield chunk([], usage=self._usage(p, results))

    def _text(self, p: Prepared, i: int) -> ChoiceText:
        return ChoiceText(echo=p.echoes[i], logprobs=p.request.logprobs is not None,
                          skip_special_tokens=p.plans[i].skip_special_tokens)

    def _events(self, p: Prepared, i: int, result: ChoiceResult,
                obs: RequestObserver = NULL_REQUEST) -> AsyncGenerator[list, None]:
        return core.choice_events(self.engine, f"{p.id}-{i}", p.plans[i], result, obs, p.stop)

    @staticmethod
    def _head(p: Prepared) -> dict[str, Any]:
        return {"id": p.id, "object": "text_completion", "created": p.created, "model": p.model}

    @staticmethod
    def _usage(p: Prepared, results: list[ChoiceResult]) -> dict[str, Any]:
        completion = sum(r.completion_tokens for r in results)
        return {"prompt_tokens": p.prompt_tokens, "completion_tokens": completion,
                "total_tokens": p.prompt_tokens + completion}


_SHARED: weakref.WeakKeyDictionary[Any, CompletionsService] = weakref.WeakKeyDictionary()


def completions_service(chat: Any) -> CompletionsService:
    """The completions service next to a chat service: same engine, limits and metrics
    (adapters hold the chat service; this one is made once per chat service)."""
    service = _SHARED.get(chat)
    if service is None:
        service = CompletionsService(chat.engine, limits=chat.limits, observer=chat.observer)
        _SHARED[chat] = service
    return service
