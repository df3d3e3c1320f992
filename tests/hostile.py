"""Hostile inputs outside the schema: valid requests with one field turned into a hostile value.

A case is (endpoint, template, field path, value kind). `mutate` puts the hostile
value at the path; `encode` writes JSON that plain `json.dumps` cannot (NaN and
Infinity literals, lone-surrogate escapes, a key written twice). `check_answer`
is the property every endpoint must hold: never a 5xx, and a 4xx whose `param`
names the mutated field (or nothing, for a fault of the whole body).

Used by tests/unit/test_fuzz_hostile.py (in process, fake engine, most cases),
tests/integration/test_reliability_http.py (a sample over real HTTP on the real
CPU engine) and scripts/fuzz-hostile.py (the exhaustive table in RELIABILITY.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

HI = {"role": "user", "content": "Hi"}
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}

# Valid chat requests the mutations start from; together they hold every field we read.
CHAT_TEMPLATES: dict[str, dict[str, Any]] = {
    "plain": {
        "model": "fake-gpt-oss", "messages": [
            {"role": "system", "content": "Be brief."}, HI],
        "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.1,
        "seed": 7, "stop": ["\n\n", "END"], "n": 1, "presence_penalty": 0.1,
        "frequency_penalty": 0.1, "reasoning_effort": "low", "user": "u1",
        "metadata": {"k": "v"}, "logprobs": True, "top_logprobs": 2,
    },
    "tools": {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris?", "name": "ann"},
            {"role": "assistant", "content": None, "reasoning": "Look it up.",
             "tool_calls": [{"id": "call_1", "type": "function", "function": {
                 "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "tools": [TOOL], "tool_choice": "auto", "parallel_tool_calls": True,
        "max_completion_tokens": 32,
    },
    "forced": {
        "messages": [HI], "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "schema": {
        "messages": [HI], "stream": True, "stream_options": {"include_usage": True},
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "strict": True, "schema": {
                "type": "object", "properties": {"a": {"type": "string"}}}}},
    },
}
# Fields a template lacks but a client may send: mutated by adding them.
EXTRA_FIELDS = ("seed", "top_k", "max_tokens", "stop", "n", "temperature", "logprobs",
                "top_logprobs", "response_format", "tool_choice", "tools", "stream",
                "repetition_penalty")

# Valid text-completions requests (/v1/completions, a RunPod prompt job's OpenAI form).
COMPLETION_TEMPLATES: dict[str, dict[str, Any]] = {
    "text": {
        "model": "fake-gpt-oss", "prompt": "Once upon a time", "max_tokens": 16,
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.1, "seed": 7,
        "stop": ["\n\n", "END"], "n": 1, "best_of": 1, "presence_penalty": 0.1,
        "frequency_penalty": 0.1, "repetition_penalty": 1.1, "logprobs": 2, "user": "u1",
        "logit_bias": {"100": 1.0}, "skip_special_tokens": True, "stop_token_ids": [200002],
        "min_tokens": 1,
    },
    "token prompts": {
        "prompt": [[1, 2, 3], [4, 5]], "echo": True, "stream": True,
        "stream_options": {"include_usage": True}, "ignore_eos": False, "max_tokens": 8,
    },
}
COMPLETION_EXTRA_FIELDS = ("seed", "max_tokens", "stop", "n", "logprobs", "stream", "suffix",
                           "best_of", "echo", "stop_token_ids", "logit_bias", "prompt_logprobs")

# Valid Responses requests.
RESPONSES_TEMPLATES: dict[str, dict[str, Any]] = {
    "responses": {
        "model": "fake-gpt-oss", "instructions": "Be brief.",
        "input": [{"role": "user", "content": "Hi"},
                  {"role": "user", "content": [{"type": "input_text", "text": "Still there?"}]}],
        "max_output_tokens": 16, "temperature": 0.5, "top_p": 0.9, "user": "u1",
        "metadata": {"k": "v"}, "reasoning": {"effort": "low"},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": "auto", "text": {"format": {"type": "text"}},
    },
}
RESPONSES_EXTRA_FIELDS = ("stream", "max_output_tokens", "tool_choice", "text", "top_logprobs",
                          "parallel_tool_calls")

# A RunPod native prompt job: vLLM's sampling_params.
PROMPT_JOB_TEMPLATES: dict[str, dict[str, Any]] = {
    "prompt job": {
        "prompt": "Once upon a time", "stream": False, "sampling_params": {
            "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.1,
            "seed": 7, "stop": ["END"], "n": 1, "presence_penalty": 0.1,
            "frequency_penalty": 0.1, "repetition_penalty": 1.1, "logprobs": 1,
            "ignore_eos": False, "skip_special_tokens": True, "min_tokens": 1},
        "max_batch_size": 8, "min_batch_size": 1, "batch_size_growth_factor": 2,
    },
}
PROMPT_JOB_EXTRA_FIELDS = ("sampling_params", "apply_chat_template")

# The request families: their templates and the fields a client may add to them.
FAMILIES: dict[str, tuple[dict[str, dict[str, Any]], tuple[str, ...]]] = {
    "chat": (CHAT_TEMPLATES, EXTRA_FIELDS),
    "completions": (COMPLETION_TEMPLATES, COMPLETION_EXTRA_FIELDS),
    "responses": (RESPONSES_TEMPLATES, RESPONSES_EXTRA_FIELDS),
    "prompt job": (PROMPT_JOB_TEMPLATES, PROMPT_JOB_EXTRA_FIELDS),
}
TEMPLATES = {name: t for templates, _ in FAMILIES.values() for name, t in templates.items()}


class Dup:
    """A key written twice: first with the original value, then with `value`."""

    def __init__(self, original: Any, value: Any):
        self.original = original
        self.value = value


MB = 1024 * 1024
_SURROGATE = "left \ud800 right"


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# Hostile value kinds: name -> the value (or a function of the original value).
KINDS: dict[str, Any] = {
    "huge int": 10**30,
    "negative huge int": -(10**30),
    "int64 + 1": 2**63,
    "uint64 max": 2**64 - 1,
    "negative int": -7,
    "zero": 0,
    "float for int": 1.5,
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "lone surrogate": _SURROGATE,
    "lone surrogate in list": [_SURROGATE],
    "NUL": "a\x00b",
    "1 MB string": "a" * MB,
    "deep nesting": _deep(200),
    "empty string": "",
    "empty list": [],
    "empty object": {},
    "list of 10,000": ["s"] * 10_000,
    "null": None,
    "true": True,
    "wrong type: object": {"x": 1},
    "wrong type: string": "hello",
    "duplicated key": Dup,  # marker: the key written twice
}


@dataclass(frozen=True)
class Case:
    template: str
    path: tuple[str | int, ...]
    kind: str

    @property
    def field(self) -> str:
        return dotted(self.path)


def dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every field path in a JSON value, containers included (not the root)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from paths(v, (*prefix, i))


def field_paths(template: dict[str, Any],
                extra_fields: tuple[str, ...] = EXTRA_FIELDS) -> list[tuple[str | int, ...]]:
    extra = [(f,) for f in extra_fields if f not in template]
    return [*paths(template), *extra]


def all_cases(templates: dict[str, dict[str, Any]] = CHAT_TEMPLATES,
              extra_fields: tuple[str, ...] = EXTRA_FIELDS) -> list[Case]:
    return [Case(name, p, kind) for name, t in templates.items()
            for p in field_paths(t, extra_fields) for kind in KINDS]


def family_cases(family: str) -> list[Case]:
    """Every case of one request family (see FAMILIES)."""
    return all_cases(*FAMILIES[family])


def mutate(template: dict[str, Any], path: tuple[str | int, ...], kind: str) -> Any:
    """A deep copy of `template` with the value at `path` replaced by the hostile one."""
    body = json.loads(json.dumps(template))
    parent: Any = body
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    hostile = KINDS[kind]
    if hostile is Dup:
        original = parent[last] if isinstance(parent, dict) and last in parent else None
        if not isinstance(parent, dict):  # a list item cannot repeat a key: repeat the list's
            return mutate(template, path[:-1], kind) if len(path) > 1 else body
        hostile = Dup(original, 0 if original != 0 else 1)
    parent[last] = hostile
    return body


def encode(value: Any) -> str:
    """JSON text, with NaN/Infinity literals, `\\udXXX` escapes and repeated keys as asked."""
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            key = json.dumps(k)
            if isinstance(v, Dup):
                items.append(f"{key}: {encode(v.original)}")
                items.append(f"{key}: {encode(v.value)}")
            else:
                items.append(f"{key}: {encode(v)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(encode(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate becomes a \ud800 escape


def plain(value: Any) -> Any:
    """The Python value a JSON parser would hand over (for job inputs): Dup keeps the last."""
    if isinstance(value, dict):
        return {k: plain(v.value if isinstance(v, Dup) else v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# Cross-field rules: breaking the first field may be reported on the second, which names
# the rule that broke (top_logprobs needs logprobs; a tool result needs its call's id...).
COUPLED: dict[str, tuple[str, ...]] = {
    "logprobs": ("top_logprobs", "echo"),  # completions: echo with logprobs is refused
    "n": ("best_of",),  # completions: best_of must equal n
    "sampling_params.n": ("sampling_params.best_of",),
    "stream": ("stream_options",),
    "tools": ("tool_choice", "messages[3].tool_call_id"),
    "messages[2]": ("messages[3].tool_call_id",),
    "messages": ("messages[3].tool_call_id",),
}


def _within(param: str, field: str) -> bool:
    return (param == field or field.startswith((param + ".", param + "["))
            or param.startswith((field + ".", field + "[")))


def related(param: str | None, field: str) -> bool:
    """`param` names the mutated field, a part of it, the object holding it, or the other
    field of a rule the mutation broke."""
    if not param:
        return False
    if _within(param, field):
        return True
    return any(_within(field, key) and any(_within(param, other) for other in others)
               for key, others in COUPLED.items())


@dataclass
class Answer:
    status: int
    param: str | None = None
    message: str = ""


def check_answer(answer: Answer, case: Case, *, prefix: str = "") -> None:
    """The property: never a 5xx; a 4xx names the mutated field."""
    where = f"{case.template} {case.field} <- {case.kind}"
    assert answer.status < 500, (where, answer)
    if answer.status >= 400:
        field = f"{prefix}{case.field}"
        assert related(answer.param, field), (where, answer)
        assert "Traceback" not in answer.message and "object at 0x" not in answer.message


def error_answer(status: int, body: Any) -> Answer:
    """An HTTP answer: status, and the error's `param` and message when it is an error."""
    if status < 400:
        return Answer(status)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert err["message"] and err["type"], err
    return Answer(status, err.get("param"), err["message"])
