"""RunPod's documented job inputs: sampling_params mapped onto the OpenAI requests, prompt
jobs, the route table, and worker-vllm's stream batching knobs; fake engine, no HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.test_jobs import answer, error_of, service
from worker.openai.errors import InvalidRequest, NotFound
from worker.platforms.runpod_inputs import chat_body, completion_body
from worker.platforms.runpod_jobs import (
    ROUTES,
    ChatJob,
    CompletionJob,
    normalize_job_input,
    run_job,
)
from worker.platforms.runpod_stream import BatchKnobs, coalesce, knobs_of
from worker.setup.config import Settings

HI = [{"role": "user", "content": "Hi"}]


async def outputs(job_input: Any, **kw: Any) -> tuple[list[Any], Any]:
    svc, eng = service()
    return [o async for o in run_job(svc, job_input, max_batch_lines=8, **kw)], eng


# ----------------------------------------------------------------- sampling_params


def test_every_sampling_field_lands_on_the_chat_request() -> None:
    params = {"max_tokens": 40, "temperature": 0.3, "top_p": 0.8, "top_k": 20, "min_p": 0.05,
              "seed": 3, "stop": ["END"], "n": 2, "presence_penalty": 0.1,
              "frequency_penalty": 0.2, "repetition_penalty": 1.1, "logprobs": 2,
              "min_tokens": 1, "skip_special_tokens": True, "best_of": 2,
              "logit_bias": {"100": 1.0}, "detokenize": True, "use_beam_search": False}
    job = normalize_job_input({"messages": HI, "sampling_params": params})
    assert isinstance(job, ChatJob) and not job.sse
    r = job.request
    assert (r.max_tokens, r.temperature, r.top_p, r.top_k, r.min_p, r.seed, r.stop, r.n) == (
        40, 0.3, 0.8, 20, 0.05, 3, ["END"], 2)
    assert (r.presence_penalty, r.frequency_penalty, r.repetition_penalty) == (0.1, 0.2, 1.1)
    assert (r.logprobs, r.top_logprobs, r.min_tokens, r.logit_bias) == (
        True, 2, 1, {"100": 1.0})


def test_ignore_eos_generates_max_tokens_exactly() -> None:
    job = normalize_job_input({"messages": HI, "sampling_params": {"ignore_eos": True,
                                                                   "max_tokens": 30}})
    assert isinstance(job, ChatJob) and job.request.min_tokens == 30


@pytest.mark.parametrize(("job_input", "param"), [
    ({"messages": HI, "sampling_params": {"nucleus": 0.5}}, "sampling_params.nucleus"),
    ({"messages": HI, "sampling_params": {"temperature": 9}}, "sampling_params.temperature"),
    ({"messages": HI, "sampling_params": {"logprobs": 99}}, "sampling_params.logprobs"),
    ({"messages": HI, "sampling_params": {"logprobs": True}}, "sampling_params.logprobs"),
    ({"messages": HI, "sampling_params": {"ignore_eos": True}}, "sampling_params.ignore_eos"),
    ({"messages": HI, "sampling_params": {"skip_special_tokens": False}},
     "sampling_params.skip_special_tokens"),
    ({"messages": HI, "sampling_params": {"stop_token_ids": [5]}},
     "sampling_params.stop_token_ids"),
    ({"messages": HI, "sampling_params": {"best_of": 3}}, "sampling_params.best_of"),
    ({"messages": HI, "sampling_params": {"use_beam_search": True}},
     "sampling_params.use_beam_search"),
    ({"messages": HI, "sampling_params": {"prompt_logprobs": 1}},
     "sampling_params.prompt_logprobs"),
    ({"messages": HI, "max_tokens": 5, "sampling_params": {"max_tokens": 5}},
     "sampling_params.max_tokens"),
    ({"messages": HI, "sampling_params": [1]}, "sampling_params"),
    ({"messages": HI, "use_openai_format": False}, "use_openai_format"),
    ({"prompt": "x", "sampling_params": {"guided_decoding": {"json": {}}}},
     "sampling_params.guided_decoding"),
    ({"prompt": "x", "sampling_params": {"top_p": "high"}}, "sampling_params.top_p"),
    ({"prompt": "x", "apply_chat_template": True}, "apply_chat_template"),
    ({"prompt": "x", "max_batch_size": 0}, "max_batch_size"),
    ({"prompt": "x", "batch_size_growth_factor": "3"}, "batch_size_growth_factor"),
])
def test_a_key_that_cannot_be_honoured_fails_the_job_by_name(job_input: dict[str, Any],
                                                             param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize_job_input(job_input)
    assert info.value.param == param, info.value.message


async def test_sampling_params_are_honoured_and_later_errors_name_the_job_key() -> None:
    outs, eng = await outputs({"messages": HI, "sampling_params": {"max_tokens": 7,
                                                                   "temperature": 0.2,
                                                                   "seed": 11}})
    [completion] = outs
    opts = eng.calls[0][1]
    assert (opts.max_tokens, opts.temperature, opts.seed) == (7, 0.2, 11)
    assert completion["usage"]["completion_tokens"] <= 7
    outs, _ = await outputs({"messages": HI, "sampling_params": {"max_tokens": 10**6}})
    err = error_of(outs[0])
    assert err["param"] == "sampling_params.max_tokens" and err["code"] == "context_length_exceeded"
    outs, _ = await outputs({"prompt": "x", "sampling_params": {"stop": ["s"] * 40}})
    assert error_of(outs[0])["param"] == "sampling_params.stop"


def test_prompt_jobs_map_onto_a_text_completion() -> None:
    job = normalize_job_input({"prompt": "Once", "stream": True, "sampling_params": {
        "max_tokens": 9, "logprobs": 1, "ignore_eos": True, "skip_special_tokens": False,
        "stop_token_ids": [7]}})
    assert isinstance(job, CompletionJob) and not job.sse
    r = job.request
    assert (r.prompt, r.stream, r.max_tokens, r.logprobs, r.ignore_eos) == ("Once", True, 9, 1,
                                                                             True)
    assert r.skip_special_tokens is False and r.stop_token_ids == [7]
    assert completion_body({"prompt": "x", "max_batch_size": 4}).body == {"prompt": "x"}
    assert chat_body({"messages": HI, "min_batch_size": 2}).body == {"messages": HI}


async def test_prompt_job_streamed_and_not() -> None:
    [whole], eng = await outputs({"prompt": "Once", "sampling_params": {"max_tokens": 12}})
    assert whole["object"] == "text_completion" and eng.calls[0][1].max_tokens == 12
    assert whole["usage"]["completion_tokens"] <= 12
    outs, _ = await outputs({"prompt": "Once", "stream": True,
                             "sampling_params": {"max_tokens": 12}})
    chunks = [c for group in outs for c in group]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == \
        whole["choices"][0]["text"]


# ----------------------------------------------------------------- routes


def test_the_route_table_serves_chat_completions_responses_and_models() -> None:
    assert set(ROUTES) == {"/v1/chat/completions", "/v1/completions", "/v1/responses",
                           "/v1/models"}
    job = normalize_job_input({"openai_route": "/v1/completions/",
                               "openai_input": {"prompt": "x", "stream": True}})
    assert isinstance(job, CompletionJob) and job.sse
    with pytest.raises(NotFound) as info:
        normalize_job_input({"openai_route": "/v1/embeddings", "openai_input": {}})
    assert info.value.param == "openai_route"
    assert all(route in info.value.message for route in ROUTES)


async def test_completions_route_streams_sse_text_ending_with_done() -> None:
    outs, _ = await outputs({"openai_route": "/v1/completions",
                             "openai_input": {"prompt": "x", "stream": True}})
    assert all(isinstance(t, str) for t in outs) and "".join(outs).endswith("data: [DONE]\n\n")
    events = [json.loads(e[6:]) for e in "".join(outs).split("\n\n")
              if e and e != "data: [DONE]"]
    assert {e["object"] for e in events} == {"text_completion"}


# ----------------------------------------------------------------- batching knobs


def test_group_sizes_follow_worker_vllm() -> None:
    def first(knobs: BatchKnobs, k: int = 6) -> list[int]:
        sizes = knobs.sizes()
        return [next(sizes) for _ in range(k)]

    assert first(BatchKnobs(50, 1, 3)) == [1, 3, 9, 27, 50, 50]
    assert first(BatchKnobs(max_batch_size=10)) == [1, 3, 9, 10, 10, 10]
    assert first(BatchKnobs(8, 1, 1)) == [8] * 6  # no growth: every group holds the maximum
    assert first(BatchKnobs(4, 4, 2)) == [4] * 6
    assert not BatchKnobs().by_count and BatchKnobs(min_batch_size=2).by_count
    job = BatchKnobs(max_batch_size=5)
    assert job.over(BatchKnobs(20, 2, 2.0)) == BatchKnobs(5, 2, 2.0)
    assert knobs_of({"max_batch_size": 5, "batch_size_growth_factor": 2}) == BatchKnobs(5, None,
                                                                                      2.0)


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def test_coalesce_by_count_groups_exactly_and_keeps_order() -> None:
    groups = [g async for g in coalesce(numbers(30), knobs=BatchKnobs(10, 1, 3))]
    assert [len(g) for g in groups] == [1, 3, 9, 10, 7]
    assert [x for g in groups for x in g] == list(range(30))


async def test_a_streamed_job_uses_the_job_knobs_over_the_environment() -> None:
    svc, _ = service(answer("one two three four five six seven eight nine ten"), chunk=1)
    job = {"messages": HI, "stream": True, "max_batch_size": 4, "min_batch_size": 1,
           "batch_size_growth_factor": 2}
    outs = [o async for o in run_job(svc, job, max_batch_lines=8)]
    assert [len(g) for g in outs[:3]] == [1, 2, 4] and all(len(g) <= 4 for g in outs)
    env = BatchKnobs(3, 3, 1.0)  # DEFAULT_BATCH_SIZE=3, no growth
    outs = [o async for o in run_job(svc, {"messages": HI, "stream": True}, max_batch_lines=8,
                                     knobs=env)]
    assert all(len(g) == 3 for g in outs[:-1]) and 1 <= len(outs[-1]) <= 3


def test_the_environment_knobs_are_settings() -> None:
    s = Settings.from_env({"DEFAULT_BATCH_SIZE": "30", "DEFAULT_MIN_BATCH_SIZE": "2",
                           "DEFAULT_BATCH_SIZE_GROWTH_FACTOR": "1.5"})
    assert (s.default_batch_size, s.default_min_batch_size,
            s.default_batch_size_growth_factor) == (30, 2, 1.5)
    assert Settings.from_env({"MIN_BATCH_SIZE": "4"}).default_min_batch_size == 4
    with pytest.raises(ValueError, match="DEFAULT_BATCH_SIZE"):
        Settings.from_env({"DEFAULT_BATCH_SIZE": "0"})
