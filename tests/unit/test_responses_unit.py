"""The Responses surface without an engine: input -> conversation, events -> items, and the
service on the fake engine (streamed events add up to the non-streamed response)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.unit.fake_engine import FakeEngine
from worker.harmony.parser import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from worker.harmony.tokens import encode_text, encoding
from worker.openai.errors import InvalidRequest
from worker.openai.responses.convert import to_conversation
from worker.openai.responses.output import OutputBuilder
from worker.openai.responses.protocol import ResponsesRequest
from worker.openai.responses.service import ResponsesService
from worker.openai.responses.validate import function_tools

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
FN = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}


def _req(**body: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "fake-gpt-oss", **body})


def test_items_become_turns() -> None:
    req = _req(instructions="Be brief.", tools=[FN], input=[
        {"role": "system", "content": "System rule."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "thought A"},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "id": "fc_1", "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "reasoning", "id": "rs_2", "summary": [],
         "content": [{"type": "reasoning_text", "text": "thought B"}]},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "developer", "content": "Late rule."},
        {"role": "user", "content": "Thanks"},
    ])
    conv = to_conversation(req, function_tools(req), include_tools=True)
    assert conv.instructions == "Be brief.\n\nSystem rule.\n\nLate rule."
    assert [t.name for t in conv.tools] == ["get_weather"]
    roles = [(t.role, t.text, t.reasoning, [c.name for c in t.tool_calls], t.tool_name)
             for t in conv.turns]
    assert roles == [
        ("user", "Hi", None, [], None),
        ("assistant", "Let me look.", "thought A", ["get_weather"], None),
        ("tool", "sunny", None, [], "get_weather"),
        ("assistant", "It is sunny.", "thought B", [], None),
        ("user", "Thanks", None, [], None),
    ]


def test_string_input_is_one_user_turn_and_hosted_tools_are_not_offered() -> None:
    req = _req(input="Hello", tools=[FN, {"type": "web_search"},
                                     {"type": "namespace", "name": "n", "tools": []}],
               reasoning={"effort": "xhigh", "summary": "auto"})
    tools = function_tools(req)
    conv = to_conversation(req, tools, include_tools=True)
    assert [t.role for t in conv.turns] == ["user"] and conv.turns[0].text == "Hello"
    assert [t.name for t in conv.tools] == ["get_weather"]
    assert conv.effort == "high"
    assert to_conversation(_req(input="x", reasoning={"effort": "minimal"}), [],
                           include_tools=False).effort == "low"


def test_unknown_call_id_names_the_item() -> None:
    req = _req(input=[{"role": "user", "content": "Hi"},
                      {"type": "function_call_output", "call_id": "call_9", "output": "x"}])
    with pytest.raises(InvalidRequest) as err:
        to_conversation(req, [], include_tools=False)
    assert err.value.param == "input[1].call_id"


def _events() -> list[Any]:
    return [ReasoningDelta("think "), ReasoningDelta("more"), ContentDelta("Let me "),
            ContentDelta("check."), ToolCallStart(0, "get_weather"),
            ToolCallArgsDelta(0, '{"city":'), ToolCallArgsDelta(0, '"Paris"}')]


def test_builder_items_and_events_agree() -> None:
    b = OutputBuilder(encrypted_reasoning=True)
    stream = b.feed(_events()) + b.finish()
    for i, event in enumerate(stream):
        STREAM_EVENT.validate_python({**event, "sequence_number": i})
    reasoning, message, call = b.items
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "think more"}]
    assert reasoning["encrypted_content"] == "think more"
    assert message["content"][0]["text"] == "Let me check."
    assert call["name"] == "get_weather" and call["arguments"] == '{"city":"Paris"}'
    assert all(item["status"] == "completed" for item in b.items)
    done = [e["item"] for e in stream if e["type"] == "response.output_item.done"]
    assert done == b.items
    added = [e["output_index"] for e in stream if e["type"] == "response.output_item.added"]
    assert added == [0, 1, 2]


def test_builder_marks_a_cut_item_incomplete() -> None:
    b = OutputBuilder(encrypted_reasoning=False)
    b.feed([ReasoningDelta("think"), ContentDelta("Hel")])
    b.finish(incomplete=True)
    assert [i["status"] for i in b.items] == ["completed", "incomplete"]
    assert "encrypted_content" not in b.items[0]


def _script(prompt: list[int], options: Any) -> list[int]:
    text = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final" \
           "<|message|>Hello!<|return|>"
    return list(encoding().encode(text, allowed_special="all"))


def test_service_stream_adds_up_to_the_response() -> None:
    service = ResponsesService(FakeEngine(_script), today=lambda: "2026-01-01")

    async def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        req = _req(input="Hi", include=["reasoning.encrypted_content"])
        full = await service.complete(service.prepare(req))
        events = [e async for e in service.stream(service.prepare(req))]
        return full, events

    full, events = asyncio.run(run())
    Response.model_validate(full)
    for event in events:
        STREAM_EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    strip = lambda items: [{k: v for k, v in i.items() if k != "id"} for i in items]  # noqa: E731
    assert strip(final["output"]) == strip(full["output"])
    assert full["output"][1]["content"][0]["text"] == "Hello!"
    assert full["output"][0]["encrypted_content"] == "Think."
    assert full["usage"]["output_tokens"] == len(_script([], None))
    assert json.dumps(full)  # plain JSON values only
    assert encode_text("x")


# ------------------------------------------------------------------ RunPod route


def _jobs(job_input: Any) -> list[Any]:
    from worker.openai.chat.service import ChatService
    from worker.platforms.runpod_jobs import run_job

    chat = ChatService(FakeEngine(_script), today=lambda: "2026-01-01")

    async def run() -> list[Any]:
        return [o async for o in run_job(chat, job_input, max_batch_lines=4)]

    return asyncio.run(run())


def test_runpod_route_non_streamed_is_one_response_object() -> None:
    [out] = _jobs({"openai_route": "/v1/responses", "openai_input": {"input": "Hi"}})
    Response.model_validate(out)
    assert out["output"][-1]["content"][0]["text"] == "Hello!"


def test_runpod_route_streamed_is_named_sse_text() -> None:
    texts = _jobs({"openai_route": "/v1/responses/",
                   "openai_input": {"input": "Hi", "stream": True}})
    assert all(isinstance(t, str) for t in texts)
    blocks = [b for b in "".join(texts).split("\n\n") if b]
    events = []
    for block in blocks:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        event = json.loads(data[6:])
        assert event["type"] == name[7:]
        events.append(STREAM_EVENT.validate_python(event))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "[DONE]" not in "".join(texts)


def test_runpod_route_bad_input_fails_the_job_naming_the_field() -> None:
    [out] = _jobs({"openai_route": "/v1/responses",
                   "openai_input": {"input": "Hi", "previous_response_id": "resp_1"}})
    err = json.loads(out["error"])
    assert err["param"] == "previous_response_id" and err["type"] == "invalid_request_error"
    [out] = _jobs({"openai_route": "/v1/responses", "openai_input": "Hi"})
    assert json.loads(out["error"])["param"] == "openai_input"


# ------------------------------------------------------------------ bounds (issue 19's)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"role": "user", "content": "\ud800"}]}, "input[0].content"),
    ({"input": "hi", "temperature": float("nan")}, "temperature"),
    ({"input": "hi", "metadata": {"k": "\udfff"}}, "metadata.k"),
])
def test_responses_bodies_get_the_shared_bounds(body: dict[str, Any], param: str) -> None:
    from worker.openai.responses.validate import parse_request

    with pytest.raises(InvalidRequest) as err:
        parse_request(body)
    assert err.value.param == param


def test_responses_admit_compiles_the_text_format_schema() -> None:
    """`admit` checks every constrained schema through the engine, named by its field."""
    service = ResponsesService(FakeEngine(_script), today=lambda: "2026-01-01")
    req = _req(input="Hi", text={"format": {"type": "json_schema", "name": "x",
                                            "schema": {"type": "object"}}})
    prepared = service.prepare(req)
    assert prepared.schemas == (("text.format.schema", {"type": "object"}),)
    assert asyncio.run(service.admit(req)).schemas == prepared.schemas
