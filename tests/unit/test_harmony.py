"""worker.harmony.render: prompts and forced prefixes, checked with openai_harmony itself."""

from __future__ import annotations

from typing import Any

import pytest
from openai_harmony import Message, Role

from worker.harmony.completion import parse_completion
from worker.harmony.render import (
    analysis_prefix_tokens,
    final_prefix_tokens,
    tool_call_prefix_tokens,
)
from worker.harmony.tokens import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    MESSAGE,
    RETURN,
    START,
    decode_text,
    encode_text,
    encoding,
    stop_token_ids,
)
from worker.openai.chat.convert import render_chat
from worker.openai.chat.protocol import ChatCompletionRequest
from worker.openai.errors import InvalidRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def request(messages: list[dict[str, Any]], **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": messages, **extra})


def render(req: ChatCompletionRequest, include_tools: bool = True) -> tuple[list[int], str]:
    toks = render_chat(req, include_tools=include_tools, today="2025-06-01")
    return toks, encoding().decode(toks)


def parse_prompt(toks: list[int]) -> list[Message]:
    """The prompt's messages, parsed back by openai_harmony (without the open assistant turn)."""
    assert toks[-2:] == [START, *encode_text("assistant")]
    return encoding().parse_messages_from_completion_tokens(toks[:-2], role=None)


def test_special_ids_match_the_encoding() -> None:
    enc = encoding()
    for name, tok in [
        ("<|return|>", RETURN),
        ("<|constrain|>", CONSTRAIN),
        ("<|channel|>", CHANNEL),
        ("<|start|>", START),
        ("<|end|>", END),
        ("<|message|>", MESSAGE),
        ("<|call|>", CALL),
    ]:
        assert enc.encode(name, allowed_special="all") == [tok]
    assert set(stop_token_ids()) == set(enc.stop_tokens_for_assistant_actions())
    assert stop_token_ids() == (200002, 200012)
    assert encoding() is enc


def test_text_helpers() -> None:
    assert encode_text("<|start|>") != [START]  # user text never becomes a special token
    s = "héllo 🫠 龘 <|end|>"
    assert decode_text(encode_text(s)) == s
    assert decode_text([START]) == "<|start|>"


def test_plain_prompt() -> None:
    toks, text = render(request([{"role": "user", "content": "Hi"}]))
    assert text.startswith("<|start|>system<|message|>You are ChatGPT")
    assert "Current date: 2025-06-01" in text and "Knowledge cutoff: 2024-06" in text
    assert "Reasoning: medium" in text
    assert "# Valid channels: analysis, commentary, final." in text
    assert "<|start|>developer" not in text  # no instructions, no tools
    assert text.endswith("<|start|>user<|message|>Hi<|end|><|start|>assistant")
    assert [m.author.role for m in parse_prompt(toks)] == [Role.SYSTEM, Role.USER]


@pytest.mark.parametrize(
    ("effort", "shown"), [("minimal", "low"), ("low", "low"), ("high", "high")]
)
def test_reasoning_effort(effort: str, shown: str) -> None:
    _, text = render(request([{"role": "user", "content": "x"}], reasoning_effort=effort))
    assert f"Reasoning: {shown}" in text


def test_default_effort_and_cutoff() -> None:
    req = request([{"role": "user", "content": "x"}])
    toks = render_chat(
        req,
        include_tools=False,
        today="2030-01-02",
        knowledge_cutoff="2025-01",
        default_effort="high",
    )
    text = decode_text(toks)
    assert "Reasoning: high" in text and "Knowledge cutoff: 2025-01" in text


def test_instructions_and_tools_in_developer_message() -> None:
    req = request(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        tools=[WEATHER, TIME],
    )
    toks, text = render(req)
    assert "# Instructions\n\nBe brief.\n\nUse metric units." in text
    assert "namespace functions {" in text and "// Current weather in a city" in text
    assert "type get_weather = (_: {\ncity: string,\n}) => any;" in text
    assert "type get_time" in text
    assert "Calls to these tools must go to the commentary channel: 'functions'." in text
    roles = [m.author.role for m in parse_prompt(toks)]
    assert roles == [Role.SYSTEM, Role.DEVELOPER, Role.USER]
    _, without = render(req, include_tools=False)
    assert "namespace functions" not in without and "Be brief." in without


def test_tool_round_trip_matches_names_by_id() -> None:
    req = request(
        [
            {"role": "user", "content": "Weather in Oslo, and the time?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning": "I will call both tools.",
                "tool_calls": [
                    {
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {
                        "id": "call_t",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_t", "content": "12:00"},
            {
                "role": "tool",
                "tool_call_id": "call_w",
                "content": [{"type": "text", "text": "-3C"}],
            },
        ],
        tools=[WEATHER, TIME],
    )
    toks, text = render(req)
    msgs = parse_prompt(toks)
    calls = [m for m in msgs if m.author.role == Role.ASSISTANT and m.recipient]
    assert [(m.recipient, m.channel, m.content_type) for m in calls] == [
        ("functions.get_weather", "commentary", "<|constrain|>json"),
        ("functions.get_time", "commentary", "<|constrain|>json"),
    ]
    results = [m for m in msgs if m.author.role == Role.TOOL]
    assert [(m.author.name, m.content[0].text) for m in results] == [  # type: ignore[union-attr]
        ("functions.get_time", "12:00"),
        ("functions.get_weather", "-3C"),
    ]
    assert all(m.recipient == "assistant" and m.channel == "commentary" for m in results)
    # The turn is still open (no final answer yet): its reasoning stays in the prompt.
    assert "<|channel|>analysis<|message|>I will call both tools.<|end|>" in text
    assert text.endswith("<|message|>-3C<|end|><|start|>assistant")


def test_past_reasoning_is_dropped_after_a_final_answer() -> None:
    req = request(
        [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1", "reasoning_content": "secret thoughts"},
            {"role": "user", "content": "Q2"},
        ]
    )
    _, text = render(req)
    assert "secret thoughts" not in text
    assert "<|start|>assistant<|channel|>final<|message|>A1<|end|>" in text


def test_preamble_next_to_tool_calls_goes_to_commentary() -> None:
    req = request(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    )
    _, text = render(req)
    assert "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>" in text


def test_unknown_tool_call_id_raises() -> None:
    req = request(
        [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]
    )
    with pytest.raises(InvalidRequest) as err:
        render(req)
    assert err.value.param == "messages[1].tool_call_id"


def test_prefix_tokens_exact() -> None:
    enc_text = encode_text
    assistant = enc_text("assistant")
    assert assistant == [173781]
    assert analysis_prefix_tokens() == [CHANNEL, 35644, MESSAGE]
    assert final_prefix_tokens() == [START, 173781, CHANNEL, 17196, MESSAGE]
    assert final_prefix_tokens(after_message=False) == [CHANNEL, 17196, MESSAGE]
    named = tool_call_prefix_tokens("get_weather", after_message=True)
    # <|start|>assistant<|channel|>comment|ary| to|=|functions|.get|_weather| |<|constrain|>
    # json<|message|>
    assert named == [
        START, 173781, CHANNEL, 12606, 815, 316, 28, 44580, 775, 170154, 220, CONSTRAIN, 4108,
        MESSAGE,
    ]  # fmt: skip
    assert tool_call_prefix_tokens("f", after_message=False) == [
        CHANNEL, *enc_text("commentary to=functions.f "), CONSTRAIN, 4108, MESSAGE
    ]  # fmt: skip
    open_name = tool_call_prefix_tokens(None, after_message=False)
    assert open_name == [CHANNEL, 12606, 815, 316, 28, 44580, 13]
    assert decode_text(open_name) == "<|channel|>commentary to=functions."


def test_prefixes_are_what_harmony_renders() -> None:
    enc = encoding()

    def rendered(m: Message) -> list[int]:
        return enc.render(m)[:-1]  # without the closing <|end|> / <|call|>

    a = Role.ASSISTANT
    assert final_prefix_tokens() == rendered(
        Message.from_role_and_content(a, "").with_channel("final")
    )
    assert [START, 173781, *analysis_prefix_tokens()] == rendered(
        Message.from_role_and_content(a, "").with_channel("analysis")
    )
    tool_msg = (
        Message.from_role_and_content(a, "")
        .with_channel("commentary")
        .with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json")
    )
    assert tool_call_prefix_tokens("get_weather", after_message=True) == rendered(tool_msg)


def test_forced_prefixes_parse_back() -> None:
    enc = encoding()
    toks = [
        *analysis_prefix_tokens(),
        *encode_text("plan"),
        END,
        *tool_call_prefix_tokens("get_weather", after_message=True),
        *encode_text('{"city":"Rome"}'),
        CALL,
    ]
    msgs = enc.parse_messages_from_completion_tokens(toks, Role.ASSISTANT)
    assert msgs[1].recipient == "functions.get_weather"
    assert msgs[1].content_type == "<|constrain|>json"
    parsed = parse_completion(toks)
    assert parsed.reasoning == "plan" and not parsed.malformed
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [
        ("get_weather", '{"city":"Rome"}')
    ]
    final = [*final_prefix_tokens(after_message=False), *encode_text("{}"), RETURN]
    assert parse_completion(final).content == "{}"
