"""HarmonyStreamParser on real gpt-oss token ids, rendered by openai_harmony."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import pytest
from openai_harmony import Message, Role, StreamableParser

from worker.harmony.completion import ParsedCompletion, ParsedToolCall, parse_completion
from worker.harmony.parser import (
    ContentDelta,
    Event,
    HarmonyStreamParser,
    ReasoningDelta,
    ToolCallArgsDelta,
    ToolCallStart,
)
from worker.harmony.tokens import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    MESSAGE,
    RETURN,
    START,
    VOCAB_SIZE,
    encode_text,
    encoding,
    token_bytes,
)

JSON = "<|constrain|>json"


def analysis(text: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("analysis")


def final(text: str) -> Message:
    return Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final")


def call(name: str, args: str) -> Message:
    return (
        Message.from_role_and_content(Role.ASSISTANT, args)
        .with_channel("commentary")
        .with_recipient(f"functions.{name}")
        .with_content_type(JSON)
    )


def completion(*messages: Message) -> list[int]:
    """What the model generates after the prompt's `<|start|>assistant`."""
    enc = encoding()
    toks = [t for m in messages for t in enc.render(m)]
    assert toks[:2] == [START, *encode_text("assistant")]
    toks = toks[2:]
    if toks[-1] == END:
        toks[-1] = RETURN
    return toks


def raw(text: str) -> list[int]:
    return list(encoding().encode(text, allowed_special="all"))


def stream(tokens: Sequence[int], sizes: Sequence[int] = (1,)) -> list[Event]:
    parser = HarmonyStreamParser()
    events: list[Event] = []
    i = k = 0
    while i < len(tokens):
        n = sizes[k % len(sizes)]
        events += parser.feed(tokens[i : i + n])
        i, k = i + n, k + 1
    return events + parser.finish()


def collect(events: Sequence[Event]) -> ParsedCompletion:
    out = ParsedCompletion()
    reasoning, content, calls = [], [], []  # type: ignore[var-annotated]
    for ev in events:
        if isinstance(ev, ReasoningDelta):
            reasoning.append(ev.text)
        elif isinstance(ev, ContentDelta):
            content.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            assert ev.index == len(calls)
            calls.append([ev.name, ""])
        else:
            calls[ev.index][1] += ev.text
    out.reasoning = "".join(reasoning) or None
    out.content = "".join(content) or None
    out.tool_calls = [ParsedToolCall(n, a) for n, a in calls]
    return out


def same(a: ParsedCompletion, b: ParsedCompletion) -> bool:
    return (a.reasoning, a.content, a.tool_calls) == (b.reasoning, b.content, b.tool_calls)


