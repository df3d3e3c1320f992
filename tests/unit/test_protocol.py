"""worker.openai.chat.protocol: what real clients send parses; wrong input names the field."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from worker.openai.chat.protocol import (
    ChatCompletionRequest,
    JsonSchemaFormat,
    validate_request,
)
from worker.openai.chat.response import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkDelta,
    CompletionTokensDetails,
    DeltaFunctionCall,
    DeltaToolCall,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
    Usage,
)
from worker.openai.errors import InvalidRequest

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def parse(**body: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": USER, **body})


def error_locs(**body: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate({"messages": USER, **body})
    return [e["loc"] for e in err.value.errors()]


def test_minimal_defaults_and_unknown_fields_ignored() -> None:
    req = parse(foo=1, logit_bias={"1": 2}, service_tier="auto")
    assert req.model is None and req.stream is False and req.n == 1
    assert req.effective_max_tokens() is None and req.effective_max_tokens(99) == 99
    assert not hasattr(req, "foo")


def test_effective_max_tokens_prefers_the_new_name() -> None:
    assert parse(max_tokens=10).effective_max_tokens() == 10
    assert parse(max_tokens=10, max_completion_tokens=20).effective_max_tokens(5) == 20


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"temperature": "1"}, ("temperature",)),
        ({"temperature": 2.5}, ("temperature",)),
        ({"top_p": 1.5}, ("top_p",)),
        ({"max_tokens": True}, ("max_tokens",)),
        ({"max_tokens": 0}, ("max_tokens",)),
        ({"n": "2"}, ("n",)),
        ({"stream": "yes"}, ("stream",)),
        ({"presence_penalty": -3}, ("presence_penalty",)),
        ({"top_logprobs": 21}, ("top_logprobs",)),
        ({"reasoning_effort": "maximal"}, ("reasoning_effort",)),
        ({"stop": 5}, ("stop",)),
        ({"tool_choice": "sometimes"}, ("tool_choice",)),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
         ("tools", 0, "function", "name")),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
         ("tools", 0, "function", "parameters")),
        ({"response_format": {"type": "xml"}}, ("response_format",)),
        ({"response_format": {"type": "json_schema"}},
         ("response_format", "json_schema", "json_schema")),
        ({"messages": []}, ("messages",)),
        ({"messages": [{"role": "robot", "content": "x"}]}, ("messages", 0)),
        ({"messages": [{"role": "tool", "content": "x"}]}, ("messages", 0, "tool", "tool_call_id")),
        ({"messages": [{"role": "user", "content": 5}]}, ("messages", 0, "user", "content")),
    ],
)  # fmt: skip
def test_wrong_input_names_the_field(body: dict[str, Any], loc: tuple[Any, ...]) -> None:
    locs = error_locs(**body)
    assert any(found[: len(loc)] == loc for found in locs), locs


def test_image_parts_are_refused_naming_the_part() -> None:
    image = {"type": "image_url", "image_url": {"url": "http://x"}}
    with pytest.raises(InvalidRequest) as err:
        validate_request(parse(messages=[{"role": "user", "content": [image]}]))
    assert err.value.param == "messages[0].content[0]"


def test_reasoning_effort_values_map_to_the_nearest_level() -> None:
    assert parse(reasoning_effort="minimal").reasoning_effort == "low"
    assert parse(reasoning_effort="none").reasoning_effort == "low"
    assert parse(reasoning_effort="high").reasoning_effort == "high"
    assert parse(reasoning_effort="xhigh").reasoning_effort == "high"
    assert parse(reasoning_effort="max").reasoning_effort == "high"


def test_full_request_shapes() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "openai/gpt-oss-20b",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "developer", "content": [{"type": "text", "text": "d"}]},
                {"role": "user", "content": [{"type": "text", "text": "u"}], "name": "bob"},
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "r"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
            },
            "stop": ["a", "b"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": 1,
            "temperature": 1,
            "metadata": {"k": "v"},
        }
    )
    validate_request(req)
    assert req.messages[3].tool_calls[0].function.arguments == "{}"  # type: ignore[union-attr]
    assert isinstance(req.response_format, JsonSchemaFormat)
    assert req.response_format.json_schema.schema_ == {"type": "object"}
    dumped = req.model_dump(by_alias=True, exclude_none=True)
    assert dumped["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert req.stop_list() == ["a", "b"] and parse(stop="x").stop_list() == ["x"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
         "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL, TOOL]}, "tools"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": [*USER, {"role": "tool", "tool_call_id": "x", "content": "1"}]},
         "messages[1].tool_call_id"),
    ],
)  # fmt: skip
def test_business_rules_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_request(parse(**body))
    assert err.value.param == param


def test_business_rules_accept_valid_requests() -> None:
    validate_request(parse(tools=[TOOL], tool_choice="required", logprobs=True, top_logprobs=2))
    validate_request(parse(tool_choice="none"))


def tool_call_completion() -> ChatCompletion:
    msg = ResponseMessage(
        content=None,
        reasoning="r",
        tool_calls=[
            ResponseToolCall(id="c", function=ResponseFunctionCall(name="f", arguments="{}"))
        ],
    )
    usage = Usage(
        prompt_tokens=3,
        completion_tokens=4,
        total_tokens=7,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=2),
    )
    choice = Choice(index=0, message=msg, finish_reason="tool_calls")
    return ChatCompletion(id="chatcmpl-1", created=1, model="m", choices=[choice], usage=usage)


def test_response_keeps_null_content_and_omits_other_nones() -> None:
    data = json.loads(tool_call_completion().model_dump_json())
    message = data["choices"][0]["message"]
    assert "content" in message and message["content"] is None
    assert "reasoning_content" not in message and "system_fingerprint" not in data
    assert data["choices"][0]["logprobs"] is None
    assert tool_call_completion().model_dump() == data
    assert json.loads(tool_call_completion().model_dump_json(exclude_none=True)) == data


def test_chunk_serialisation() -> None:
    delta = ChunkDelta(
        tool_calls=[
            DeltaToolCall(index=0, id="c", type="function", function=DeltaFunctionCall(name="f"))
        ]
    )
    chunk = ChatCompletionChunk(
        id="x", created=1, model="m", choices=[ChunkChoice(index=0, delta=delta)]
    )
    data = json.loads(chunk.model_dump_json())
    assert data["object"] == "chat.completion.chunk" and "usage" not in data
    call = {"index": 0, "id": "c", "type": "function", "function": {"name": "f"}}
    assert data["choices"][0] == {
        "index": 0,
        "delta": {"tool_calls": [call]},
        "finish_reason": None,
    }


def test_models_and_errors() -> None:
    models = ModelList(data=[ModelCard(id="gpt-oss-20b", created=1, max_model_len=8192)])
    assert models.model_dump()["data"][0] == {
        "id": "gpt-oss-20b",
        "object": "model",
        "created": 1,
        "owned_by": "openai",
        "max_model_len": 8192,
    }
    body = ErrorBody(error=ErrorDetail(message="bad", type="invalid_request_error"))
    assert body.model_dump() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }


def test_real_openai_client_round_trip() -> None:
    openai = pytest.importorskip("openai")
    seen: list[ChatCompletionRequest] = []

    def handler(request: httpx.Request) -> httpx.Response:
        req = ChatCompletionRequest.model_validate_json(request.content)
        validate_request(req)
        seen.append(req)
        return httpx.Response(200, content=tool_call_completion().model_dump_json())

    client = openai.OpenAI(
        api_key="k",
        base_url="http://test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    out = client.chat.completions.create(
        model="gpt-oss",
        messages=[
            {"role": "system", "content": "s"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
        ],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        parallel_tool_calls=True,
        max_completion_tokens=50,
        reasoning_effort="low",
        temperature=0.5,
        seed=3,
    )
    assert seen[0].effective_max_tokens() == 50 and seen[0].reasoning_effort == "low"
    assert out.choices[0].message.content is None
    assert out.choices[0].message.tool_calls[0].function.name == "f"  # type: ignore[index, union-attr]
    assert out.usage.completion_tokens_details.reasoning_tokens == 2  # type: ignore[union-attr]
    chunk = ChatCompletionChunk(
        id="x",
        created=1,
        model="m",
        choices=[ChunkChoice(index=0, delta=ChunkDelta(role="assistant", content="hi"))],
    )
    parsed = openai.types.chat.ChatCompletionChunk.model_validate_json(chunk.model_dump_json())
    assert parsed.choices[0].delta.content == "hi"
