"""/v1/responses with real clients over real HTTP, on the SCRIPTED tiny model (CPU engine).

One server for the whole module: the openai client (`responses.create` and
`responses.stream`), the Agents SDK with its default (Responses) model, a
Codex-style streamed turn pair (request shapes as Codex sends them: developer
messages, hosted tools next to function tools, `store: false`, encrypted
reasoning replayed), and the bad-input matrix.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.responses_cases import BAD
from worker.tiny import scripted

from .conftest import Server

KEY = "test-key-123"  # the scripted_server fixture sets API_KEY to this
MODEL = "tiny-scripted"
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"], "additionalProperties": False},
    "strict": True,
}
ASK_WEATHER = "What is the weather in Paris?"
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_output_tokens": 100}


@pytest.fixture(scope="module")
def server(scripted_server: Server) -> Server:
    return scripted_server  # the session's scripted server


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)


def _items(r: Response, kind: str) -> list[Any]:
    return [o for o in r.output if o.type == kind]


def _reasoning_text(r: Response) -> str:
    return "".join(c.text for o in _items(r, "reasoning") for c in (o.content or []))


# ------------------------------------------------------------------ openai client


def test_answer_with_reasoning(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Hi there", instructions="Be brief.",
                                metadata={"k": "v"}, **GREEDY)
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert _reasoning_text(r) == scripted.REASONING
    assert r.output_text == scripted.ANSWER
    assert r.output[0].encrypted_content is None  # only when include asks for it
    msg = r.output[1]
    assert msg.type == "message" and msg.id.startswith("msg_") and msg.status == "completed"
    assert r.usage is not None
    assert r.usage.output_tokens == len(scripted.completion_tokens("answer"))
    assert 0 < r.usage.output_tokens_details.reasoning_tokens < r.usage.output_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    # the request parameters, echoed
    assert (r.model, r.instructions, r.metadata, r.temperature) == (
        MODEL, "Be brief.", {"k": "v"}, 0.0)
    assert r.max_output_tokens == 100 and r.tools == [] and r.tool_choice == "auto"
    assert r.incomplete_details is None and r.error is None


def test_function_call(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER_TOOL], **GREEDY)
    assert [o.type for o in r.output] == ["reasoning", "function_call"]
    assert _reasoning_text(r) == scripted.TOOL_REASONING
    call = r.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.id is not None and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == json.loads(scripted.TOOL_ARGS)
    assert r.status == "completed" and r.output_text == ""
    assert r.tools[0].type == "function" and r.tools[0].name == "get_weather"


def test_tool_output_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER_TOOL],
                                    **GREEDY)
    call = _items(first, "function_call")[0]
    history: list[Any] = [
        {"role": "user", "content": ASK_WEATHER},
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"type": "function_call_output", "call_id": call.call_id,
         "output": '{"sky": "sunny", "temp_c": 21}'},
    ]
    second = client.responses.create(model=MODEL, input=history, tools=[WEATHER_TOOL], **GREEDY)
    assert second.output_text == scripted.ANSWER_AFTER_TOOL
    assert _reasoning_text(second) == scripted.AFTER_TOOL_REASONING
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    history[-1] = {**history[-1], "call_id": "call_unknown"}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=history, tools=[WEATHER_TOOL], **GREEDY)
    assert err.value.body["param"] == "input[3].call_id"  # type: ignore[index]


def test_json_schema_format(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"], "additionalProperties": False}
    r = client.responses.create(
        model=MODEL, input="Hi there", temperature=0.0, max_output_tokens=200,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema,
                         "strict": True}})
    assert r.status == "completed", r.incomplete_details
    assert set(json.loads(r.output_text)) == {"city"}
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Hi there", temperature=0.0,
                                max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 16
    assert r.output[-1].status == "incomplete"  # type: ignore[union-attr]


def _stream(client: openai.OpenAI, **kw: Any) -> tuple[list[Any], Response]:
    with client.responses.stream(model=MODEL, **kw) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


@pytest.mark.parametrize("case", ["answer", "tool_call"])
def test_stream_equals_the_response(client: openai.OpenAI, case: str) -> None:
    kw: dict[str, Any] = {"input": "Hi there", **GREEDY}
    if case == "tool_call":
        kw = {"input": ASK_WEATHER, "tools": [WEATHER_TOOL], **GREEDY}
    full = client.responses.create(**kw)
    events, final = _stream(client, **kw)
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # OpenAI's order per item: added, (part added), deltas, done events, item done
    expected_item = {
        "reasoning": ["response.output_item.added", "response.content_part.added",
                      "response.reasoning_text.delta", "response.reasoning_text.done",
                      "response.content_part.done", "response.output_item.done"],
        "message": ["response.output_item.added", "response.content_part.added",
                    "response.output_text.delta", "response.output_text.done",
                    "response.content_part.done", "response.output_item.done"],
        "function_call": ["response.output_item.added",
                          "response.function_call_arguments.delta",
                          "response.function_call_arguments.done",
                          "response.output_item.done"],
    }
    for index, item in enumerate(full.output):
        mine = [e.type for e in events if getattr(e, "output_index", None) == index]
        deduped = [t for i, t in enumerate(mine) if i == 0 or t != mine[i - 1]]
        assert deduped == expected_item[item.type], (item.type, mine)
    # the concatenated stream equals the non-streamed response
    assert [_essence(o) for o in final.output] == [_essence(o) for o in full.output]
    assert final.output_text == full.output_text
    assert final.usage == full.usage and final.status == full.status
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == full.output_text
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert reasoning == _reasoning_text(full)
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == "".join(o.arguments for o in _items(full, "function_call"))


def _essence(item: Any) -> tuple[Any, ...]:
    """What an output item says (ids differ between two runs; the stream helper's parsed
    types add fields of their own)."""
    if item.type == "function_call":
        return item.type, item.status, item.name, item.arguments
    return item.type, item.status, [c.text for c in item.content or []]


def test_stream_stops_at_max_output_tokens(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="Hi there", temperature=0.0,
                                          max_output_tokens=16, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    done = [e for e in events if e.type == "response.output_item.done"]
    assert done and done[-1].item.status == "incomplete"


# ------------------------------------------------------------------ Agents SDK


def test_agents_sdk_default_model(server: Server) -> None:
    import agents
    from agents import Agent, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(location: str) -> str:
        """Current weather in a city."""
        calls.append(location)
        return '{"sky": "sunny", "temp_c": 21}'

    async def run() -> tuple[Any, Any]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0,
                                    timeout=120)
        provider = agents.OpenAIProvider(openai_client=client)  # Responses by default
        config = agents.RunConfig(model_provider=provider,
                                  model_settings=agents.ModelSettings(temperature=0.0))
        plain = Agent(name="plain", instructions="Be brief.", model=MODEL)
        tooled = Agent(name="tooled", instructions="Use tools.", model=MODEL,
                       tools=[get_weather])
        answer = await Runner.run(plain, "Hi there", run_config=config)
        weather = await Runner.run(tooled, ASK_WEATHER, run_config=config)
        await client.close()
        return answer, weather

    answer, weather = asyncio.run(run())
    assert answer.final_output == scripted.ANSWER
    assert type(answer.raw_responses[0].response_id) is str
    assert answer.raw_responses[0].response_id.startswith("resp_")
    assert calls == [json.loads(scripted.TOOL_ARGS)["location"]]
    assert weather.final_output == scripted.ANSWER_AFTER_TOOL


# ------------------------------------------------------------------ Codex-style turns


def _sse(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in resp.text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append((lines["event"], data))
    return events


def test_codex_style_turns(server: Server) -> None:
    """Codex's request shape: developer messages as items, a web_search and a namespace tool
    next to function tools, store false, stream true, encrypted reasoning included and
    replayed (only `encrypted_content`, as a stateless client keeps it)."""
    tools: list[dict[str, Any]] = [
        {**WEATHER_TOOL, "strict": False},
        {"type": "namespace", "name": "agents", "description": "sub-agents",
         "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}]},
        {"type": "web_search", "external_web_access": False},
    ]
    base = {"model": MODEL, "instructions": "You are a coding agent.", "tools": tools,
            "tool_choice": "auto", "parallel_tool_calls": True, "store": False, "stream": True,
            "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
            "prompt_cache_key": "thread-1", "client_metadata": {"thread_id": "thread-1"},
            "temperature": 0.0}
    user_turn = [
        {"type": "message", "id": "msg_a", "role": "developer",
         "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
        {"type": "message", "id": "msg_b", "role": "user",
         "content": [{"type": "input_text", "text": ASK_WEATHER}]},
    ]
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{server.base_url}/responses"
    first = httpx.post(url, json={**base, "input": user_turn}, headers=headers, timeout=120)
    assert first.status_code == 200 and first.headers["content-type"].startswith(
        "text/event-stream")
    events = _sse(first)
    assert events[-1][0] == "response.completed"
    done = [e["item"] for kind, e in events if kind == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "function_call"]
    assert done[0]["encrypted_content"] == scripted.TOOL_REASONING
    assert events[-1][1]["response"]["output"] == done
    replayed = [{"type": "reasoning", "id": done[0]["id"], "summary": [],
                 "encrypted_content": done[0]["encrypted_content"]}, done[1]]
    second_input = [*user_turn, *replayed,
                    {"type": "function_call_output", "id": "fco_1",
                     "call_id": done[1]["call_id"], "output": "sunny, 21 C"}]
    second = httpx.post(url, json={**base, "input": second_input}, headers=headers, timeout=120)
    events2 = _sse(second)
    final = events2[-1][1]["response"]
    Response.model_validate(final)
    assert events2[-1][0] == "response.completed"
    texts = [c["text"] for o in final["output"] if o["type"] == "message" for c in o["content"]]
    assert texts == [scripted.ANSWER_AFTER_TOOL]


CODEX = Path(__file__).resolve().parents[2] / ".venv" / "codex" / "node_modules" / ".bin" / "codex"


def test_the_codex_cli_completes_a_turn(server: Server, tmp_path: Path) -> None:
    """The real Codex CLI (scripts/setup.sh installs it from npm) with this worker as its
    model provider, as docs/RESPONSES.md configures it: `codex exec` streams a turn over
    /v1/responses (its own instructions, tools and include list) and prints the answer."""
    assert CODEX.exists(), "scripts/setup.sh installs the Codex CLI into .venv/codex"
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\nmodel_provider = "worker"\nmodel_reasoning_effort = "low"\n'
        f'[model_providers.worker]\nname = "worker"\nbase_url = "{server.base_url}"\n'
        'env_key = "WORKER_API_KEY"\nwire_api = "responses"\n')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(home),
           "WORKER_API_KEY": KEY}
    done = subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", "--json", "Hello!"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    messages = [e["item"]["text"] for e in events if e["type"] == "item.completed"
                and e["item"]["type"] == "agent_message"]
    assert messages == [scripted.ANSWER], done.stdout[-3000:]
    [usage] = [e["usage"] for e in events if e["type"] == "turn.completed"]
    assert usage["input_tokens"] > 1000 and usage["reasoning_output_tokens"] > 0, usage


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize(("name", "body", "param", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_field(server: Server, name: str, body: dict[str, Any],
                                   param: str, status: int) -> None:
    r = httpx.post(f"{server.base_url}/responses", json=body,
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error" and err["message"]
    assert "Traceback" not in err["message"] and "pydantic" not in err["message"].lower()
