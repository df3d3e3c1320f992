"""Client libraries built on the openai package, against one worker on the SCRIPTED tiny model.

LangChain (`langchain-openai`), the OpenAI Agents SDK (`openai-agents`), LiteLLM and
pydantic-ai drive `python -m worker serve` over real HTTP, exactly as an application
would point them at the worker. One server serves every test of this module.

Offline (nothing may reach the network at test time):
* LiteLLM fetches its model cost map at import unless `LITELLM_LOCAL_MODEL_COST_MAP=True`
  (set below, before the first import); its tokenizers are bundled.
* The Agents SDK exports traces to OpenAI: `set_tracing_disabled(True)` and
  `OPENAI_AGENTS_DISABLE_TRACING=1` turn that off.
* LangChain traces to LangSmith only when `LANGSMITH_TRACING` is true (forced off here).
* pydantic-ai sends nothing but the requests (logfire is not installed).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from worker.tiny import scripted

from .conftest import Server

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGCHAIN_TRACING_V2"] = "false"

KEY = "test-key-123"  # the scripted_server fixture sets API_KEY to this
MODEL = "tiny-scripted"
ASK_WEATHER = "What is the weather in Paris?"
PARIS = json.loads(scripted.TOOL_ARGS)


class Verdict(BaseModel):
    """A typed answer whose JSON grammar is finite: the tiny model cannot wander."""

    sunny: bool
    mood: Literal["good", "bad"]


@pytest.fixture(scope="module")
def server(scripted_server: Server) -> Server:
    return scripted_server


# ------------------------------------------------------------------ LangChain


@pytest.fixture(scope="module")
def chat_model(server: Server) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=server.base_url, api_key=KEY,  # type: ignore[arg-type]
                      temperature=0, max_tokens=120, max_retries=0, timeout=120)


def get_weather(location: str) -> str:
    """Current weather in a city."""
    return f"sunny in {location}"


def test_langchain_invoke(chat_model: Any) -> None:
    reply = chat_model.invoke("Hi there")
    assert reply.content == scripted.ANSWER
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata["output_tokens"] > 0


def test_langchain_bind_tools_parses_the_call(chat_model: Any) -> None:
    reply = chat_model.bind_tools([get_weather]).invoke(ASK_WEATHER)
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and call["args"] == PARIS
    assert call["id"].startswith("call_")


def test_langchain_streamed_tool_call_chunks_merge_into_one_call(chat_model: Any) -> None:
    chunks = list(chat_model.bind_tools([get_weather]).stream(ASK_WEATHER))
    assert len(chunks) > 1
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    (call,) = merged.tool_calls
    assert call["name"] == "get_weather" and call["args"] == PARIS
    assert merged.response_metadata.get("finish_reason") == "tool_calls"


def test_langchain_structured_output_json_schema(chat_model: Any) -> None:
    verdict = chat_model.with_structured_output(Verdict, method="json_schema").invoke("Hi there")
    assert isinstance(verdict, Verdict)


def test_langchain_structured_output_with_tools_still_calls_the_tool(chat_model: Any) -> None:
    """Defect 1: with a response format and tools, the model must stay free to call a tool."""
    from langchain_core.messages import HumanMessage, ToolMessage

    structured = chat_model.with_structured_output(
        Verdict, method="json_schema", tools=[get_weather], strict=True, include_raw=True)
    first = structured.invoke([HumanMessage(ASK_WEATHER)])
    (call,) = first["raw"].tool_calls
    assert call["name"] == "get_weather" and call["args"] == PARIS
    history = [HumanMessage(ASK_WEATHER), first["raw"],
               ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])]
    second = structured.invoke(history)
    assert not second["raw"].tool_calls
    assert isinstance(second["parsed"], Verdict), second["parsing_error"]


# ------------------------------------------------------------------ Agents SDK


def _agent(server: Server, **kw: Any) -> Any:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)
    model = OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
    return Agent(name="tiny", model=model,
                 model_settings=ModelSettings(temperature=0, max_tokens=120), **kw)


def _run(agent: Any, text: str) -> Any:
    from agents import Runner

    return asyncio.run(Runner.run(agent, text, max_turns=4))


def test_agents_run_answers(server: Server) -> None:
    result = _run(_agent(server, instructions="Be brief."), "Hi there")
    assert result.final_output == scripted.ANSWER


def _weather_tool(calls: list[dict[str, Any]], *, strict_city: bool = False) -> Any:
    from agents import function_tool

    if strict_city:
        @function_tool
        def get_weather(city: Literal["Oslo", "Rome"]) -> str:
            """Current weather in a city."""
            calls.append({"city": city})
            return "sunny"
    else:
        @function_tool  # type: ignore[no-redef]
        def get_weather(location: str) -> str:
            """Current weather in a city."""
            calls.append({"location": location})
            return "sunny"
    return get_weather


def test_agents_function_tool_called_with_the_arguments(server: Server) -> None:
    calls: list[dict[str, Any]] = []
    result = _run(_agent(server, tools=[_weather_tool(calls)]), ASK_WEATHER)
    assert calls == [PARIS]
    assert result.final_output == scripted.ANSWER_AFTER_TOOL


def test_agents_output_type_with_a_tool_calls_the_tool(server: Server) -> None:
    """Defect 1: `output_type` sends a response format; the tool must still be called."""
    calls: list[dict[str, Any]] = []
    result = _run(_agent(server, tools=[_weather_tool(calls)], output_type=Verdict), ASK_WEATHER)
    assert calls == [PARIS]
    assert isinstance(result.final_output, Verdict)


def test_agents_strict_tool_arguments_follow_the_schema(server: Server) -> None:
    """Defect 2: the model would write {"location": "Paris"}; the strict schema wants a city
    of two; the arguments are constrained once the model opens the call."""
    calls: list[dict[str, Any]] = []
    result = _run(_agent(server, tools=[_weather_tool(calls, strict_city=True)]), ASK_WEATHER)
    assert len(calls) == 1 and calls[0]["city"] in ("Oslo", "Rome")
    assert result.final_output == scripted.ANSWER_AFTER_TOOL


# ------------------------------------------------------------------ LiteLLM


def test_litellm_completion(server: Server) -> None:
    import litellm

    r = litellm.completion(model=f"openai/{MODEL}", api_base=server.base_url, api_key=KEY,
                           messages=[{"role": "user", "content": "Hi there"}],
                           temperature=0, max_tokens=120, timeout=120)
    assert r.choices[0].message.content == scripted.ANSWER
    assert r.choices[0].finish_reason == "stop"


def test_litellm_streamed_tool_call_rebuilt(server: Server) -> None:
    import litellm

    messages = [{"role": "user", "content": ASK_WEATHER}]
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                       "required": ["location"]}}}]
    chunks = list(litellm.completion(
        model=f"openai/{MODEL}", api_base=server.base_url, api_key=KEY, messages=messages,
        tools=tools, stream=True, temperature=0, max_tokens=120, timeout=120))
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    (call,) = rebuilt.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == PARIS
    assert rebuilt.choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------ pydantic-ai


def _pydantic_agent(server: Server, output_type: Any) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=server.base_url, api_key=KEY))
    return Agent(model, output_type=output_type,
                 model_settings={"temperature": 0, "max_tokens": 120})


def test_pydantic_ai_typed_output_through_its_output_tool(server: Server) -> None:
    result = _pydantic_agent(server, Verdict).run_sync("Hi there")
    assert isinstance(result.output, Verdict)


def test_pydantic_ai_typed_output_through_native_structured_output(server: Server) -> None:
    from pydantic_ai import NativeOutput

    result = _pydantic_agent(server, NativeOutput(Verdict)).run_sync("Hi there")
    assert isinstance(result.output, Verdict)


# ------------------------------------------------------------------ openai's own parse helper


def test_openai_parse_with_tools_and_a_response_format(server: Server) -> None:
    """`.parse(tools=..., response_format=...)`: strict tools, a tool call, then the type."""
    import openai

    class GetWeather(BaseModel):
        location: str

    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)
    tools = [openai.pydantic_function_tool(GetWeather, name="get_weather")]
    messages: list[Any] = [{"role": "user", "content": ASK_WEATHER}]
    first = client.chat.completions.parse(model=MODEL, messages=messages, tools=tools,
                                          response_format=Verdict, temperature=0, max_tokens=120)
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == GetWeather(location="Paris")
    messages += [first.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = client.chat.completions.parse(model=MODEL, messages=messages, tools=tools,
                                           response_format=Verdict, temperature=0, max_tokens=120)
    assert isinstance(second.choices[0].message.parsed, Verdict)
