"""Client checks against a worker serving a tiny gpt-oss (GPU smoke test).

Usage: python bench/gpu_client.py BASE_URL [--random]. Prints one JSON object: each
check with ok/detail, so a run's output can be pasted into docs/GPU.md. With
--random (a random-weight model) answers are gibberish, so the checks are about
shape: the stream ends properly, forced tool arguments and JSON answers validate.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import openai

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
HI = [{"role": "user", "content": "Hi there"}]
SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
          "required": ["answer"], "additionalProperties": False}


RANDOM_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {
        "type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]},
                                         "days": {"type": "integer", "minimum": 1,
                                                  "maximum": 7}},
        "required": ["unit"], "additionalProperties": False}}}]


def random_checks(client: openai.OpenAI, model: str) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    opts: dict[str, Any] = {"model": model, "max_tokens": 64, "seed": 1}
    r = client.chat.completions.create(messages=HI, **opts)
    checks["chat"] = {"ok": r.choices[0].finish_reason in ("stop", "length", "tool_calls"),
                      "detail": {"finish_reason": r.choices[0].finish_reason,
                                 "completion_tokens": r.usage.completion_tokens if r.usage
                                 else None}}
    chunks = list(client.chat.completions.create(messages=HI, stream=True, **opts))
    last = [c for c in chunks if c.choices][-1].choices[0].finish_reason
    checks["stream"] = {"ok": last in ("stop", "length", "tool_calls"),
                        "detail": {"chunks": len(chunks), "finish_reason": last}}
    r = client.chat.completions.create(messages=WEATHER, tools=RANDOM_TOOLS,
                                       tool_choice="required", **{**opts, "max_tokens": 200})
    calls = r.choices[0].message.tool_calls or []
    try:
        args = json.loads(calls[0].function.arguments) if calls else None
        ok = isinstance(args, dict) and args.get("unit") in ("celsius", "fahrenheit")
    except ValueError:
        args, ok = calls[0].function.arguments, False
    checks["tool_choice_required"] = {"ok": ok, "detail": args}
    r = client.chat.completions.create(messages=HI, **{**opts, "max_tokens": 200},
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "verdict", "schema": SCHEMA}})
    try:
        value = json.loads(r.choices[0].message.content or "")
        ok = set(value) == {"answer"} and value["answer"] in ("yes", "no")
    except ValueError:
        value, ok = r.choices[0].message.content, False
    checks["json_schema"] = {"ok": ok, "detail": value}
    return checks


def main() -> int:
    base = sys.argv[1]
    if "--random" in sys.argv:
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        checks = random_checks(client, model)
        print(json.dumps({"model": model, "checks": checks,
                          "passed": sum(c["ok"] for c in checks.values()),
                          "total": len(checks)}, indent=2))
        return 0 if all(c["ok"] for c in checks.values()) else 1
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    greedy: dict[str, Any] = {"model": model, "temperature": 0.0, "max_tokens": 100}
    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, ok: bool, detail: Any) -> None:
        checks[name] = {"ok": bool(ok), "detail": detail}

    t0 = time.perf_counter()
    r = client.chat.completions.create(messages=HI, **greedy)
    m = r.choices[0].message
    check("chat", bool(m.content) and r.choices[0].finish_reason == "stop",
          {"content": m.content, "reasoning": getattr(m, "reasoning", None),
           "seconds": round(time.perf_counter() - t0, 3)})

    chunks = list(client.chat.completions.create(messages=HI, stream=True, **greedy))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("stream", streamed == m.content, {"chunks": len(chunks), "content": streamed})

    r = client.chat.completions.create(messages=WEATHER, tools=TOOLS, **greedy)
    calls = r.choices[0].message.tool_calls or []
    check("tool_call_auto", bool(calls) and calls[0].function.name == "get_weather",
          [{"name": c.function.name, "arguments": c.function.arguments} for c in calls])

    r = client.chat.completions.create(messages=HI, tools=TOOLS, tool_choice="required",
                                       **greedy)
    calls = r.choices[0].message.tool_calls or []
    args = json.loads(calls[0].function.arguments) if calls else None
    check("tool_choice_required", bool(calls) and isinstance(args, dict)
          and isinstance(args.get("location"), str),
          [{"name": c.function.name, "arguments": c.function.arguments} for c in calls])

    r = client.chat.completions.create(messages=HI, **greedy, response_format={
        "type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}})
    try:
        value = json.loads(r.choices[0].message.content or "")
        ok = value.get("answer") in ("yes", "no") and set(value) == {"answer"}
    except ValueError:
        value, ok = r.choices[0].message.content, False
    check("json_schema", ok, value)

    print(json.dumps({"model": model, "checks": checks,
                      "passed": sum(c["ok"] for c in checks.values()),
                      "total": len(checks)}, indent=2))
    return 0 if all(c["ok"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
