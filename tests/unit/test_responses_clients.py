"""The openai client and the Agents SDK against the HTTP app's /v1/responses (in-process ASGI,
fake engine): the clients' own parsers accept our objects and events. The same over real
HTTP on the real engine is tests/integration/test_responses.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.responses_cases import BAD
from tests.unit.fake_engine import FakeEngine
from worker.harmony.tokens import RETURN, encoding
from worker.openai.chat.service import ChatService
from worker.platforms.http_app import AppState, create_app

ANSWER, AFTER_TOOL, ARGS = "Hello!", "It is sunny.", '{"city":"Paris"}'
TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False}, "strict": True}


def _script(prompt: list[int], options: Any) -> list[int]:
    """Writes its branch's output after the prompt, continuing from wherever the worker's
    context stops (it restarts generation after the headers it writes), and ARGS under a
    grammar (a strict tool's arguments)."""
    enc = encoding()
    if options.json_schema is not None or options.json_object:
        return [*enc.encode(ARGS), RETURN]
    text = enc.decode(prompt)
    if "<|start|>functions.get_weather" in text:
        out = f"<|channel|>final<|message|>{AFTER_TOOL}<|return|>"
    elif "get_weather" in text:
        out = ("<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant"
               f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
               f"{ARGS}<|call|>")
    else:
        out = f"<|channel|>analysis<|message|>Greet.<|end|><|start|>assistant<|channel|>final" \
              f"<|message|>{ANSWER}<|return|>"
    full = list(enc.encode(out, allowed_special="all"))
    done = next(k for k in range(len(full), -1, -1) if k == 0 or prompt[-k:] == full[:k])
    return full[done:]


PATHS: list[str] = []


async def _record(request: httpx.Request) -> None:
    PATHS.append(request.url.path)


@pytest.fixture
def client() -> openai.AsyncOpenAI:
    service = ChatService(FakeEngine(_script, names=("gpt-oss-test",)), today=lambda: "2026-01-01")
    app = create_app(AppState(service=service))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                             event_hooks={"request": [_record]})
    return openai.AsyncOpenAI(base_url="http://t/v1", api_key="x", http_client=http,
                              max_retries=0)


async def test_create_and_stream(client: openai.AsyncOpenAI) -> None:
    r = await client.responses.create(model="gpt-oss-test", input="Hi")
    assert r.output_text == ANSWER and r.status == "completed"
    async with client.responses.stream(model="gpt-oss-test", input="Weather?",
                                       tools=[TOOL]) as stream:  # type: ignore[list-item]
        events = [e async for e in stream]
        final = await stream.get_final_response()
    call = final.output[-1]
    assert call.type == "function_call" and call.arguments == ARGS
    assert call.parsed_arguments == {"city": "Paris"}  # strict tools: the client parses them
    assert [e.type for e in events][-1] == "response.completed"


async def test_agents_sdk_default_model(client: openai.AsyncOpenAI) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIProvider,
        RunConfig,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    PATHS.clear()
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        seen.append(city)
        return "sunny"

    config = RunConfig(model_provider=OpenAIProvider(openai_client=client),
                       model_settings=ModelSettings(temperature=0.0))
    plain = await Runner.run(Agent(name="a", model="gpt-oss-test"), "Hi", run_config=config)
    assert plain.final_output == ANSWER
    tooled = await Runner.run(Agent(name="b", model="gpt-oss-test", tools=[get_weather]),
                              "Weather?", run_config=config)
    assert seen == [json.loads(ARGS)["city"]]
    assert tooled.final_output == AFTER_TOOL
    streamed = Runner.run_streamed(Agent(name="c", model="gpt-oss-test"), "Hi",
                                   run_config=config)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == ANSWER
    assert PATHS and set(PATHS) == {"/v1/responses"}  # the SDK's default model: Responses


async def test_agents_sdk_output_type_with_a_tool(client: openai.AsyncOpenAI) -> None:
    """output_type is text.format json_schema: the model still calls the tool first, and
    only the final answer is constrained to the schema."""
    from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        calls.append(city)
        return "sunny"

    config = RunConfig(model_provider=OpenAIProvider(openai_client=client),
                       tracing_disabled=True)
    agent = Agent(name="typed", model="gpt-oss-test", tools=[get_weather], output_type=City)
    result = await Runner.run(agent, "Weather?", run_config=config)
    assert calls == ["Paris"]
    assert result.final_output == City(city="Paris")


@pytest.mark.parametrize(("name", "body", "param", "status"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_names_the_field(client: openai.AsyncOpenAI, name: str,
                                         body: dict[str, Any], param: str, status: int) -> None:
    r = await client._client.post("http://t/v1/responses", json={"model": "gpt-oss-test", **body})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error" and err["message"]


async def test_bench_load_in_responses_mode(client: openai.AsyncOpenAI) -> None:
    from worker.bench.cli import main
    from worker.bench.loadgen import LoadSpec, run_load

    spec = LoadSpec(model="gpt-oss-test", concurrency=2, requests=3, max_tokens=64, seed=None,
                    api="responses")
    records, _ = await run_load(client, spec)
    assert [r.error for r in records] == [None] * 3
    assert all(r.usage_reported and r.completion_tokens > 0 and r.first_text for r in records)
    assert main(["--url", "http://127.0.0.1:9", "--api", "responses", "--seed", "1"], {}) == 2