CASES = {
    "plain": completion(final("Hello there!")),
    "reasoning": completion(analysis("Think: 2+2=4. 日本語 🎉"), final("It is **4**. 🫠 龘")),
    "tool": completion(analysis("need weather"), call("get_weather", '{"city": "Paris"}')),
    "parallel": completion(
        analysis("two calls"), call("get_weather", '{"city":"Oslo"}'), call("get_time", "{}")
    ),
    "preamble": completion(
        Message.from_role_and_content(Role.ASSISTANT, "Let me check. ").with_channel("commentary"),
        call("lookup", '{"q":"ꙮ"}'),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_equals_parse_completion(name: str) -> None:
    tokens = CASES[name]
    whole = parse_completion(tokens)
    assert not whole.malformed
    assert same(collect(stream(tokens)), whole)
    rng = random.Random(7)
    for _ in range(20):
        sizes = [rng.randint(1, 9) for _ in range(30)]
        assert same(collect(stream(tokens, sizes)), whole)


@pytest.mark.parametrize("name", sorted(CASES))
def test_agrees_with_openai_harmony(name: str) -> None:
    enc = encoding()
    msgs = enc.parse_messages_from_completion_tokens(CASES[name], Role.ASSISTANT)
    got = parse_completion(CASES[name])
    ours = [(c.name, c.arguments) for c in got.tool_calls]
    theirs = [(m.recipient[10:], m.content[0].text) for m in msgs if m.recipient]  # type: ignore[union-attr, index]
    assert ours == theirs
    text = "".join(m.content[0].text for m in msgs if not m.recipient and m.channel != "analysis")  # type: ignore[union-attr]
    assert (got.content or "") == text


def test_agrees_with_streamable_parser_deltas() -> None:
    tokens = CASES["reasoning"]
    ref = StreamableParser(encoding(), Role.ASSISTANT)
    by_channel: dict[str, str] = {}
    for t in tokens:
        ref.process(t)
        if ref.last_content_delta:
            ch = ref.current_channel or ""
            by_channel[ch] = by_channel.get(ch, "") + ref.last_content_delta
    got = parse_completion(tokens)
    assert (got.reasoning, got.content) == (by_channel["analysis"], by_channel["final"])


def test_results() -> None:
    assert parse_completion(CASES["plain"]).content == "Hello there!"
    r = parse_completion(CASES["reasoning"])
    assert r.reasoning == "Think: 2+2=4. 日本語 🎉" and r.content == "It is **4**. 🫠 龘"
    assert r.num_reasoning_tokens > len(encode_text("Think: 2+2=4. 日本語 🎉"))
    p = parse_completion(CASES["parallel"])
    assert p.content is None and p.reasoning == "two calls"
    assert [(c.name, c.arguments) for c in p.tool_calls] == [
        ("get_weather", '{"city":"Oslo"}'),
        ("get_time", "{}"),
    ]
    pre = parse_completion(CASES["preamble"])
    assert pre.content == "Let me check. " and pre.tool_calls[0].arguments == '{"q":"ꙮ"}'


def test_events_are_coalesced_within_one_feed() -> None:
    events = stream(CASES["parallel"], sizes=[10_000])
    assert [type(e) for e in events] == [
        ReasoningDelta,
        ToolCallStart,
        ToolCallArgsDelta,
        ToolCallStart,
        ToolCallArgsDelta,
    ]
    assert events[1] == ToolCallStart(0, "get_weather") and events[3] == ToolCallStart(
        1, "get_time"
    )


def test_multibyte_split_across_tokens_never_yields_replacement() -> None:
    text = "🫠 𝔘𝔫𝔦 龘 ꙮ 🧑\u200d🚀"
    body = encode_text(text)
    split = [t for t in body if not _decodes(t)]
    assert split, "the sample must contain characters split across tokens"
    tokens = [CHANNEL, *encode_text("final"), MESSAGE, *body, RETURN]
    events = stream(tokens)
    assert all("\ufffd" not in e.text for e in events if isinstance(e, ContentDelta))
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == text


def _decodes(tok: int) -> bool:
    try:
        token_bytes([tok]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    [
        '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":1}<|call|>',
        ' to=functions.f<|channel|>commentary <|constrain|>json<|message|>{"a":1}<|call|>',
        ' to=functions.f<|channel|>commentary json<|message|>{"a":1}<|call|>',
        '<|channel|>commentary to=functions.f<|constrain|>json<|message|>{"a":1}<|call|>',
        '<|channel|>analysis to=functions.f <|constrain|>json<|message|>{"a":1}<|call|>',
    ],
)
def test_both_tool_header_orders(text: str) -> None:
    r = parse_completion(raw(text))
    assert not r.malformed
    assert [(c.name, c.arguments) for c in r.tool_calls] == [("f", '{"a":1}')]
    assert r.content is None and r.reasoning is None


def test_missing_stop_token_keeps_text() -> None:
    cut = CASES["reasoning"][:-3]  # max_tokens reached inside the final message
    r = parse_completion(cut)
    assert r.content and "It is **4**".startswith(r.content[:5]) and not r.malformed
    header_cut = raw("<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|channel|>fin")
    r = parse_completion(header_cut)
    assert (r.reasoning, r.content, r.malformed) == ("hm", None, False)


@pytest.mark.parametrize(
    ("text", "reasoning", "content"),
    [
        (
            "<|channel|>final<|message|>abc<|start|>assistant<|channel|>final<|message|>d<|return|>",
            None,
            "abcd",
        ),
        ("<|channel|>analysis<|message|>ab<|start|>cd<|return|>", "ab", "cd"),
        ("<|channel|>final<|message|>a<|end|><|message|> no header<|return|>", None, "a no header"),
        ("Just plain text.<|return|>", None, "Just plain text."),
        ("Plain text cut by max_tokens", None, "Plain text cut by max_tokens"),
        ("<|channel|>final Hello there<|return|>", None, "Hello there"),
        (
            "<|channel|>analysis<|message|>r<|end|>Answer without header<|return|>",
            "r",
            "Answer without header",
        ),
        (
            "<|channel|>final<|message|>a<|endoftext|>b<|constrain|>c<|reserved_200100|><|return|>",
            None,
            "abc",
        ),
        ("<|channel|>final<|message|>x<|end|><|start|>user<|message|>fake user<|end|>", None, "x"),
    ],
)
def test_malformed_recovers(text: str, reasoning: str | None, content: str | None) -> None:
    r = parse_completion(raw(text))
    assert (r.reasoning, r.content) == (reasoning, content)
    assert r.malformed
    assert same(collect(stream(raw(text))), r)


def test_one_warning_per_parser(caplog: pytest.LogCaptureFixture) -> None:
    bad = raw("<|message|>a<|start|>b<|start|>c<|reserved_200100|><|endoftext|>d<|return|>")
    with caplog.at_level(logging.WARNING, logger="worker.harmony.parser"):
        parse_completion(bad)
    assert len([r for r in caplog.records if r.name == "worker.harmony.parser"]) == 1


def test_random_token_ids_never_raise() -> None:
    rng = random.Random(20251127)
    specials = [RETURN, CONSTRAIN, CHANNEL, START, END, MESSAGE, CALL, 199999, 200100]
    for i in range(200):
        n = rng.randint(0, 300)
        if i % 2:
            toks = [rng.randrange(VOCAB_SIZE) for _ in range(n)]
        else:  # dense in Harmony's own special tokens, to hit every state transition
            toks = [
                rng.choice(specials) if rng.random() < 0.3 else rng.randrange(200) for _ in range(n)
            ]
        whole = parse_completion(toks)
        sizes = [rng.randint(1, 7) for _ in range(16)]
        assert same(collect(stream(toks, sizes)), whole)


def test_message_without_channel_is_content() -> None:
    r = parse_completion(raw("<|message|>no channel<|return|>"))
    assert (r.content, r.malformed) == ("no channel", False)


def test_feed_empty_and_finish_twice() -> None:
    p = HarmonyStreamParser()
    assert p.feed([]) == []
    assert p.finish() == [] and p.finish() == []
