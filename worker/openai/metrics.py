"""Prometheus metrics on a private registry, fed through a tiny observer interface.

The service and the adapters never see Prometheus: the service asks an `Observer` for a
`RequestObserver` per chat request and reports output tokens as they arrive (the first
report is the time to first token) and the token counts at the end; the HTTP adapter
reports each chat request's final status with `response(status)`. `Metrics` implements
both on its own `CollectorRegistry` (nothing global, so tests and several apps in one
process never collide); `NULL_OBSERVER` does nothing.

Running and waiting requests are read from the engine when `/metrics` is scraped
(`refresh`): the engine interface exposes the unfinished count, which the scheduler runs up
to `max_num_seqs` at a time, so running = min(unfinished, max_num_seqs) and waiting = the
rest.

Importing this module is cheap: prometheus_client loads when a `Metrics` is built, so the
service can depend on the observer protocols alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)


class RequestObserver(Protocol):
    """One chat request, as the service sees it."""

    def tokens(self, n: int) -> None:
        """`n` new output tokens arrived (all choices together); the first call is TTFT."""
        ...

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The request is over (completed, failed or cancelled); later calls are ignored."""
        ...


class Observer(Protocol):
    def request(self) -> RequestObserver:
        """Start observing one chat request (the service calls it when generation starts)."""
        ...

    def response(self, status: int) -> None:
        """A chat request ended with this status (the adapter: 4xx before generation, the
        status of an error sent inside a stream, 499 when the client went away)."""
        ...


class _NullRequest:
    def tokens(self, n: int) -> None:
        pass

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        pass


NULL_REQUEST: RequestObserver = _NullRequest()


class NullObserver:
    def request(self) -> RequestObserver:
        return NULL_REQUEST

    def response(self, status: int) -> None:
        pass


NULL_OBSERVER = NullObserver()


class _Request:
    __slots__ = ("_clock", "_done", "_last", "_m", "_start")

    def __init__(self, metrics: Metrics, clock: Callable[[], float]) -> None:
        self._m = metrics
        self._clock = clock
        self._start = clock()
        self._last: float | None = None
        self._done = False
        metrics.in_flight.inc()

    def tokens(self, n: int) -> None:
        if n <= 0 or self._done:
            return
        now = self._clock()
        if self._last is None:
            self._m.ttft.observe(now - self._start)
        else:
            gap = (now - self._last) / n  # a delta of n tokens: n gaps of equal share
            observe = self._m.itl.observe
            for _ in range(n):
                observe(gap)
        self._last = now

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        if self._done:
            return
        self._done = True
        m = self._m
        m.in_flight.dec()
        m.prompt_tokens.inc(max(0, prompt_tokens))
        m.completion_tokens.inc(max(0, completion_tokens))
        m.duration.observe(self._clock() - self._start)


class Metrics:
    """The worker's Prometheus metrics (an `Observer`), on a registry of its own."""

    def __init__(self, *, prefix: str = "worker", clock: Callable[[], float] = time.perf_counter):
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
        )

        self._clock = clock
        self.content_type: str = CONTENT_TYPE_LATEST  # of `render()`
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{prefix}_chat_requests", "Chat completion requests by final "
                                "HTTP status (499: the client went away)", ["status"],
                                registry=r)
        self.prompt_tokens = Counter(f"{prefix}_prompt_tokens", "Prompt tokens of the chat "
                                     "requests that reached the engine", registry=r)
        self.completion_tokens = Counter(f"{prefix}_completion_tokens", "Completion tokens "
                                         "generated (reasoning, headers and answer)", registry=r)
        self.ttft = Histogram(f"{prefix}_time_to_first_token_seconds", "Generation start to "
                              "the first output token", buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(f"{prefix}_inter_token_latency_seconds", "Time between output "
                             "tokens", buckets=ITL_BUCKETS, registry=r)
        self.duration = Histogram(f"{prefix}_request_duration_seconds", "Generation start to "
                                  "the end of the request", buckets=DURATION_BUCKETS, registry=r)
        self.in_flight = Gauge(f"{prefix}_requests_in_flight", "Chat requests generating now",
                               registry=r)
        self.running = Gauge(f"{prefix}_engine_requests_running", "Engine requests running "
                             "(read at scrape time)", registry=r)
        self.waiting = Gauge(f"{prefix}_engine_requests_waiting", "Engine requests waiting "
                             "for a slot (read at scrape time)", registry=r)
        self.engine_up = Gauge(f"{prefix}_engine_up", "1 while the engine can serve", registry=r)
        self.cold_start = Gauge(f"{prefix}_cold_start_seconds", "Duration of each start-up "
                                "phase (probe, plan, engine, ...)", ["phase"], registry=r)

    # -- Observer ----------------------------------------------------------------
    def request(self) -> RequestObserver:
        return _Request(self, self._clock)

    def response(self, status: int) -> None:
        self.requests.labels(status=str(status)).inc()

    # -- scrape --------------------------------------------------------------------
    def set_cold_start(self, phases: Mapping[str, float]) -> None:
        for phase, seconds in phases.items():
            self.cold_start.labels(phase=phase).set(seconds)

    async def refresh(self, engine: Any | None) -> None:
        """Read the engine's gauges (`num_unfinished`, `info.max_num_seqs`, `is_dead`)."""
        if engine is None or engine.is_dead:
            self.engine_up.set(0)
            self.running.set(0)
            self.waiting.set(0)
            return
        self.engine_up.set(1)
        try:
            unfinished = int(await engine.num_unfinished())
        except Exception:  # a scrape must not fail because the engine is going away
            unfinished = 0
        limit = max(1, int(engine.info.max_num_seqs))
        self.running.set(min(unfinished, limit))
        self.waiting.set(max(0, unfinished - limit))

    def render(self) -> bytes:
        """The text exposition format (serve it with `self.content_type`)."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))
