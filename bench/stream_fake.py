"""A fake engine that steps like vLLM's, and the worker's HTTP app served on it.

`SteppingEngine` implements `worker.engine.api.Engine` the way vLLM's `AsyncLLM` behaves as
seen from the API process: an engine core outside the event loop produces one token per
running request every `step_s` seconds (wall clock, whatever the loop is doing), and each
request's outputs wait in a collector that merges what its consumer has not taken yet
(vLLM's DELTA outputs: all tokens since the last read). So a consumer that keeps up gets one
token per delta, one that falls behind gets several at once, exactly as on a GPU.

Every request generates `max_tokens` tokens of well-formed Harmony: an analysis message
(a third), then the final answer, cut at the budget (like `min_tokens = max_tokens`).

    python bench/stream_fake.py --port 8000 --step-ms 6.6   # the worker's app on it
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from worker.engine.api import EngineInfo, GenerationDelta, SamplingOptions
from worker.harmony.tokens import CHANNEL, END, MESSAGE, START, encode_text

TEXT = ("The lighthouse keeper watched the storm roll in from the west, counting the seconds "
        "between each flash of lightning and the thunder that followed, while the sea rose "
        "against the rocks and the lamp turned slowly above him. ")


def completion(max_tokens: int) -> list[int]:
    """A Harmony completion of exactly `max_tokens` tokens: reasoning, then the answer."""
    words = encode_text(TEXT * 8)
    analysis = encode_text("analysis")
    final = encode_text("final")
    assistant = encode_text("assistant")
    head = [CHANNEL, *analysis, MESSAGE]
    reasoning = words[: max(1, max_tokens // 3)]
    switch = [END, START, *assistant, CHANNEL, *final, MESSAGE]
    body = (words * (1 + max_tokens // len(words)))[:max_tokens]
    return (head + reasoning + switch + body)[:max_tokens]


@dataclass
class _Collector:
    tokens: list[int]
    pos: int = 0
    ready: list[int] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False


class SteppingEngine:
    """See the module docstring. `max_num_seqs`: at most this many requests step at once."""

    def __init__(self, step_s: float = 0.0066, *, max_num_seqs: int = 256,
                 max_model_len: int = 8192):
        self.step_s = step_s
        self.max_num_seqs = max_num_seqs
        self._info = EngineInfo(model="fake-stepping", served_model_names=("bench",),
                                max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                                device="cpu")
        self._running: list[_Collector] = []
        self._waiting: list[_Collector] = []
        self._stepper: asyncio.Task[None] | None = None
        self.steps = 0

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def is_dead(self) -> bool:
        return False

    async def _run(self) -> None:
        t0, done = time.perf_counter(), 0
        while self._running or self._waiting:
            due = int((time.perf_counter() - t0) / self.step_s)
            while done < due and (self._running or self._waiting):
                done += 1
                self.steps += 1
                self._step()
            await asyncio.sleep(max(0.0, t0 + (done + 1) * self.step_s - time.perf_counter()))
        self._stepper = None

    def _step(self) -> None:
        while self._waiting and len(self._running) < self.max_num_seqs:
            self._running.append(self._waiting.pop(0))
        still = []
        for c in self._running:
            c.ready.append(c.tokens[c.pos])
            c.pos += 1
            c.finished = c.pos >= len(c.tokens)
            c.event.set()
            if not c.finished:
                still.append(c)
        self._running = still

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncGenerator[GenerationDelta, None]:
        c = _Collector(completion(options.max_tokens))
        self._waiting.append(c)
        if self._stepper is None:
            self._stepper = asyncio.get_running_loop().create_task(self._run())
        n = len(prompt_token_ids)
        try:
            while True:
                await c.event.wait()
                c.event.clear()
                toks, c.ready = c.ready, []
                yield GenerationDelta(tuple(toks), n, finished=c.finished,
                                      finish_reason="length" if c.finished else None)
                if c.finished:
                    return
        finally:
            if not c.finished:
                c.finished = True
                c.pos = len(c.tokens)
                for queue in (self._running, self._waiting):
                    if c in queue:
                        queue.remove(c)

    async def abort(self, request_id: str) -> None:
        return None

    async def check_schema(self, schema: str, *, time_limit: float) -> None:
        return None

    async def num_unfinished(self) -> int:
        return len(self._running) + len(self._waiting)

    async def check_health(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def app(step_s: float) -> object:
    """The worker's FastAPI app (the real routes, middleware and service) on the fake."""
    from worker.openai.chat.service import ChatService
    from worker.platforms.http_app import AppState, create_app

    engine = SteppingEngine(step_s)
    return create_app(AppState(service=ChatService(engine, today=lambda: "2026-01-01")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--step-ms", type=float, default=6.6)
    args = ap.parse_args()
    import uvicorn

    # the settings `python -m worker serve` runs uvicorn with (loop and HTTP parser: auto)
    uvicorn.run(app(args.step_ms / 1e3), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
