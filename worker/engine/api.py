"""The small engine interface the rest of the worker talks to.

`worker/engine.py` implements it on vLLM; tests may implement it with a tiny
scripted engine. Nothing here imports vLLM, torch or anything heavy.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """What one generation may do. Engine-neutral; vLLM's SamplingParams is built from it."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # Generation ends when one of these is sampled (it is included in the output).
    stop_token_ids: tuple[int, ...] = ()
    # No stop token (nor end of sequence) before this many tokens are generated.
    min_tokens: int = 0
    # Number of top alternatives to return per token; None = no logprobs at all.
    logprobs: int | None = None
    # (token id, bias) pairs added to the logits before sampling (OpenAI's logit_bias).
    logit_bias: tuple[tuple[int, float], ...] = ()
    # Structured output: at most one of these is set.
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    choice: tuple[str, ...] | None = None
    # Scheduling: a waiting request with a lower number is scheduled first (live requests
    # are 0; stored batches' lines run at 1, behind them).
    priority: int = 0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """New tokens since the previous delta of the same request."""

    token_ids: tuple[int, ...]
    num_prompt_tokens: int
    finished: bool = False
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: str  # what the engine loaded (repo id or path)
    served_model_names: tuple[str, ...]
    max_model_len: int
    max_num_seqs: int  # sequences it runs at once (every data-parallel engine together)
    device: str  # "cuda" or "cpu"
    details: dict[str, Any] = field(default_factory=dict)


class EngineError(Exception):
    """Base of the engine's own errors; the OpenAI layer maps them to error bodies."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class EngineDeadError(EngineError):
    """The engine can no longer serve; the process should exit so the platform replaces it."""


class RequestRejected(EngineError):
    """The engine refused one request when it was added (e.g. a JSON schema it cannot compile).

    `structured` is True when the request carried a structured-output constraint."""

    def __init__(self, message: str, *, structured: bool = False):
        super().__init__(message)
        self.structured = structured


class StartupMonitor(Protocol):
    """Watches an engine build (log lines, memory) and splits its time into phases."""

    def watching(self) -> AbstractContextManager[Any]: ...

    def split(self, build_seconds: float) -> dict[str, float]: ...


class Engine(Protocol):
    """What the service needs from an inference engine."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def is_dead(self) -> bool: ...

    def generate(
        self, request_id: str, prompt_token_ids: Sequence[int], options: SamplingOptions
    ) -> AsyncGenerator[GenerationDelta, None]:
        """Stream deltas until finished. Closing the iterator early aborts the request."""
        ...

    async def abort(self, request_id: str) -> None: ...

    async def check_schema(self, schema: str, *, time_limit: float) -> None:
        """Raise RequestRejected (structured) unless the engine's grammar backend compiles
        `schema` (JSON text) within `time_limit` seconds. Never blocks the event loop."""
        ...

    async def num_unfinished(self) -> int:
        """Requests the engine still holds (running or waiting)."""
        ...

    async def check_health(self) -> None:
        """Raise EngineDeadError when the engine cannot serve."""
        ...

    async def shutdown(self) -> None: ...
