"""RunPod job inputs -> typed requests, and job outputs (SSE, grouping, JSON errors); no HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from openai_harmony import Message, Role

from tests.unit.fake_engine import FakeEngine
from worker.engine.api import EngineDeadError, GenerationDelta, SamplingOptions
from worker.engine.loop import EngineLoop
from worker.harmony.tokens import RETURN, encode_text, encoding
from worker.openai.chat.service import ChatService
from worker.openai.errors import InvalidRequest, NotFound, WorkerError
from worker.platforms.runpod_handler import main, make_handler, watch_engine
from worker.platforms.runpod_jobs import (
    SSE_DONE,
    BatchJob,
    ChatJob,
    ModelsJob,
    by_size,
    coalesce,
    job_error,
    normalize_job_input,
    run_job,
)

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


def answer(text: str = "Hello there, friend!") -> list[int]:
    enc = encoding()
    toks: list[int] = []
    for channel, body in (("analysis", "User greets."), ("final", text)):
        toks += enc.render(Message.from_role_and_content(Role.ASSISTANT, body)
                           .with_channel(channel))
    return toks[len(encode_text("assistant")) + 1:-1] + [RETURN]


class SlowEngine(FakeEngine):
    """One token per millisecond: slow enough to be caught mid-stream."""

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncIterator[GenerationDelta]:
        async for delta in super().generate(request_id, prompt_token_ids, options):
            await asyncio.sleep(0.001)
            yield delta


def service(tokens: list[int] | None = None, chunk: int = 3,
            slow: bool = False) -> tuple[ChatService, FakeEngine]:
    out = tokens or answer()
    eng = (SlowEngine if slow else FakeEngine)(lambda p, o: out, chunk=chunk)
    return ChatService(eng, today=lambda: "2026-11-27"), eng


async def outputs(svc: ChatService, job_input: Any, **kw: Any) -> list[Any]:
    return [o async for o in run_job(svc, job_input, max_batch_lines=8, **kw)]


def error_of(output: Any) -> dict[str, Any]:
    assert set(output) == {"error"} and isinstance(output["error"], str)
    return json.loads(output["error"])  # a JSON string, never a Python repr


# ----------------------------------------------------------------- normalize_job_input


def test_openai_route_chat_is_an_sse_chat_job() -> None:
    req = normalize_job_input({"openai_route": "/v1/chat/completions",
                               "openai_input": {**CHAT, "stream": True}})
    assert isinstance(req, ChatJob) and req.sse and req.request.stream


@pytest.mark.parametrize("job_input", [
    {"openai_route": "/v1/models"},
    {"openai_route": "/v1/models", "openai_input": {}},
    {"openai_route": "/v1/models/", "openai_input": None},
])
def test_models_route_with_or_without_a_body(job_input: dict[str, Any]) -> None:
    assert isinstance(normalize_job_input(job_input), ModelsJob)


def test_plain_chat_request_is_a_native_chat_job() -> None:
    req = normalize_job_input({**CHAT, "max_tokens": 5})
    assert isinstance(req, ChatJob) and not req.sse and req.request.max_tokens == 5


def test_batch_keeps_its_lines_for_line_by_line_validation() -> None:
    req = normalize_job_input({"batch": [{"custom_id": "a"}, "junk"]})
    assert isinstance(req, BatchJob) and req.lines == [{"custom_id": "a"}, "junk"]


@pytest.mark.parametrize(("job_input", "kind", "param"), [
    (None, InvalidRequest, "input"),
    ("hello", InvalidRequest, "input"),
    ([CHAT], InvalidRequest, "input"),
    ({}, InvalidRequest, "messages"),
    ({"prompt": 7}, InvalidRequest, "prompt"),
    ({"prompt": "hi", "sampling_params": {"nucleus": 1}}, InvalidRequest,
     "sampling_params.nucleus"),
    ({"openai_route": "/v1/embeddings", "openai_input": {}}, NotFound, "openai_route"),
    ({"openai_route": 7}, NotFound, "openai_route"),
    ({"openai_route": "/v1/chat/completions"}, InvalidRequest, "openai_input"),
    ({"openai_route": "/v1/chat/completions", "openai_input": "hi"}, InvalidRequest,
     "openai_input"),
    ({"batch": []}, InvalidRequest, "batch"),
    ({"batch": {"custom_id": "a"}}, InvalidRequest, "batch"),
    ({"messages": []}, InvalidRequest, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, InvalidRequest, "messages[0]"),
    ({**CHAT, "temperature": "hot"}, InvalidRequest, "temperature"),
    ({"openai_route": "/v1/chat/completions", "openai_input": {**CHAT, "max_tokens": -1}},
     InvalidRequest, "max_tokens"),
])
def test_malformed_input_names_the_field(job_input: Any, kind: type, param: str) -> None:
    with pytest.raises(kind) as info:
        normalize_job_input(job_input)
    assert isinstance(info.value, WorkerError)
    assert info.value.param is not None and info.value.param.startswith(param)


# ----------------------------------------------------------------- errors


def test_job_error_is_a_json_string_with_type_message_param() -> None:
    err = error_of(job_error(InvalidRequest("bad temperature", param="temperature")))
    assert err == {"message": "bad temperature", "type": "invalid_request_error",
                   "param": "temperature", "code": None}


def test_engine_death_is_reported_as_unavailable_and_unknown_errors_hide_their_text() -> None:
    assert error_of(job_error(EngineDeadError("x")))["type"] == "service_unavailable"
    hidden = error_of(job_error(RuntimeError("secret path /root/x")))
    assert hidden["type"] == "server_error" and "secret" not in hidden["message"]


async def test_bad_job_yields_one_json_error_and_nothing_else() -> None:
    svc, eng = service()
    out = await outputs(svc, {"messages": [{"role": "user"}]})
    assert len(out) == 1 and error_of(out[0])["param"].startswith("messages[0]")
    out = await outputs(svc, {**CHAT, "model": "gpt-5"})
    assert len(out) == 1 and error_of(out[0])["param"] == "model"
    assert eng.calls == []  # nothing reached the engine


# ----------------------------------------------------------------- results


async def test_non_streamed_chat_and_models_yield_one_dict() -> None:
    svc, _ = service()
    [done] = await outputs(svc, {"openai_route": "/v1/chat/completions", "openai_input": CHAT})
    assert done["object"] == "chat.completion"
    assert done["choices"][0]["message"]["content"] == "Hello there, friend!"
    [native] = await outputs(svc, CHAT)
    assert native["choices"][0]["message"]["content"] == "Hello there, friend!"
    [models] = await outputs(svc, {"openai_route": "/v1/models"})
    assert models["object"] == "list" and models["data"][0]["id"] == "fake-gpt-oss"


def parse_sse(texts: list[str]) -> list[Any]:
    body = "".join(texts)
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and body.endswith("\n\n")
    return [e[6:] if e[6:] == "[DONE]" else json.loads(e[6:]) for e in events]


async def test_openai_route_stream_yields_raw_sse_text_ending_with_done() -> None:
    svc, _ = service()
    texts = await outputs(svc, {"openai_route": "/v1/chat/completions",
                                "openai_input": {**CHAT, "stream": True,
                                                 "stream_options": {"include_usage": True}}})
    assert all(isinstance(t, str) for t in texts) and texts[-1].endswith(SSE_DONE)
    events = parse_sse(texts)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] > 0
    content = "".join(c["choices"][0]["delta"].get("content", "")
                      for c in events[:-1] if c["choices"])
    assert content == "Hello there, friend!"
    assert len(texts) < len(events)  # grouped: fewer POSTs than events


async def test_native_stream_yields_lists_of_chunk_dicts() -> None:
    svc, _ = service()
    groups = await outputs(svc, {**CHAT, "stream": True})
    chunks = [c for g in groups for c in g]
    assert all(isinstance(g, list) for g in groups)
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


class Exploding(ChatService):
    async def stream(self, p: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async for i, chunk in _enumerate(super().stream(p)):
            yield chunk
            if i == 1:
                raise EngineDeadError("engine core died")


async def _enumerate(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    i = 0
    async for item in items:
        yield i, item
        i += 1


async def test_error_inside_a_started_sse_stream_is_an_sse_error_event() -> None:
    svc = Exploding(FakeEngine(lambda p, o: answer(), chunk=1))
    texts = await outputs(svc, {"openai_route": "/v1/chat/completions",
                                "openai_input": {**CHAT, "stream": True}})
    events = parse_sse(texts)
    assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "service_unavailable"
    native = await outputs(svc, {**CHAT, "stream": True})  # native: the job fails
    assert error_of(native[-1])["type"] == "service_unavailable"


async def test_batch_job_yields_its_lines_in_order() -> None:
    svc, _ = service()
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": CHAT} for i in range(3)]
    groups = await outputs(svc, {"batch": lines})
    assert [o["custom_id"] for g in groups for o in g] == ["c0", "c1", "c2"]
    [err] = await outputs(svc, {"batch": lines * 3})  # over max_batch_lines=8
    assert error_of(err)["param"] == "batch"


def test_by_size_keeps_order_and_splits_under_the_limit() -> None:
    items = [{"x": "a" * 40} for _ in range(10)]  # 51 bytes of JSON each
    groups = by_size(items, 120)
    assert [len(g) for g in groups] == [2, 2, 2, 2, 2]
    assert by_size(items, 10) == [[i] for i in items]  # one item per group, at least
    assert by_size([], 10) == [[]]


# ----------------------------------------------------------------- grouping


async def ticks(n: int, gap: float) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(gap)
        yield i


async def test_coalesce_bundles_a_fast_source_and_passes_a_slow_one_through() -> None:
    fast = [g async for g in coalesce(ticks(60, 0.001), interval=0.05)]
    assert [i for g in fast for i in g] == list(range(60))
    assert fast[0] == [0] and len(fast) <= 10  # first item at once, then bundles
    slow = [g async for g in coalesce(ticks(4, 0.06), interval=0.02)]
    assert slow == [[0], [1], [2], [3]]


async def test_coalesce_caps_a_group_and_reraises_source_errors() -> None:
    async def burst() -> AsyncIterator[int]:
        for i in range(10):
            yield i
        raise ValueError("boom")

    groups: list[list[int]] = []
    with pytest.raises(ValueError, match="boom"):
        async for g in coalesce(burst(), interval=0.01, max_items=3):
            groups.append(g)
    assert [i for g in groups for i in g] == list(range(10))
    assert max(map(len, groups)) <= 3


async def test_closing_a_job_mid_stream_aborts_the_engine_request() -> None:
    svc, eng = service(answer("word " * 300), chunk=1, slow=True)
    job = run_job(svc, {"openai_route": "/v1/chat/completions",
                        "openai_input": {**CHAT, "stream": True}}, max_batch_lines=8)
    await anext(job)
    await anext(job)
    assert eng.running
    await job.aclose()  # type: ignore[attr-defined]
    assert eng.running == set()


# ----------------------------------------------------------------- the handler's bridge


@pytest.fixture(scope="module")
def engine_loop() -> EngineLoop:
    loop = EngineLoop()
    return loop


async def test_handler_runs_jobs_on_the_engine_loop(engine_loop: EngineLoop) -> None:
    svc, _ = service()
    handler = make_handler(engine_loop, svc)
    out = [o async for o in handler({"id": "j1", "input": {**CHAT, "stream": True}})]
    assert out and all(isinstance(g, list) for g in out)
    [err] = [o async for o in handler({"id": "j2", "input": {"messages": "hi"}})]
    assert error_of(err)["param"] == "messages"


async def test_cancelling_the_sdk_task_cancels_the_engine_side_job(
        engine_loop: EngineLoop, caplog: pytest.LogCaptureFixture) -> None:
    svc, eng = service(answer("word " * 3000), chunk=1, slow=True)
    handler = make_handler(engine_loop, svc, flush_interval=0.001)
    seen = asyncio.Event()

    async def consume() -> None:
        async for _ in handler({"id": "job-c", "input": {**CHAT, "stream": True}}):
            seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 5)
    assert eng.running
    with caplog.at_level("INFO", logger="worker.platforms.runpod_handler"):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert eng.running == set()
    assert "job job-c cancelled" in caplog.text and "unfinished now: 0" in caplog.text


async def test_a_job_task_cancelled_outside_the_handler_still_aborts_the_engine_request(
        engine_loop: EngineLoop, caplog: pytest.LogCaptureFixture) -> None:
    """RunPod's SDK cancels a job's task while it posts a chunk (outside the handler), and
    leaves the handler's generator suspended, unclosed: the task's end aborts the request."""
    svc, eng = service(answer("word " * 3000), chunk=1, slow=True)
    handler = make_handler(engine_loop, svc, flush_interval=0.001)
    outputs = handler({"id": "job-p", "input": {**CHAT, "stream": True}})
    posting = asyncio.Event()

    async def sdk_job() -> None:  # the SDK's loop: take a chunk, then post it
        while True:
            await anext(outputs)
            posting.set()
            await asyncio.sleep(3600)  # the chunk's POST, where the cancel lands

    with caplog.at_level("INFO", logger="worker.platforms.runpod_handler"):
        task = asyncio.create_task(sdk_job())
        await asyncio.wait_for(posting.wait(), 5)
        assert eng.running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = asyncio.get_running_loop().time() + 30
        while eng.running or "job job-p cancelled" not in caplog.text:
            assert asyncio.get_running_loop().time() < deadline, "the request was not aborted"
            await asyncio.sleep(0.01)
    assert "unfinished now: 0" in caplog.text
    await outputs.aclose()  # type: ignore[attr-defined]  # later, as the collector would


async def test_closing_the_handler_early_cancels_the_engine_side_job(
        engine_loop: EngineLoop) -> None:
    svc, eng = service(answer("word " * 3000), chunk=1, slow=True)
    handler = make_handler(engine_loop, svc, flush_interval=0.001)
    outputs = handler({"id": "job-x", "input": {**CHAT, "stream": True}})
    await anext(outputs)
    await anext(outputs)
    assert eng.running
    await outputs.aclose()  # type: ignore[attr-defined]
    assert eng.running == set()


async def test_watch_engine_exits_non_zero_when_the_engine_dies() -> None:
    _, eng = service()
    codes: list[int] = []
    watcher = asyncio.create_task(watch_engine(eng, codes.append, interval=0.01, grace=0))
    await asyncio.sleep(0.05)
    assert codes == []
    eng.dead = True
    await asyncio.wait_for(watcher, 1)
    assert codes == [4]


def test_main_fails_fast_without_a_job_source_or_with_bad_settings(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], {}) == 2
    assert "--rp_serve_api" in capsys.readouterr().err
    assert main(["--rp_serve_api"], {"MAX_MODEL_LEN": "lots"}) == 2
    assert "MAX_MODEL_LEN" in capsys.readouterr().err
