"""The official openai client against `python -m worker serve` on the tiny RANDOM model.

A random model emits gibberish, including stray Harmony tokens: these tests
show the worker never fails on it, that constrained output is valid anyway,
and that errors come back in the OpenAI shape naming the field.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from .conftest import Server

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"utc": {"type": "boolean"}},
            "required": ["utc"],
            "additionalProperties": False,
        },
    },
}
HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def client(random_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=random_server.base_url, api_key="unused", max_retries=0,
                         timeout=120)


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny-random"]


def test_chat_never_fails_on_gibberish(client: openai.OpenAI) -> None:
    for seed in range(4):
        r = client.chat.completions.create(model="tiny-random", messages=HELLO, max_tokens=40,
                                           seed=seed)
        choice = r.choices[0]
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        assert r.usage is not None and 1 <= r.usage.completion_tokens <= 40
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_usage_prompt_tokens_match_the_rendered_prompt(client: openai.OpenAI) -> None:
    from datetime import date

    from worker.openai.chat.convert import render_chat
    from worker.openai.chat.protocol import ChatCompletionRequest

    req = ChatCompletionRequest.model_validate({"messages": HELLO})
    ids = render_chat(req, include_tools=False, today=date.today().isoformat())
    r = client.chat.completions.create(model="tiny-random", messages=HELLO, max_tokens=5)
    assert r.usage is not None and r.usage.prompt_tokens == len(ids)


def test_stream_ends_with_finish_reason_and_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tiny-random", messages=HELLO, max_tokens=30, stream=True,
        stream_options={"include_usage": True}, seed=1,
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length", "tool_calls")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function",
                                                       "function": {"name": "get_weather"}}])
def test_forced_tool_call_arguments_match_the_schema(client: openai.OpenAI, tool_choice) -> None:
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny-random", messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice, max_tokens=120, seed=seed,
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        calls = choice.message.tool_calls
        assert calls and len(calls) == 1
        name = calls[0].function.name
        if isinstance(tool_choice, dict):
            assert name == "get_weather"
        tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[name]
        jsonschema.validate(json.loads(calls[0].function.arguments),
                            tool["function"]["parameters"])


def test_forced_tool_call_streams_the_same_shape(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL], tool_choice="required", max_tokens=120, seed=3, stream=True,
    )
    name, args, finish, ids = "", "", None, set()
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            assert tc.index == 0
            ids.add(tc.id) if tc.id else None
            name += tc.function.name or "" if tc.function else ""
            args += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert name == "get_weather" and len(ids) == 1
    jsonschema.validate(json.loads(args), WEATHER_TOOL["function"]["parameters"])


def test_json_schema_response_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "confidence": {"type": "boolean"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="tiny-random", messages=HELLO, max_tokens=100, seed=5,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)


def test_tool_choice_none_hides_tools(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-random", messages=HELLO, tools=[WEATHER_TOOL],
                                       tool_choice="none", max_tokens=10)
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("effort", ["low", "high"])
def test_reasoning_effort_accepted(client: openai.OpenAI, effort: str) -> None:
    r = client.chat.completions.create(model="tiny-random", messages=HELLO, max_tokens=5,
                                       reasoning_effort=effort)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_n_choices(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-random", messages=HELLO, max_tokens=5, n=3)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]


# -- errors -----------------------------------------------------------------


def test_completions_plain_streamed_echo_and_logprobs(client: openai.OpenAI) -> None:
    """/v1/completions: the raw prompt, no chat template (the shapes in docs/API.md)."""
    prompt = "<|start|>user<|message|>Hello!<|end|><|start|>assistant"
    c = client.completions.create(model="tiny-random", prompt=prompt, max_tokens=8, seed=3)
    assert c.object == "text_completion" and len(c.choices) == 1
    assert c.usage is not None and 1 <= c.usage.completion_tokens <= 8
    assert c.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.completions.create(model="tiny-random", prompt=prompt, max_tokens=8,
                                            seed=3, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)
    e = client.completions.create(model="tiny-random", prompt="Hi there", max_tokens=4,
                                  echo=True)
    assert e.choices[0].text.startswith("Hi there")
    lp = client.completions.create(model="tiny-random", prompt="Hi", max_tokens=4, logprobs=2)
    logprobs = lp.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.top_logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs or []) == \
        len(logprobs.text_offset or [])
    assert all(1 <= len(top) <= 3 for top in logprobs.top_logprobs)


def test_completions_suffix_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-random", prompt="def f(", suffix="return 1",
                                  max_tokens=4)
    assert error_of(info.value)["param"] == "suffix"


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"}
    return body["error"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-5", messages=HELLO)
    err = error_of(e.value)
    assert err["param"] == "model" and err["code"] == "model_not_found"


def test_prompt_longer_than_context_is_400_naming_messages(client: openai.OpenAI) -> None:
    long = "weather " * 3000
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-random",
                                       messages=[{"role": "user", "content": long}])
    err = error_of(e.value)
    assert err["param"] == "messages" and err["code"] == "context_length_exceeded"
    assert "2048" in err["message"]


def test_max_tokens_beyond_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-random", messages=HELLO, max_tokens=100_000)
    assert error_of(e.value)["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
        ({"messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"messages": HELLO, "temperature": 7}, "temperature"),
        ({"messages": HELLO, "top_p": 1.5}, "top_p"),
        ({"messages": HELLO, "tool_choice": {"type": "function",
                                             "function": {"name": "nope"}}}, "tool_choice"),
        ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]}, "messages"),
    ],
)
def test_bad_input_is_400_naming_the_field(random_server: Server, body: dict, param: str) -> None:
    r = httpx.post(f"{random_server.base_url}/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] is not None and err["param"].startswith(param), err


def test_malformed_json_is_400(random_server: Server) -> None:
    r = httpx.post(f"{random_server.base_url}/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]


def test_unknown_route_is_openai_shaped_404(random_server: Server) -> None:
    r = httpx.get(f"{random_server.base_url}/nothing-here", timeout=30)
    assert r.status_code == 404 and "error" in r.json()


def test_health_and_ready(random_server: Server) -> None:
    assert httpx.get(f"{random_server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{random_server.url}/ready").json()
    assert ready["status"] == "ready" and "engine" in ready["timeline"]
