"""The /v1/responses bad-input matrix: (name, body, the error's `param`, status). Run over
real HTTP on the engine (tests/integration/test_responses.py) and in-process on the fake
engine (tests/unit/test_responses_clients.py)."""

from __future__ import annotations

from typing import Any

HI = {"input": "Hi"}
FN = {"type": "function", "name": "f", "parameters": {"type": "object"}}
BAD: list[tuple[str, dict[str, Any], str, int]] = [
    ("no input", {}, "input", 400),
    ("empty input", {**HI, "input": []}, "input", 400),
    ("input not text or items", {**HI, "input": 5}, "input", 400),
    ("item_reference", {**HI, "input": [{"type": "item_reference", "id": "msg_1"}]},
     "input[0].type", 400),
    ("hosted tool call item", {**HI, "input": [{"type": "web_search_call", "id": "ws"}]},
     "input[0].type", 400),
    ("message role", {**HI, "input": [{"role": "tool", "content": "x"}]}, "input[0].role", 400),
    ("image part", {**HI, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
     "input[0].content[1].type", 400),
    ("unknown call_id", {**HI, "input": [
        {"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
     "input[0].call_id", 400),
    ("function_call without name", {**HI, "input": [
        {"type": "function_call", "call_id": "call_x", "arguments": "{}"}]},
     "input[0].name", 400),
    ("hosted tool type", {**HI, "tools": [{"type": "file_search", "vector_store_ids": []}]},
     "tools[0].type", 400),
    ("bad function name", {**HI, "tools": [{**FN, "name": "bad name!"}]}, "tools[0].name", 400),
    ("duplicate functions", {**HI, "tools": [FN, FN]}, "tools", 400),
    ("tool_choice unknown function", {**HI, "tools": [FN],
                                      "tool_choice": {"type": "function", "name": "g"}},
     "tool_choice", 400),
    ("tool_choice required without tools", {**HI, "tool_choice": "required"}, "tool_choice",
     400),
    ("previous_response_id", {**HI, "previous_response_id": "resp_1"},
     "previous_response_id", 400),
    ("conversation", {**HI, "conversation": "conv_1"}, "conversation", 400),
    ("background", {**HI, "background": True}, "background", 400),
    ("truncation auto", {**HI, "truncation": "auto"}, "truncation", 400),
    ("top_logprobs", {**HI, "top_logprobs": 5}, "top_logprobs", 400),
    ("logprobs include", {**HI, "include": ["message.output_text.logprobs"]}, "include[0]",
     400),
    ("json_schema without schema", {**HI, "text": {"format": {"type": "json_schema",
                                                              "name": "x"}}},
     "text.format.schema", 400),
    ("invalid json schema", {**HI, "text": {"format": {"type": "json_schema", "name": "x",
                                                       "schema": {"type": "nonsense"}}}},
     "text.format.schema", 400),
    ("temperature", {**HI, "temperature": 3}, "temperature", 400),
    ("max_output_tokens zero", {**HI, "max_output_tokens": 0}, "max_output_tokens", 400),
    ("max_output_tokens over the context", {**HI, "max_output_tokens": 10**6},
     "max_output_tokens", 400),
    ("reasoning effort", {**HI, "reasoning": {"effort": "extreme"}}, "reasoning.effort", 400),
    ("metadata value", {**HI, "metadata": {"k": 1}}, "metadata.k", 400),
    ("stream not a bool", {**HI, "stream": "yes"}, "stream", 400),
    ("unknown field", {**HI, "frobnicate": 1}, "frobnicate", 400),
    ("unknown model", {**HI, "model": "gpt-9"}, "model", 404),
]
