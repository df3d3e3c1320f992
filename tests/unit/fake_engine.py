"""A tiny scripted engine implementing worker.engine.api.Engine, for fast unit tests.

`script(prompt_token_ids, options)` returns the tokens to emit; they are
streamed in chunks of `chunk` tokens and cut at max_tokens / stop tokens the
way vLLM does. The real vLLM engine is exercised by tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence

from worker.engine.api import (
    EngineDeadError,
    EngineInfo,
    GenerationDelta,
    RequestRejected,
    SamplingOptions,
    TokenLogprob,
)

Script = Callable[[list[int], SamplingOptions], list[int]]


class FakeEngine:
    def __init__(self, script: Script, *, max_model_len: int = 4096, chunk: int = 3,
                 names: tuple[str, ...] = ("fake-gpt-oss",)):
        self.script = script
        self.chunk = chunk
        self.calls: list[tuple[list[int], SamplingOptions]] = []
        self.running: set[str] = set()
        self.aborted: list[str] = []
        self.dead = False
        self.schemas_checked: list[str] = []
        self.reject_schemas = False
        self._info = EngineInfo(model="fake", served_model_names=names,
                                max_model_len=max_model_len, max_num_seqs=16, device="cpu")

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def is_dead(self) -> bool:
        return self.dead

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncGenerator[GenerationDelta, None]:
        if self.dead:
            raise EngineDeadError("dead")
        prompt = list(prompt_token_ids)
        self.calls.append((prompt, options))
        out = self.script(prompt, options)
        reason = "length"
        emitted: list[int] = []
        for tok in out:
            if len(emitted) >= options.max_tokens:
                break
            emitted.append(tok)
            if tok in options.stop_token_ids:
                reason = "stop"
                break
        else:
            reason = "stop" if len(emitted) < options.max_tokens else "length"
        self.running.add(request_id)
        try:
            for i in range(0, max(len(emitted), 1), self.chunk):
                await asyncio.sleep(0)
                part = tuple(emitted[i:i + self.chunk])
                last = i + self.chunk >= len(emitted)
                lps = None
                if options.logprobs is not None:  # a made-up but well-formed distribution
                    lps = tuple(TokenLogprob(t, -0.25, tuple((t + j, -0.25 - j)
                                                             for j in range(options.logprobs)))
                                for t in part)
                yield GenerationDelta(token_ids=part, num_prompt_tokens=len(prompt),
                                      finished=last, finish_reason=reason if last else None,
                                      logprobs=lps)
        finally:
            if request_id in self.running:
                self.running.discard(request_id)

    async def check_schema(self, schema: str, *, time_limit: float) -> None:
        self.schemas_checked.append(schema)
        if self.reject_schemas:
            raise RequestRejected("the fake grammar backend rejects every schema",
                                  structured=True)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self.running.discard(request_id)

    async def num_unfinished(self) -> int:
        return len(self.running)

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDeadError("dead")

    async def shutdown(self) -> None:
        self.dead = True
