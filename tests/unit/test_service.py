"""ChatService on a scripted fake engine: modes, phases, streaming equality, stops, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai_harmony import Message, Role

from tests.unit.fake_engine import FakeEngine
from worker.engine.api import SamplingOptions
from worker.harmony.render import tool_call_prefix_tokens
from worker.harmony.tokens import CALL, END, RETURN, encode_text, encoding, stop_token_ids
from worker.openai.chat.protocol import ChatCompletionRequest
from worker.openai.chat.response import ChatCompletionChunk
from worker.openai.chat.service import ChatService
from worker.openai.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def completion(*msgs: Message, end: int = RETURN) -> list[int]:
    """Tokens a model emits after `<|start|>assistant` for these assistant messages."""
    enc = encoding()
    toks: list[int] = []
    for m in msgs:
        toks += enc.render(m)
    head = len(encode_text("assistant")) + 1
    return toks[head:-1] + [end]


def msg(channel: str, text: str, recipient: str | None = None) -> Message:
    m = Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel)
    if recipient:
        m = m.with_recipient(recipient).with_content_type("<|constrain|>json")
    return m


ANSWER = completion(msg("analysis", "User greets. Reply."), msg("final", "Hello there, friend!"))
CALL = completion(msg("analysis", "Need weather."),
                  msg("commentary", '{"city":"Paris"}', "functions.get_weather"),
                  end=CALL)


def phased(prompt: list[int], o: SamplingOptions) -> list[int]:
    """Answers each constrained phase the way a grammar-bound model would."""
    if o.choice:
        return encode_text(o.choice[-1]) + [RETURN]
    if o.json_schema is not None or o.json_object:
        return encode_text('{"city":"Oslo"}') + [RETURN]
    if END in o.stop_token_ids:
        return encode_text("Thinking it over.") + [END]
    return ANSWER


def service(script: Any = None, **kw: Any) -> tuple[ChatService, FakeEngine]:
    eng = FakeEngine(script or (lambda p, o: ANSWER), **kw)
    return ChatService(eng, today=lambda: "2026-11-27"), eng


def request(**body: Any) -> ChatCompletionRequest:
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return ChatCompletionRequest.model_validate(body)


async def chunks_of(svc: ChatService, req: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    """The stream's dicts, each validated against the chunk model (the wire contract)."""
    return [ChatCompletionChunk.model_validate(c) async for c in svc.stream(svc.prepare(req))]


async def both(svc: ChatService, req: ChatCompletionRequest) -> tuple[Any, list[Any]]:
    full = await svc.complete(svc.prepare(req))
    return full, await chunks_of(svc, req)


def joined(chunks: list[Any], field: str) -> str:
    return "".join(getattr(c.choices[0].delta, field) or "" for c in chunks if c.choices)


async def test_reasoning_and_answer() -> None:
    svc, eng = service()
    full, chunks = await both(svc, request())
    m = full.choices[0].message
    assert m.content == "Hello there, friend!"
    assert m.reasoning == m.reasoning_content == "User greets. Reply."
    assert full.choices[0].finish_reason == "stop"
    assert full.usage.completion_tokens == len(ANSWER)
    assert full.usage.prompt_tokens == len(eng.calls[0][0])
    assert joined(chunks, "content") == m.content
    assert joined(chunks, "reasoning") == m.reasoning
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert eng.calls[0][1].stop_token_ids == stop_token_ids()


async def test_auto_tool_call_streams_and_completes_alike() -> None:
    svc, _ = service(lambda p, o: CALL)
    full, chunks = await both(svc, request(tools=[WEATHER]))
    choice = full.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Paris"}
    assert call.id.startswith("call_")
    assert choice.message.content is None
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_named_tool_choice_reasons_then_constrains_arguments() -> None:
    svc, eng = service(phased)
    full = await svc.complete(svc.prepare(request(
        tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )))
    (call,) = full.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Oslo"}')
    assert full.choices[0].message.reasoning == "Thinking it over."
    assert full.choices[0].finish_reason == "tool_calls"
    analysis, args = eng.calls
    assert analysis[1].stop_token_ids[0] == END and analysis[1].json_schema is None
    assert args[1].json_schema == WEATHER["function"]["parameters"]
    assert args[0][-len(tool_call_prefix_tokens("get_weather", after_message=True)):] \
        == tool_call_prefix_tokens("get_weather", after_message=True)


async def test_required_lets_the_model_pick_among_the_tools() -> None:
    svc, eng = service(phased)
    full = await svc.complete(svc.prepare(request(tools=[WEATHER, TIME], tool_choice="required")))
    (call,) = full.choices[0].message.tool_calls
    assert call.function.name == "get_time"  # phased() picks the last choice
    assert [c[1].choice for c in eng.calls] == [None, ("get_weather", "get_time"), None]
    assert eng.calls[2][1].json_schema == {"type": "object"}
    # usage counts what the client got: the picked header is not counted twice
    assert full.usage.completion_tokens == len(eng.calls[2][0]) + len(
        encode_text('{"city":"Oslo"}')) + 1 - full.usage.prompt_tokens


