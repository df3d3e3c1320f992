"""run_batch on a fake engine: order, bad lines failing alone, concurrency, the OpenAI shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from openai_harmony import Message, Role

from tests.unit.fake_engine import FakeEngine
from worker.engine.api import GenerationDelta, SamplingOptions
from worker.harmony.tokens import RETURN, decode_text, encode_text, encoding
from worker.openai.batch import run_batch
from worker.openai.chat.service import ChatService
from worker.openai.errors import PayloadTooLarge


def answer(text: str) -> list[int]:
    m = Message.from_role_and_content(Role.ASSISTANT, text).with_channel("final")
    toks = encoding().render(m)
    return toks[len(encode_text("assistant")) + 1:-1] + [RETURN]


class CountingEngine(FakeEngine):
    """Records how many requests were generating at once."""

    def __init__(self) -> None:
        # Echo the last user word, so each output shows which line it answers.
        super().__init__(self.echo, chunk=1)
        self.peak = 0

    @staticmethod
    def echo(prompt: list[int], _: SamplingOptions) -> list[int]:
        text = decode_text(prompt)
        word = text.split("<|message|>")[-1].split("<|end|>")[0]
        return answer(f"echo {word}")

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncIterator[GenerationDelta]:
        async for delta in super().generate(request_id, prompt_token_ids, options):
            self.peak = max(self.peak, len(self.running))
            await asyncio.sleep(0.001)
            yield delta


def line(custom_id: Any, word: str = "hi", **over: Any) -> dict[str, Any]:
    base = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": word}], "max_tokens": 64}}
    return {**base, **over}


@pytest.fixture
def svc() -> ChatService:
    return ChatService(CountingEngine(), today=lambda: "2026-11-27")


async def test_twenty_lines_two_bad_in_order_all_good_lines_concurrent(svc: ChatService) -> None:
    lines = [line(f"req-{i}", f"w{i}") for i in range(20)]
    lines[4] = line(None, "w4")  # no custom_id
    lines[13]["body"] = {"messages": [{"role": "user", "content": "w13"}], "temperature": 9}
    out = await run_batch(svc, lines, max_lines=100)

    assert len(out) == 20
    assert [o["custom_id"] for o in out] == [None if i == 4 else f"req-{i}" for i in range(20)]
    for i, o in enumerate(out):
        assert o["id"].startswith("batch_req_") and o["response"]["request_id"]
        if i in (4, 13):
            assert o["response"]["status_code"] == 400
            err = o["response"]["body"]["error"]
            assert err["type"] == "invalid_request_error"
            assert err["param"] == ("custom_id" if i == 4 else "temperature")
            assert o["error"] == {"code": "invalid_request_error", "message": err["message"]}
        else:
            assert o["error"] is None and o["response"]["status_code"] == 200
            body = o["response"]["body"]
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"] == f"echo w{i}"
    assert svc.engine.peak == 18  # type: ignore[attr-defined]


@pytest.mark.parametrize(("bad", "param"), [
    ("not a line", None),
    (line("x", method="GET"), "method"),
    (line("x", url="/v1/embeddings"), "url"),
    (line("x", body="hi"), "body"),
    (line("x", body={"messages": [{"role": "user", "content": "hi"}], "stream": True}),
     "stream"),
    (line(""), "custom_id"),
    (line(7), "custom_id"),
])
async def test_each_kind_of_bad_line_fails_alone(svc: ChatService, bad: Any,
                                                 param: str | None) -> None:
    out = await run_batch(svc, [line("ok-1"), bad, line("ok-2")], max_lines=10)
    assert [o["response"]["status_code"] for o in out] == [200, 400, 200]
    assert out[1]["response"]["body"]["error"]["param"] == param


async def test_duplicate_custom_ids_fail_every_copy(svc: ChatService) -> None:
    out = await run_batch(svc, [line("a"), line("b"), line("a")], max_lines=10)
    assert [o["response"]["status_code"] for o in out] == [400, 200, 400]
    assert "unique" in out[0]["error"]["message"]


async def test_service_errors_keep_their_status(svc: ChatService) -> None:
    out = await run_batch(svc, [line("a", body={"model": "gpt-5", "messages": [
        {"role": "user", "content": "hi"}]})], max_lines=10)
    assert out[0]["response"]["status_code"] == 404
    assert out[0]["error"]["code"] == "model_not_found"


async def test_too_many_lines_fails_the_whole_batch(svc: ChatService) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        await run_batch(svc, [line(str(i)) for i in range(3)], max_lines=2)
    assert info.value.param == "batch"
