"""The real RunPod SDK worker loop (`python -m worker runpod`) on the tiny random model.

A job queue served here on 127.0.0.1 plays RunPod's side of the protocol the
SDK speaks: `GET /job-take[-batch]/<worker>` hands out jobs, `GET /job-stop/
<worker>` long-polls for jobs to cancel, `POST /job-stream/...` receives each
yield, `POST /job-done/...` the final result. The tests assert what the queue
received. The last queue test kills the engine core and checks the worker
exits non-zero; then a second worker runs the SDK's local API server
(`--rp_serve_api`) and is called over HTTP. One engine at a time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from .conftest import START_TIMEOUT, free_port, stop
from .runpod_queue import (
    RUNNING,
    JobQueue,
    Worker,
    _children,
    _cmdline,
    error_of,
    start_worker,
)

CHAT = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 12}
# RunPod's documented shapes (docs/RUNPOD.md copies these): vLLM's sampling_params.
SAMPLED = {"messages": [{"role": "user", "content": "Hello!"}],
           "sampling_params": {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "seed": 1}}
PROMPT = {"prompt": "<|start|>user<|message|>Hello!<|end|><|start|>assistant",
          "sampling_params": {"max_tokens": 9, "temperature": 0}}
STREAMED_PROMPT = {**PROMPT, "stream": True, "sampling_params": {"max_tokens": 30},
                   "max_batch_size": 4, "min_batch_size": 1, "batch_size_growth_factor": 2}
LONG = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 1900,
        "stream": True}


@pytest.fixture(scope="module")
def queue_and_worker(runpod_pair: tuple[JobQueue, Worker]) -> tuple[JobQueue, Worker]:
    return runpod_pair  # the session's RunPod worker (its engine dies in the last queue test)


@pytest.fixture(scope="module")
def queue(queue_and_worker: tuple[JobQueue, Worker]) -> JobQueue:
    return queue_and_worker[0]


@pytest.fixture(scope="module")
def worker(queue_and_worker: tuple[JobQueue, Worker]) -> Worker:
    return queue_and_worker[1]


def sse_events(texts: list[str]) -> list[Any]:
    events = [e for e in "".join(texts).split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


def test_cold_start_is_logged_per_phase_before_the_first_job(worker: Worker) -> None:
    text = worker.log_text()
    for phase in ("sdk_import", "probe", "plan", "engine"):
        assert f"start-up phase {phase} done in" in text
    assert text.index("READY: model tiny-random") < text.index("Starting Serverless Worker")


def test_chat_job(worker: Worker, queue: JobQueue) -> None:
    done = queue.result(queue.submit(CHAT))
    [completion] = done["output"]
    ChatCompletion.model_validate(completion)
    assert completion["usage"]["completion_tokens"] <= 12 and "error" not in done


def test_openai_route_chat_and_models(worker: Worker, queue: JobQueue) -> None:
    [completion] = queue.result(queue.submit({"openai_route": "/v1/chat/completions",
                                              "openai_input": CHAT}))["output"]
    assert ChatCompletion.model_validate(completion).model == "tiny-random"
    for job_input in ({"openai_route": "/v1/models"},
                      {"openai_route": "/v1/models", "openai_input": {}}):
        [models] = queue.result(queue.submit(job_input))["output"]
        assert [m["id"] for m in models["data"]] == ["tiny-random"]


def test_openai_route_stream_sends_sse_text_before_the_job_ends(
        worker: Worker, queue: JobQueue) -> None:
    body = {**CHAT, "max_tokens": 200, "stream": True, "stream_options": {"include_usage": True}}
    job = queue.submit({"openai_route": "/v1/chat/completions", "openai_input": body})
    done = queue.result(job)
    streamed = queue.streamed[job]
    texts = [body["output"] for _, body in streamed]
    assert all(isinstance(t, str) for t in texts) and texts == done["output"]
    assert len(streamed) >= 2 and streamed[0][0] < queue.done[job][0] - 0.05
    events = sse_events(texts)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert chunks[-1].usage is not None
    assert len(streamed) < len(events)  # grouped: not one POST per token


def test_openai_route_responses_streamed_and_not(worker: Worker, queue: JobQueue) -> None:
    body = {"input": "Hello!", "max_output_tokens": 40}
    [response] = queue.result(queue.submit({"openai_route": "/v1/responses",
                                            "openai_input": body}))["output"]
    r = Response.model_validate(response)
    assert r.model == "tiny-random" and r.usage is not None and r.usage.output_tokens <= 40
    job = queue.submit({"openai_route": "/v1/responses",
                        "openai_input": {**body, "stream": True}})
    texts = queue.result(job)["output"]
    assert all(isinstance(t, str) for t in texts) and "[DONE]" not in "".join(texts)
    events = []
    for block in (b for b in "".join(texts).split("\n\n") if b):
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    Response.model_validate(events[-1]["response"])


def test_batch_of_twenty_with_two_bad_lines(worker: Worker, queue: JobQueue) -> None:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {**CHAT, "max_tokens": 8}} for i in range(20)]
    del lines[6]["custom_id"]
    lines[15]["body"] = {"messages": [{"role": "user", "content": 3}]}
    groups = queue.result(queue.submit({"batch": lines}), timeout=120)["output"]
    out = [line for group in groups for line in group]
    assert [o["response"]["status_code"] for o in out] == [400 if i in (6, 15) else 200
                                                            for i in range(20)]
    assert [o["custom_id"] for o in out][:6] == [f"r{i}" for i in range(6)]
    assert out[6]["error"]["message"] and out[6]["response"]["body"]["error"]["param"] == \
        "custom_id"
    assert out[15]["response"]["body"]["error"]["param"].startswith("messages[0]")
    assert all(ChatCompletion.model_validate(o["response"]["body"])
               for i, o in enumerate(out) if i not in (6, 15))


def test_several_jobs_are_fetched_together_and_run_concurrently(
        worker: Worker, queue: JobQueue) -> None:
    ids = queue.submit_all([{**CHAT, "max_tokens": 64, "stream": True} for _ in range(4)])
    for job in ids:
        done = queue.result(job, timeout=120)
        assert done["output"] == queue.outputs(job)  # the aggregate is what was streamed
        assert all(isinstance(g, list) and g[0]["object"] == "chat.completion.chunk"
                   for g in done["output"])  # native stream: lists of chunk dicts
    assert any(n > 1 and len(given) > 1 for n, given in queue.takes)  # a batch take
    first_done = min(queue.done[j][0] for j in ids)
    assert all(queue.streamed[j][0][0] < first_done for j in ids)  # all running at once


def test_sampling_params_are_honoured(worker: Worker, queue: JobQueue) -> None:
    [completion] = queue.result(queue.submit(SAMPLED))["output"]
    ChatCompletion.model_validate(completion)
    assert 1 <= completion["usage"]["completion_tokens"] <= 9  # max_tokens, not the context


def test_prompt_job_streamed_and_not(worker: Worker, queue: JobQueue) -> None:
    [completion] = queue.result(queue.submit(PROMPT))["output"]
    c = Completion.model_validate(completion)
    assert c.object == "text_completion" and c.usage is not None
    assert 1 <= c.usage.completion_tokens <= 9
    job = queue.submit(STREAMED_PROMPT)
    groups = queue.result(job)["output"]
    assert groups == queue.outputs(job) and all(isinstance(g, list) for g in groups)
    chunks = [c for g in groups for c in g]
    assert all(c["object"] == "text_completion" for c in chunks)
    # (openai's Completion model, which its client builds unvalidated for a stream, types
    # finish_reason as never null: only the last chunk validates)
    assert Completion.model_validate(chunks[-1]).choices[0].finish_reason in ("stop", "length")
    # worker-vllm's batching knobs: groups of 1, 2, then 4 chunks (the last one what is left)
    sizes = [len(g) for g in groups]
    assert sizes[0] == 1 and all(n <= 4 for n in sizes)
    assert sizes[:-1] == [1, 2, 4, 4, 4, 4, 4, 4, 4][:len(sizes) - 1]


def test_openai_route_completions_streamed_and_not(worker: Worker, queue: JobQueue) -> None:
    body = {"prompt": "Hello", "max_tokens": 8}
    [completion] = queue.result(queue.submit({"openai_route": "/v1/completions",
                                              "openai_input": body}))["output"]
    assert Completion.model_validate(completion).model == "tiny-random"
    texts = queue.result(queue.submit({"openai_route": "/v1/completions",
                                       "openai_input": {**body, "stream": True}}))["output"]
    events = sse_events(texts)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert Completion.model_validate(events[-2]).choices[0].finish_reason in ("stop", "length")


def test_unknown_route_and_unknown_sampling_key_fail_by_name(
        worker: Worker, queue: JobQueue) -> None:
    err = error_of(queue.result(queue.submit({"openai_route": "/v1/embeddings",
                                              "openai_input": {"input": "x"}})))
    assert err["param"] == "openai_route"
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models"):
        assert route in err["message"]
    err = error_of(queue.result(queue.submit({**SAMPLED, "sampling_params": {"nucleus": 1}})))
    assert err["param"] == "sampling_params.nucleus"


def test_malformed_jobs_fail_with_a_json_error_naming_the_field(
        worker: Worker, queue: JobQueue) -> None:
    err = error_of(queue.result(queue.submit({"messages": [{"role": "user"}]})))
    assert err["type"] == "invalid_request_error" and err["param"].startswith("messages[0]")
    err = error_of(queue.result(queue.submit({"openai_route": "/v1/chat/completions",
                                              "openai_input": {**CHAT, "temperature": "hot"}})))
    assert err["param"] == "temperature" and "temperature" in err["message"]
    assert error_of(queue.result(queue.submit("hello")))["param"] == "input"


def test_cancelled_job_aborts_its_engine_request(worker: Worker, queue: JobQueue) -> None:
    job = queue.submit({"openai_route": "/v1/chat/completions", "openai_input": LONG})
    queue.wait_streamed(job)
    queue.cancel(job)  # the SDK learns it from its /job-stop long-poll
    # The abort itself, not a count of the engine's requests (another one may still be
    # finishing): the engine logs the id of the request it aborted, which is the id of the
    # chunks the job streamed plus the choice and phase (`chatcmpl-…-0-0`).
    [first] = sse_events([queue.streamed[job][0][1]["output"]])[:1]
    aborted = f"engine request {first['id']}-0-0 aborted"
    cancelled = f"job {job} cancelled: its engine request was aborted"
    deadline = time.monotonic() + 60
    while not (aborted in worker.log_text() and cancelled in worker.log_text()):
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.2)
    sent = len(queue.streamed[job])
    time.sleep(1.0)
    assert len(queue.streamed[job]) == sent and job not in queue.done  # nothing more
    assert queue.result(queue.submit(CHAT))["output"]  # the worker serves on


def test_engine_death_fails_the_job_and_exits_non_zero(worker: Worker, queue: JobQueue) -> None:
    job = queue.submit(LONG)
    queue.wait_streamed(job)
    cores = [p for p in _children(worker.proc.pid) if b"EngineCore" in _cmdline(p)]
    assert cores, "no EngineCore process found"
    for pid in cores:
        os.kill(pid, signal.SIGKILL)
    assert error_of(queue.result(job, timeout=30))["type"] == "service_unavailable"
    assert worker.proc.wait(30) == 4


def test_local_api_server_runsync(random_model: Path,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    for proc in RUNNING:  # one engine at a time
        stop(proc)
    port = free_port()
    w = start_worker(random_model, tmp_path_factory.mktemp("runpod-api"),
                     ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert w.proc.poll() is None and time.monotonic() < deadline, w.log_text()[-4000:]
            try:
                if httpx.get(f"{base}/docs", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        r = httpx.post(f"{base}/runsync", json={"input": CHAT}, timeout=120).json()
        assert r["status"] == "COMPLETED"
        ChatCompletion.model_validate(r["output"][0])
        r = httpx.post(f"{base}/runsync", timeout=120, json={"input": {
            "openai_route": "/v1/chat/completions", "openai_input": {**CHAT, "stream": True}}})
        assert sse_events(r.json()["output"])[-1] == "[DONE]"
    finally:
        stop(w.proc)
    assert w.proc.returncode == 0, w.log_text()[-3000:]  # SIGTERM: clean shutdown
