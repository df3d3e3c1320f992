"""What client libraries send, on a scripted fake engine: tools with a response format,
strict tools, refused and mapped fields, logit_bias, stops, finish reasons, chunk shape."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import pytest
from pydantic import BaseModel

from tests.unit.fake_engine import FakeEngine
from tests.unit.test_service import CALL, WEATHER, chunks_of, completion, msg, request
from worker.engine.api import GenerationDelta, SamplingOptions
from worker.harmony.choice import ChoicePlan, ChoiceResult
from worker.harmony.generation import run_choice
from worker.harmony.tokens import CALL as CALL_TOKEN
from worker.harmony.tokens import MESSAGE, RETURN, VOCAB_SIZE, encode_text
from worker.openai.chat import service as service_module
from worker.openai.chat.service import ChatService
from worker.openai.errors import InvalidRequest, InvalidResponse, to_openai_error

STRICT_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "strict": True, "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Oslo", "Rome"]}},
        "required": ["city"], "additionalProperties": False}}}
VERDICT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
    "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}
GRAMMAR_BODY = '{"city":"Oslo"}'  # what the fake model writes under any grammar


class Model:
    """A fake model that writes `full` after the prompt, continuing from wherever the context
    stops (the worker restarts it after each header), and GRAMMAR_BODY under a grammar."""

    def __init__(self, full: list[int]):
        self.full = full
        self.prompt_len: int | None = None

    def __call__(self, prompt: list[int], o: SamplingOptions) -> list[int]:
        if self.prompt_len is None:
            self.prompt_len = len(prompt)
        if o.json_schema is not None or o.json_object:
            return [*encode_text(GRAMMAR_BODY), RETURN]
        done = prompt[self.prompt_len:]
        assert self.full[:len(done)] == done, "the worker changed what the model wrote"
        return self.full[len(done):]


def guided(full: list[int]) -> tuple[ChatService, FakeEngine]:
    eng = FakeEngine(Model(full))
    return ChatService(eng, today=lambda: "2026-11-27"), eng


WEATHER_CALL_THEN_STOP = CALL  # analysis, then commentary to=functions.get_weather {"city":"Paris"}
FINAL_TEXT = completion(msg("analysis", "Think."), msg("final", "not json at all"))


# ---------------------------------------------------- defect 1: tools + response_format


async def test_tools_with_a_response_format_leave_the_model_free_to_call() -> None:
    svc, eng = guided(WEATHER_CALL_THEN_STOP)
    req = request(tools=[WEATHER], response_format=VERDICT)
    r = await svc.complete(svc.prepare(req))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # not strict: free
    assert all(o.json_schema is None and not o.json_object for _, o in eng.calls)


async def test_the_answer_schema_applies_once_the_model_opens_the_final_channel() -> None:
    svc, eng = guided(FINAL_TEXT)
    req = request(tools=[WEATHER], response_format=VERDICT)
    full = await svc.complete(svc.prepare(req))
    assert full.choices[0].message.content == GRAMMAR_BODY
    assert full.choices[0].message.reasoning == "Think."  # type: ignore[attr-defined]
    prompt, last = eng.calls[-1]
    assert last.json_schema == VERDICT["json_schema"]["schema"]
    assert prompt[-1] == MESSAGE  # the model's own `<|channel|>final<|message|>` header
    assert all(o.json_schema is None for _, o in eng.calls[:-1])
    chunks = await chunks_of(*guided(FINAL_TEXT)[:1], req)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == GRAMMAR_BODY


async def test_json_object_with_tools_too() -> None:
    svc, eng = guided(FINAL_TEXT)
    r = await svc.complete(svc.prepare(request(tools=[WEATHER],
                                               response_format={"type": "json_object"})))
    assert r.choices[0].message.content == GRAMMAR_BODY
    assert eng.calls[-1][1].json_object


# ---------------------------------------------------- defect 2: strict tools in auto mode


async def test_a_strict_tool_call_gets_schema_constrained_arguments() -> None:
    svc, eng = guided(WEATHER_CALL_THEN_STOP)
    r = await svc.complete(svc.prepare(request(tools=[STRICT_WEATHER])))
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}  # the grammar's, not Paris
    assert r.choices[0].finish_reason == "tool_calls"
    assert eng.calls[-1][1].json_schema == STRICT_WEATHER["function"]["parameters"]
    assert r.usage is not None
    assert r.usage.completion_tokens == len(WEATHER_CALL_THEN_STOP) - len(
        encode_text('{"city":"Paris"}')) + len(encode_text(GRAMMAR_BODY))


async def test_strict_guided_stream_equals_the_completion() -> None:
    svc, _ = guided(WEATHER_CALL_THEN_STOP)
    req = request(tools=[STRICT_WEATHER], stream=True)
    chunks = await chunks_of(svc, req)
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in c.choices[0].delta.tool_calls or [] if tc.function)
    assert json.loads(args) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_a_tool_without_strict_stays_one_free_engine_call() -> None:
    svc, eng = guided(WEATHER_CALL_THEN_STOP)
    r = await svc.complete(svc.prepare(request(tools=[WEATHER])))
    assert len(eng.calls) == 1 and MESSAGE not in eng.calls[0][1].stop_token_ids
    assert json.loads((r.choices[0].message.tool_calls or [])[0].function.arguments) == {
        "city": "Paris"}


async def test_guided_plan_modes() -> None:
    from worker.harmony.choice import JsonAnswer
    from worker.harmony.conversation import FunctionTool

    opts = SamplingOptions(max_tokens=10)
    free, strict = FunctionTool("f"), FunctionTool("g", strict=True)
    assert ChoicePlan((1,), opts).mode == "free"
    assert ChoicePlan((1,), opts, tools=(free,)).mode == "free"
    assert ChoicePlan((1,), opts, tools=(strict,)).mode == "guided"
    assert ChoicePlan((1,), opts, tools=(free,), answer=JsonAnswer()).mode == "guided"
    assert ChoicePlan((1,), opts, answer=JsonAnswer()).mode == "forced_answer"
    assert ChoicePlan((1,), opts, tools=(free,), must_call=("f",)).mode == "forced_call"


# ---------------------------------------------------- defect 3: clear 400s


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "file-1"}},
])
async def test_media_parts_are_refused_naming_the_part(part: dict[str, Any]) -> None:
    svc, _ = guided(FINAL_TEXT)
    req = request(messages=[{"role": "user", "content": [{"type": "text", "text": "Look"}, part]}])
    with pytest.raises(InvalidRequest) as e:
        svc.prepare(req)
    assert e.value.param == "messages[0].content[1]" and "text-only" in e.value.message


async def test_allowed_tools_restricts_the_offered_tools() -> None:
    time_tool = {"type": "function", "function": {"name": "get_time",
                                                  "parameters": {"type": "object"}}}
    svc, _ = guided(FINAL_TEXT)
    choice = {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]}}
    p = svc.prepare(request(tools=[WEATHER, time_tool], tool_choice=choice))
    assert [t.name for t in p.plans[0].tools] == ["get_time"]
    assert p.plans[0].mode == "free"
    required = {**choice, "allowed_tools": {**choice["allowed_tools"], "mode": "required"}}
    p = svc.prepare(request(tools=[WEATHER, time_tool], tool_choice=required))
    assert p.plans[0].must_call == ("get_time",)
    unknown = {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]}}
    with pytest.raises(InvalidRequest) as e:
        svc.prepare(request(tools=[WEATHER], tool_choice=unknown))
    assert e.value.param == "tool_choice.allowed_tools.tools[0]"


@pytest.mark.parametrize(("body", "param"), [
    ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"messages": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
                   {"role": "function", "name": "f", "content": "1"}]},
     "messages[1].function_call"),
    ({"messages": [{"role": "function", "name": "f", "content": "1"}]}, "messages[0].role"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
])
async def test_legacy_and_non_text_fields_are_refused(body: dict[str, Any], param: str) -> None:
    svc, _ = guided(FINAL_TEXT)
    with pytest.raises(InvalidRequest) as e:
        svc.prepare(request(**body))
    assert e.value.param == param


# ---------------------------------------------------- defect 4: reasoning_effort values


@pytest.mark.parametrize(("sent", "level"), [
    ("none", "low"), ("minimal", "low"), ("low", "low"), ("medium", "medium"),
    ("high", "high"), ("xhigh", "high"), ("max", "high")])
async def test_every_current_reasoning_effort_maps_to_a_level(sent: str, level: str) -> None:
    from worker.harmony.tokens import decode_text

    svc, _ = guided(FINAL_TEXT)
    p = svc.prepare(request(reasoning_effort=sent))
    assert f"Reasoning: {level}" in decode_text(list(p.plans[0].prompt))


# ---------------------------------------------------- defect 5: stop strings


async def test_a_stop_hit_keeps_the_reasoning_token_count() -> None:
    svc, _ = guided(FINAL_TEXT)
    r = await svc.complete(svc.prepare(request(stop=["json"])))
    assert r.choices[0].message.content == "not "
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens > 0


async def test_closing_a_choice_early_keeps_counts_and_the_malformed_flag() -> None:
    garbled = [*encode_text("no header at all"), MESSAGE, *encode_text("x" * 30), RETURN]
    eng = FakeEngine(lambda p, o: garbled, chunk=2)
    result = ChoiceResult()
    plan = ChoicePlan(prompt=(1, 2), options=SamplingOptions(max_tokens=100))
    async with aclosing(run_choice(eng, "r", plan, result)) as gen:
        async for _ in gen:
            break
    assert result.malformed and result.completion_tokens > 0


async def test_held_back_text_is_released_before_a_tool_call() -> None:
    preamble_then_call = completion(
        msg("commentary", "Let me check"),
        msg("commentary", '{"city":"Paris"}', "functions.get_weather"), end=CALL_TOKEN)
    svc, _ = guided(preamble_then_call)
    chunks = await chunks_of(svc, request(tools=[WEATHER], stop=["zzz"], stream=True))
    kinds = [("content" if c.choices[0].delta.content else
              "call" if c.choices[0].delta.tool_calls else "other") for c in chunks if c.choices]
    assert "call" in kinds
    assert "content" not in kinds[kinds.index("call"):]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Let me check"


# ---------------------------------------------------- defect 6: logit_bias


async def test_logit_bias_and_repetition_penalty_reach_the_engine() -> None:
    svc, eng = guided(FINAL_TEXT)
    await svc.complete(svc.prepare(request(logit_bias={"200002": -5, "13": 2.5},
                                           repetition_penalty=1.3)))
    assert dict(eng.calls[0][1].logit_bias) == {200002: -5.0, 13: 2.5}
    assert eng.calls[0][1].repetition_penalty == 1.3


@pytest.mark.parametrize("bias", [
    {"abc": 1}, {"-1": 1}, {str(VOCAB_SIZE): 1}, {"²": 1}, {"13": 100.5}, {"13": -101}])
async def test_bad_logit_bias_is_refused_by_name(bias: dict[str, float]) -> None:
    svc, _ = guided(FINAL_TEXT)
    with pytest.raises(InvalidRequest) as e:
        svc.prepare(request(logit_bias=bias))
    assert e.value.param == "logit_bias"


# ---------------------------------------------------- defect 7: finish_reason, our own errors


class AbortingEngine(FakeEngine):
    """Ends every request with the engine's `abort` after a few tokens."""

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncGenerator[GenerationDelta, None]:
        self.calls.append((list(prompt_token_ids), options))
        yield GenerationDelta(token_ids=tuple(FINAL_TEXT[:8]),
                              num_prompt_tokens=len(prompt_token_ids), finished=True,
                              finish_reason="abort")


