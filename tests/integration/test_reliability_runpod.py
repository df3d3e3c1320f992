"""Reliability through the real RunPod SDK worker loop (tiny random model, CPU engine).

The same bad-input matrix as over HTTP, as OpenAI-route and plain jobs: each
ends FAILED with a JSON error naming the field, and the worker serves on. Then
a cancellation storm: many streaming jobs cancelled soon after they start.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.bad_inputs import JSON_CASES, Case

from .runpod_queue import JobQueue, Worker, error_of

HELLO = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def rp(runpod_pair: tuple[JobQueue, Worker]) -> tuple[JobQueue, Worker]:
    return runpod_pair  # the session's RunPod worker


def _check(case: Case, done: dict) -> None:
    err = error_of(done)
    assert err["message"] and err["type"], (case.name, err)
    if case.param is not None and isinstance(case.body, dict):
        assert (err.get("param") or "").startswith(case.param), (case.name, err)


def test_bad_input_matrix_through_the_job_loop(rp: tuple[JobQueue, Worker],
                                               reliability: dict) -> None:
    queue, worker = rp
    cases = list(JSON_CASES)
    routed = queue.submit_all([{"openai_route": "/v1/chat/completions", "openai_input": c.body}
                               for c in cases])
    plain = queue.submit_all([c.body for c in cases if isinstance(c.body, dict)])
    for case, job in zip(cases, routed, strict=True):
        _check(case, queue.result(job, timeout=120))
    for case, job in zip([c for c in cases if isinstance(c.body, dict)], plain, strict=True):
        _check(case, queue.result(job, timeout=120))
    bad_batches = queue.submit_all([{"batch": "lines"}, {"batch": []},
                                    {"batch": [{"custom_id": "a"}]}])
    for job in bad_batches[:2]:
        assert error_of(queue.result(job))["param"].startswith("batch")
    line = queue.result(bad_batches[2])["output"]
    assert "error" in str(line)
    assert queue.result(queue.submit(HELLO))["output"]  # still serving
    assert worker.proc.poll() is None
    reliability["bad_input_runpod"] = {"cases": len(routed) + len(plain) + 3, "crashes": 0}


def test_cancelled_job_storm(rp: tuple[JobQueue, Worker], reliability: dict) -> None:
    queue, worker = rp
    body = {"openai_route": "/v1/chat/completions", "openai_input": {
        "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 1500,
        "min_tokens": 1500, "stream": True}}  # fixed length: no job can end before its cancel
    jobs = queue.submit_all([body] * 16)
    for job in jobs:  # every job is running and streaming
        queue.wait_streamed(job, timeout=120)
    for job in jobs:
        queue.cancel(job)
    deadline = time.monotonic() + 180  # 2 shared cores: the SDK polls cancellations in turns
    # Each job's own engine request is aborted (its id is the id of the chunks it streamed).
    ids = [json.loads(queue.streamed[j][0][1]["output"].split("\n\n")[0][6:])["id"]
           for j in jobs]
    lines = [f"engine request {i}-0-0 aborted" for i in ids]
    while worker.log_text().count("cancelled: its engine request was aborted") < len(jobs) \
            or not all(line in worker.log_text() for line in lines):
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.2)
    t0 = time.monotonic()
    assert queue.result(queue.submit(HELLO), timeout=30)["output"]
    reliability["cancellation_storm_runpod"] = {
        "jobs": len(jobs), "cancelled": "once streaming",
        "next_job_s": round(time.monotonic() - t0, 2)}
