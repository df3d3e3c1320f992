"""Bounds at the edge (worker/openai/bounds.py): each refusal names its field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.fake_engine import FakeEngine
from worker.openai import bounds
from worker.openai.chat.protocol import parse_chat_request
from worker.openai.chat.service import ChatService, Limits
from worker.openai.errors import InvalidRequest

HI = [{"role": "user", "content": "Hi"}]


def refused(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(body)
    return info.value


@pytest.mark.parametrize(("raw", "param"), [
    ('{"messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages[0].content"),
    ('{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     "messages[0].content[0].text"),
    ('{"messages": [{"role": "user", "content": "hi"}], "metadata": {"\\udc00": "x"}}',
     "metadata"),
    ('{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
     '"function": {"name": "f", "parameters": {"enum": ["\\ud83d"]}}}]}',
     "tools[0].function.parameters.enum[0]"),
])
def test_a_lone_surrogate_anywhere_is_named(raw: str, param: str) -> None:
    err = refused(bounds.loads(raw))
    assert err.param == param and "surrogate" in err.message
    json.dumps(err.message, ensure_ascii=False).encode()  # the message itself is writable


def test_a_surrogate_pair_is_text() -> None:
    req = parse_chat_request(bounds.loads(
        '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'))
    assert req.messages[0].content == "\N{GRINNING FACE}"


def test_a_repeated_key_is_named_not_silently_dropped() -> None:
    err = refused(bounds.loads('{"messages": [{"role": "user", "content": "a"}], '
                               '"max_tokens": 5, "max_tokens": 500}'))
    assert err.param == "max_tokens" and "repeats" in err.message
    err = refused(bounds.loads('{"messages": [{"role": "user", "content": "a", "role": "x"}]}'))
    assert err.param == "messages[0].role"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_named_wherever_they_are(value: float) -> None:
    assert refused({"messages": HI, "temperature": value}).param == "temperature"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"maximum": value}}}
    assert refused({"messages": HI, "tools": [tool]}).param == \
        "tools[0].function.parameters.maximum"


def test_nesting_is_bounded() -> None:
    deep: Any = "x"
    for _ in range(bounds.MAX_DEPTH + 5):
        deep = [deep]
    err = refused({"messages": HI, "metadata": {"k": deep}})
    assert (err.param or "").startswith("metadata.k[0]") and "nested" in err.message


def test_a_run_the_tokenizer_takes_as_one_piece_is_bounded() -> None:
    n = bounds.MAX_TEXT_RUN
    parse_chat_request({"messages": [{"role": "user", "content": "a" * n}]})
    parse_chat_request({"messages": [{"role": "user", "content": "word 12 " * 5000}]})
    for text in ("a" * (n + 1), " " * (n + 1), "!" * (n + 1), "中" * (n + 1)):
        err = refused({"messages": [*HI, {"role": "user", "content": text}]})
        assert err.param == "messages[1].content" and str(n) in err.message


@pytest.mark.parametrize(("field", "value"), [
    ("seed", 2**63), ("seed", -(2**63) - 1), ("seed", 10**30),
    ("top_k", 10**30), ("top_k", 300_000), ("top_k", -2),
])
def test_engine_integers_are_bounded(field: str, value: int) -> None:
    assert refused({"messages": HI, field: value}).param == field


@pytest.mark.parametrize(("field", "value"), [
    ("seed", 2**63 - 1), ("seed", -(2**63)), ("top_k", 201_088), ("top_k", -1),
])
def test_engine_integer_edges_are_accepted(field: str, value: int) -> None:
    assert getattr(parse_chat_request({"messages": HI, field: value}), field) == value


def service(**limits: Any) -> tuple[ChatService, FakeEngine]:
    engine = FakeEngine(lambda p, o: [200002])
    return ChatService(engine, limits=Limits(**limits)), engine


def test_stop_strings_are_bounded_in_number_and_length() -> None:
    svc, _ = service(max_stop_sequences=3, max_stop_chars=10)
    svc.prepare(parse_chat_request({"messages": HI, "stop": ["a", "b", "c"]}))
    with pytest.raises(InvalidRequest, match="at most 3") as info:
        svc.prepare(parse_chat_request({"messages": HI, "stop": ["a", "b", "c", "d"]}))
    assert info.value.param == "stop"
    with pytest.raises(InvalidRequest) as info:
        svc.prepare(parse_chat_request({"messages": HI, "stop": ["a", "x" * 11]}))
    assert info.value.param == "stop[1]"
    with pytest.raises(InvalidRequest) as info:
        svc.prepare(parse_chat_request({"messages": HI, "stop": "x" * 11}))
    assert info.value.param == "stop"


def test_the_default_stop_limit_is_generous() -> None:
    svc, _ = service()
    svc.prepare(parse_chat_request({"messages": HI, "stop": [str(i) for i in range(16)]}))
    with pytest.raises(InvalidRequest, match="at most 16"):
        svc.prepare(parse_chat_request({"messages": HI, "stop": ["x"] * 10_000}))


SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
    "type": "object", "properties": {"a": {"type": "string"}}}}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


async def test_constrained_schemas_are_compiled_by_the_engine_before_anything_runs() -> None:
    svc, engine = service()
    await svc.admit(parse_chat_request({"messages": HI, "response_format": SCHEMA_FORMAT}))
    await svc.admit(parse_chat_request({"messages": HI, "tools": [TOOL],
                                        "tool_choice": "required"}))
    await svc.admit(parse_chat_request({"messages": HI, "tools": [TOOL]}))  # not constrained
    assert [json.loads(s) for s in engine.schemas_checked] == [
        SCHEMA_FORMAT["json_schema"]["schema"], {"type": "object"}]
    engine.reject_schemas = True
    with pytest.raises(InvalidRequest) as info:
        await svc.admit(parse_chat_request({"messages": HI, "response_format": SCHEMA_FORMAT}))
    assert info.value.param == "response_format.json_schema.schema"
    with pytest.raises(InvalidRequest) as info:
        await svc.admit(parse_chat_request({"messages": HI, "tools": [TOOL],
                                            "tool_choice": "required"}))
    assert info.value.param == "tools[0].function.parameters"
    assert not engine.calls  # nothing reached generation


async def test_a_schema_over_the_size_limit_is_refused_before_compiling() -> None:
    svc, engine = service(max_schema_bytes=1024)
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(100)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": big}}
    with pytest.raises(InvalidRequest, match="at most 1024") as info:
        await svc.admit(parse_chat_request({"messages": HI, "response_format": fmt}))
    assert info.value.param == "response_format.json_schema.schema"
    assert not engine.schemas_checked


def test_huge_tools_are_named_when_they_overflow_the_context() -> None:
    svc, _ = service()
    tool = {"type": "function", "function": {"name": "f", "description": "word " * 5000}}
    with pytest.raises(InvalidRequest) as info:
        svc.prepare(parse_chat_request({"messages": HI, "tools": [tool]}))
    assert info.value.param == "tools"
    with pytest.raises(InvalidRequest) as info:
        svc.prepare(parse_chat_request({"messages": [{"role": "user",
                                                      "content": "word " * 5000}]}))
    assert info.value.param == "messages"


async def test_a_batch_line_with_an_unhashable_custom_id_fails_alone() -> None:
    from worker.openai.batch import run_batch

    svc, _ = service()
    good = {"custom_id": "ok", "body": {"messages": HI, "max_tokens": 2}}
    out = await run_batch(svc, [{"custom_id": {"a": 1}, "body": {"messages": HI}},
                                {"custom_id": "\ud800", "body": {"messages": HI}}, good],
                          max_lines=8)
    assert [line["response"]["body"].get("error", {}).get("param") for line in out] == \
        ["custom_id", "custom_id", None]
    assert out[1]["custom_id"] is None  # never echoed back unencodable
