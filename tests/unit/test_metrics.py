"""worker.openai.metrics: the observer interface and what a Prometheus scrape shows."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker.openai.metrics import NULL_OBSERVER, Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Info:
    max_num_seqs: int = 4


class Engine:
    def __init__(self, unfinished: int, dead: bool = False) -> None:
        self.unfinished = unfinished
        self.is_dead = dead
        self.info = Info()

    async def num_unfinished(self) -> int:
        return self.unfinished


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return samples(m)[(name, tuple(sorted(labels.items())))]


def test_ttft_itl_tokens_and_duration_from_one_request() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    req = m.request()
    assert value(m, "worker_requests_in_flight") == 1
    clock.now += 0.3
    req.tokens(1)  # first token: TTFT 0.3 s
    clock.now += 0.015
    req.tokens(1)  # one gap of 15 ms
    clock.now += 0.045
    req.tokens(3)  # a delta of three tokens: three gaps of 15 ms
    req.tokens(0)  # nothing new: ignored
    clock.now += 0.1
    req.finished(prompt_tokens=11, completion_tokens=5)
    req.finished(prompt_tokens=11, completion_tokens=5)  # idempotent
    req.tokens(1)  # after the end: ignored

    assert value(m, "worker_time_to_first_token_seconds_count") == 1
    assert value(m, "worker_time_to_first_token_seconds_sum") == pytest.approx(0.3)
    assert value(m, "worker_time_to_first_token_seconds_bucket", le="0.25") == 0
    assert value(m, "worker_time_to_first_token_seconds_bucket", le="0.5") == 1
    assert value(m, "worker_inter_token_latency_seconds_count") == 4
    assert value(m, "worker_inter_token_latency_seconds_sum") == pytest.approx(0.06)
    assert value(m, "worker_inter_token_latency_seconds_bucket", le="0.01") == 0
    assert value(m, "worker_inter_token_latency_seconds_bucket", le="0.02") == 4
    assert value(m, "worker_prompt_tokens_total") == 11
    assert value(m, "worker_completion_tokens_total") == 5
    assert value(m, "worker_request_duration_seconds_sum") == pytest.approx(0.46)
    assert value(m, "worker_requests_in_flight") == 0


def test_responses_are_counted_by_status() -> None:
    m = Metrics()
    for status in (200, 200, 400, 499, 503):
        m.response(status)
    assert value(m, "worker_chat_requests_total", status="200") == 2
    assert value(m, "worker_chat_requests_total", status="400") == 1
    assert value(m, "worker_chat_requests_total", status="499") == 1
    assert value(m, "worker_chat_requests_total", status="503") == 1


async def test_running_and_waiting_are_read_from_the_engine_at_scrape_time() -> None:
    m = Metrics()
    engine = Engine(unfinished=6)
    await m.refresh(engine)
    assert value(m, "worker_engine_requests_running") == 4  # max_num_seqs
    assert value(m, "worker_engine_requests_waiting") == 2
    assert value(m, "worker_engine_up") == 1
    engine.unfinished = 1
    await m.refresh(engine)
    assert value(m, "worker_engine_requests_running") == 1
    assert value(m, "worker_engine_requests_waiting") == 0
    await m.refresh(Engine(unfinished=3, dead=True))
    assert value(m, "worker_engine_up") == 0
    await m.refresh(None)  # still loading
    assert value(m, "worker_engine_requests_running") == 0


def test_cold_start_phases_become_labelled_gauges() -> None:
    m = Metrics()
    m.set_cold_start({"probe": 0.02, "plan": 0.05, "engine": 31.5})
    assert value(m, "worker_cold_start_seconds", phase="engine") == 31.5
    assert value(m, "worker_cold_start_seconds", phase="probe") == 0.02


def test_registries_are_private_and_the_null_observer_does_nothing() -> None:
    a, b = Metrics(), Metrics()  # a global registry would raise "Duplicated timeseries"
    a.response(200)
    assert ("worker_chat_requests_total", (("status", "200"),)) not in samples(b)
    req = NULL_OBSERVER.request()
    req.tokens(3)
    req.finished(1, 2)
    NULL_OBSERVER.response(500)
    assert a.content_type.startswith("text/plain")


def test_importing_the_protocols_does_not_load_prometheus() -> None:
    import subprocess
    import sys

    code = "import sys, worker.openai.metrics; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
