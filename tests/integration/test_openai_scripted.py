"""The official openai client against `python -m worker serve` on the SCRIPTED tiny model.

Its hand-set weights make greedy decoding emit valid Harmony chosen from the
prompt, so reasoning, answers and tool calls are checked end to end, exactly,
through the real vLLM CPU engine, the Harmony layer and the HTTP server.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from worker.tiny import scripted

from .conftest import Server

KEY = "test-key-123"  # the scripted_server fixture sets API_KEY to this
MODEL = "tiny-scripted"
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = {"temperature": 0.0, "max_tokens": 100}


@pytest.fixture(scope="module")
def client(scripted_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=scripted_server.base_url, api_key=KEY, max_retries=0,
                         timeout=120)


def test_reasoning_then_answer(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi there"}], **GREEDY)
    msg = r.choices[0].message
    assert msg.content == scripted.ANSWER
    assert msg.reasoning == scripted.REASONING  # type: ignore[attr-defined]
    assert msg.reasoning_content == scripted.REASONING  # type: ignore[attr-defined]
    assert msg.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    expected = scripted.completion_tokens("answer")
    assert r.usage is not None and r.usage.completion_tokens == len(expected)
    assert r.usage.completion_tokens_details is not None
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens < r.usage.completion_tokens


def test_auto_tool_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS, **GREEDY)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.reasoning == scripted.TOOL_REASONING  # type: ignore[attr-defined]
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(scripted.TOOL_ARGS)


def test_streaming_equals_non_streaming(client: openai.OpenAI) -> None:
    for messages, tools in (([{"role": "user", "content": "Hi"}], None), (ASK_WEATHER, TOOLS)):
        extra = {"tools": tools} if tools else {}
        full = client.chat.completions.create(model=MODEL, messages=messages, **GREEDY, **extra)
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, **GREEDY, **extra))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or ""
                            for c in chunks if c.choices)
        calls: dict[int, dict[str, str]] = {}
        for c in chunks:
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                entry["name"] += (tc.function.name or "") if tc.function else ""
                entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
        m = full.choices[0].message
        assert content == (m.content or "")
        assert reasoning == m.reasoning  # type: ignore[attr-defined]
        assert [calls[i] for i in sorted(calls)] == [
            {"name": t.function.name, "arguments": t.function.arguments}
            for t in (m.tool_calls or [])
        ]
        assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
        # coalesced: fewer chunks than generated tokens
        assert full.usage is not None and len(chunks) <= full.usage.completion_tokens + 2


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS,
                                           **GREEDY)
    call = (first.choices[0].message.tool_calls or [])[0]
    history = [
        *ASK_WEATHER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "temp_c": 21}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, **GREEDY)
    assert second.choices[0].message.content == scripted.ANSWER_AFTER_TOOL
    assert second.choices[0].finish_reason == "stop"
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_named_tool_choice_forces_the_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi there"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, **GREEDY)
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args.get("location"), str)
    assert r.choices[0].finish_reason in ("tool_calls", "length")


def test_required_tool_choice(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS,
                                       tool_choice="required", **GREEDY)
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["location"]


def test_api_key_required(scripted_server: Server) -> None:
    url = f"{scripted_server.base_url}/chat/completions"
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json=body, headers=headers, timeout=30)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "authentication_error"
        assert KEY not in r.text
    bad = openai.OpenAI(base_url=scripted_server.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(f"{scripted_server.url}/health").status_code == 200  # no auth on probes
    assert KEY not in scripted_server.log_text()


def test_logprobs_of_the_answer(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi there"}], logprobs=True,
        top_logprobs=3, **GREEDY)
    content = r.choices[0].logprobs.content if r.choices[0].logprobs else None
    assert content and "".join(e.token for e in content) == scripted.ANSWER
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token  # greedy: the sampled token ranks first