async def test_json_schema_response_format_constrains_only_the_answer() -> None:
    svc, eng = service(phased)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    full, chunks = await both(svc, request(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert full.choices[0].message.content == '{"city":"Oslo"}'
    assert full.choices[0].message.reasoning == "Thinking it over."
    assert eng.calls[1][1].json_schema == schema and eng.calls[0][1].json_schema is None
    assert joined(chunks, "content") == '{"city":"Oslo"}'


async def test_json_object_response_format() -> None:
    svc, eng = service(phased)
    await svc.complete(svc.prepare(request(response_format={"type": "json_object"})))
    assert eng.calls[1][1].json_object is True


async def test_reasoning_budget_spent_closes_the_analysis_itself() -> None:
    def endless(p: list[int], o: SamplingOptions) -> list[int]:
        if o.json_schema is not None:
            return encode_text('{"city":"Rome"}') + [RETURN]
        return encode_text(" la" * 500)

    svc, eng = service(endless)
    full = await svc.complete(svc.prepare(request(
        max_tokens=60, tools=[WEATHER], tool_choice="required")))
    assert full.choices[0].message.tool_calls[0].function.arguments == '{"city":"Rome"}'
    assert eng.calls[0][1].max_tokens == 30  # half the budget for reasoning
    assert full.usage.completion_tokens <= 60


async def test_stop_strings_cut_the_answer() -> None:
    svc, _ = service()
    full, chunks = await both(svc, request(stop=["friend"]))
    assert full.choices[0].message.content == "Hello there, "
    assert joined(chunks, "content") == "Hello there, "
    assert full.choices[0].finish_reason == "stop"


async def test_n_choices_and_seeds() -> None:
    svc, eng = service()
    full = await svc.complete(svc.prepare(request(n=3, seed=7)))
    assert [c.index for c in full.choices] == [0, 1, 2]
    assert sorted(c[1].seed for c in eng.calls) == [7, 8, 9]
    chunks = await chunks_of(svc, request(n=2))
    finals = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finals) == [0, 1]


async def test_usage_chunk_on_request() -> None:
    svc, _ = service()
    chunks = await chunks_of(svc, request(stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(ANSWER)


async def test_closing_a_stream_aborts_the_engine_request() -> None:
    svc, eng = service(lambda p, o: ANSWER, chunk=1)
    stream = svc.stream(svc.prepare(request()))
    async for chunk in stream:
        if chunk["choices"] and chunk["choices"][0]["delta"].get("reasoning"):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert eng.running == set()


async def test_errors() -> None:
    svc, _ = service(max_model_len=64)
    with pytest.raises(ContextLengthExceeded) as e:
        svc.prepare(request(messages=[{"role": "user", "content": "word " * 200}]))
    assert e.value.param == "messages"
    svc, _ = service(max_model_len=4096)
    with pytest.raises(ContextLengthExceeded) as e2:
        svc.prepare(request(max_completion_tokens=5000))
    assert e2.value.param == "max_completion_tokens"
    with pytest.raises(ModelNotFound):
        svc.prepare(request(model="other"))
    with pytest.raises(InvalidRequest) as e3:
        svc.prepare(request(n=50))
    assert e3.value.param == "n"


async def test_logprobs_cover_exactly_the_answer_tokens() -> None:
    svc, eng = service()
    full, chunks = await both(svc, request(logprobs=True, top_logprobs=2))
    assert eng.calls[0][1].logprobs == 2
    content = full.choices[0].logprobs.content
    assert "".join(e.token for e in content) == "Hello there, friend!"
    assert all(e.logprob == -0.25 and len(e.top_logprobs) == 2 for e in content)
    assert bytes(b for e in content for b in e.bytes) == b"Hello there, friend!"
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    plain = await svc.complete(svc.prepare(request()))
    assert plain.choices[0].logprobs is None and eng.calls[-1][1].logprobs is None


async def test_invalid_schemas_are_rejected_naming_the_field() -> None:
    svc, _ = service(phased)
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}
    with pytest.raises(InvalidRequest) as e:
        svc.prepare(request(tools=[WEATHER, bad], tool_choice="required"))
    assert e.value.param == "tools[1].function.parameters"
    with pytest.raises(InvalidRequest) as e2:
        svc.prepare(request(response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"properties": {"a": {"type": "nope"}}}}}))
    assert e2.value.param == "response_format.json_schema.schema"
    svc.prepare(request(tools=[bad], tool_choice="auto"))  # only constrained schemas compile