async def test_an_engine_abort_is_a_valid_openai_finish_reason() -> None:
    svc = ChatService(AbortingEngine(lambda p, o: []), today=lambda: "2026-11-27")
    r = await svc.complete(svc.prepare(request()))
    assert r.choices[0].finish_reason == "length"
    chunks = await chunks_of(svc, request(stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_an_invalid_response_of_ours_is_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    class Strict(BaseModel):
        impossible: int

    class Broken:
        @staticmethod
        def model_validate(data: Any) -> Any:
            return Strict.model_validate(data)

    monkeypatch.setattr(service_module, "ChatCompletion", Broken)
    svc, _ = guided(FINAL_TEXT)
    with pytest.raises(InvalidResponse) as e:
        await svc.complete(svc.prepare(request()))
    status, body = to_openai_error(e.value)
    assert status == 500 and body["error"]["type"] == "server_error"


# ---------------------------------------------------- defect 8: stream chunk shape


async def test_chunks_carry_null_finish_reason_logprobs_and_usage() -> None:
    svc, _ = guided(FINAL_TEXT)
    req = request(stream=True, stream_options={"include_usage": True})
    raw = [c async for c in svc.stream(svc.prepare(req))]
    with_choices = [c for c in raw if c["choices"]]
    for c in with_choices[:-1]:
        assert c["choices"][0]["finish_reason"] is None and c["choices"][0]["logprobs"] is None
    assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" in c for c in raw)
    assert all(c["usage"] is None for c in raw[:-1])
    assert raw[-1]["choices"] == [] and raw[-1]["usage"]["completion_tokens"] > 0
    no_usage = [c async for c in svc.stream(svc.prepare(request(stream=True)))]
    assert all("usage" not in c for c in no_usage)


# ---------------------------------------------------- defect 9: the parameter table


def test_the_readme_parameter_table_names_every_request_field() -> None:
    from pathlib import Path

    from worker.openai.chat.protocol import ChatCompletionRequest

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Parameters", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in ChatCompletionRequest.model_fields if f"`{name}`" not in table]
    assert missing == []
    assert "any other field | ignored" in table and "unlike OpenAI" in table
