"""The bad-input matrix: each case, the status it must get and the field its error names.

JSON cases run through the HTTP server and through the RunPod job loop (as an
OpenAI-route job); raw-body cases only make sense over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HI = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


@dataclass(frozen=True)
class Case:
    name: str
    body: Any  # a JSON value, or bytes for raw HTTP bodies
    param: str | None  # the error's `param` must start with this (None: no field applies)
    status: int = 400


def _c(name: str, param: str | None, status: int = 400, **body: Any) -> Case:
    body.setdefault("messages", HI)
    return Case(name, body, param, status)


JSON_CASES: list[Case] = [
    Case("messages missing", {"model": "tiny-random"}, "messages"),
    _c("messages empty", "messages", messages=[]),
    _c("messages not a list", "messages", messages="hello"),
    _c("message not an object", "messages[0]", messages=["hello"]),
    _c("unknown role", "messages[0]", messages=[{"role": "wizard", "content": "hi"}]),
    _c("user without content", "messages[0]", messages=[{"role": "user"}]),
    _c("content of wrong type", "messages[0]", messages=[{"role": "user", "content": 12}]),
    _c("unsupported content part", "messages[0]", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
    _c("tool result without a matching call", "messages[1]", messages=[
        *HI, {"role": "tool", "tool_call_id": "call_nope", "content": "1"}]),
    _c("tool message without tool_call_id", "messages[1]", messages=[
        *HI, {"role": "tool", "content": "1"}]),
    _c("assistant tool call without name", "messages[1]", messages=[*HI, {
        "role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                             "function": {"arguments": "{}"}}]}]),
    _c("tool call arguments a number", "messages[1]", messages=[*HI, {
        "role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                             "function": {"name": "f", "arguments": 12}}]}]),
    _c("tools not a list", "tools", tools="get_weather"),
    _c("tool of unknown type", "tools[0]", tools=[{"type": "retrieval"}]),
    _c("tool name with spaces", "tools[0]", tools=[
        {"type": "function", "function": {"name": "get weather!"}}]),
    _c("tool parameters not an object", "tools[0]", tools=[
        {"type": "function", "function": {"name": "f", "parameters": "string"}}]),
    _c("invalid tool schema, forced", "tools[0].function.parameters", tool_choice="required",
       tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]),
    _c("tool_choice names an unknown function", "tool_choice", tools=[TOOL], tool_choice={
        "type": "function", "function": {"name": "get_time"}}),
    _c("tool_choice unknown word", "tool_choice", tools=[TOOL], tool_choice="sometimes"),
    _c("tool_choice required without tools", "tool_choice", tool_choice="required"),
    _c("response_format unknown type", "response_format", response_format={"type": "xml"}),
    _c("json_schema without name", "response_format", response_format={
        "type": "json_schema", "json_schema": {"schema": {"type": "object"}}}),
    _c("json_schema with invalid schema", "response_format", response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}),
    _c("temperature not a number", "temperature", temperature="hot"),
    _c("temperature too high", "temperature", temperature=7),
    _c("temperature negative", "temperature", temperature=-1),
    _c("top_p above 1", "top_p", top_p=1.5),
    _c("top_p negative", "top_p", top_p=-0.1),
    _c("n zero", "n", n=0),
    _c("n absurd", "n", n=1000),
    _c("max_tokens zero", "max_tokens", max_tokens=0),
    _c("max_tokens negative", "max_tokens", max_tokens=-5),
    _c("max_tokens beyond the context", "max_tokens", max_tokens=100_000),
    _c("max_completion_tokens not a number", "max_completion_tokens",
       max_completion_tokens="lots"),
    _c("presence_penalty out of range", "presence_penalty", presence_penalty=5),
    _c("frequency_penalty out of range", "frequency_penalty", frequency_penalty=-3),
    _c("top_logprobs too many", "top_logprobs", logprobs=True, top_logprobs=50),
    _c("top_logprobs without logprobs", "top_logprobs", top_logprobs=3),
    _c("stop of wrong type", "stop", stop=123),
    _c("stream not a boolean", "stream", stream=[1]),
    _c("seed not an integer", "seed", seed="abc"),
    _c("reasoning_effort unknown", "reasoning_effort", reasoning_effort="extreme"),
    _c("stream_options not an object", "stream_options", stream_options=5),
    _c("unknown model", "model", 404, model="gpt-5"),
    _c("prompt longer than the context", "messages",
       messages=[{"role": "user", "content": "weather " * 3000}]),
    _c("too many messages", "messages", messages=HI * 3000),
    Case("body is a list", [HI], None),
    Case("body is a string", "hello", None),
]

RAW_CASES: list[Case] = [
    Case("malformed JSON", b'{"messages": [', None),
    Case("empty body", b"", None),
    Case("not UTF-8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
    Case("deeply nested JSON", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    Case("oversized body", b'{"messages": [{"role": "user", "content": "'
         + b"a" * (9 * 1024 * 1024) + b'"}]}', None, 413),
]
