"""Text completions (`/v1/completions`) on the fake engine: the request, the raw generation
path, the completions logprobs shape, the HTTP route and a batch line; no chat template."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types import Completion

from tests.unit.fake_engine import FakeEngine
from worker.engine.api import SamplingOptions
from worker.harmony import tokens
from worker.openai.batch import run_batch
from worker.openai.chat.service import ChatService
from worker.openai.completions.protocol import parse_completion_request
from worker.openai.completions.service import CompletionsService, completions_service
from worker.openai.errors import InvalidRequest
from worker.platforms.http_app import create_app
from worker.platforms.http_common import AppState

TEXT = " Paris, of course. é"


def script(p: list[int], o: SamplingOptions) -> list[int]:
    special = tokens.encoding().encode("<|channel|>", allowed_special="all")
    return [*tokens.encode_text(TEXT[:6]), *special, *tokens.encode_text(TEXT[6:]),
            tokens.RETURN, *tokens.encode_text(" never")]


def service() -> tuple[CompletionsService, FakeEngine]:
    eng = FakeEngine(script, chunk=2)
    return CompletionsService(eng), eng


async def run(svc: CompletionsService, **body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The non-streamed result and the chunks of the same request streamed."""
    req = parse_completion_request(body)
    whole = await svc.complete(await svc.admit(req))
    req = parse_completion_request({**body, "stream": True})
    chunks = [c async for c in svc.stream(await svc.admit(req))]
    return whole, chunks


def streamed_text(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(c["text"] for ch in chunks for c in ch["choices"] if c["index"] == index)


async def test_raw_text_no_chat_template_and_the_stop_token_is_not_text() -> None:
    svc, eng = service()
    whole, chunks = await run(svc, prompt="<|start|>user<|message|>Capital?", max_tokens=40)
    Completion.model_validate(whole)
    [choice] = whole["choices"]
    assert choice["text"] == TEXT and choice["finish_reason"] == "stop"
    assert streamed_text(chunks) == TEXT and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    prompt, opts = eng.calls[0]
    # the prompt is tokenized as written (special tokens read as special), nothing added
    assert prompt == tokens.encoding().encode("<|start|>user<|message|>Capital?",
                                              allowed_special="all")
    assert set(tokens.text_stop_token_ids()) <= set(opts.stop_token_ids)
    assert whole["usage"]["prompt_tokens"] == len(prompt)


async def test_skip_special_tokens_false_keeps_them_in_the_text() -> None:
    svc, _ = service()
    whole, chunks = await run(svc, prompt="x", skip_special_tokens=False)
    assert whole["choices"][0]["text"] == TEXT[:6] + "<|channel|>" + TEXT[6:]
    assert streamed_text(chunks) == whole["choices"][0]["text"]


async def test_echo_stop_max_tokens_and_n_with_seeds() -> None:
    svc, eng = service()
    whole, chunks = await run(svc, prompt="Q:", echo=True, stop=["course"], n=2, seed=5,
                              max_tokens=30)
    assert [c["text"] for c in whole["choices"]] == ["Q: Paris, of ", "Q: Paris, of "]
    assert streamed_text(chunks, 1) == "Q: Paris, of "
    assert {o.seed for _, o in eng.calls} == {5, 6} and {o.max_tokens for _, o in eng.calls} == {30}


async def test_length_finish_when_max_tokens_runs_out() -> None:
    svc, _ = service()
    whole, _ = await run(svc, prompt="x", max_tokens=2)
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 2


async def test_logprobs_in_the_completions_shape() -> None:
    svc, _ = service()
    whole, chunks = await run(svc, prompt="x", logprobs=2)
    lp = whole["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n = len(lp["tokens"])
    assert n and all(len(lp[k]) == n for k in lp)
    assert lp["tokens"][0] == " Paris" and lp["text_offset"][:2] == [0, 6]
    assert all(tok in top and len(top) <= 3 for tok, top in zip(lp["tokens"], lp["top_logprobs"],
                                                                 strict=True))
    streamed = [t for ch in chunks for c in ch["choices"] if c["logprobs"]
                for t in c["logprobs"]["tokens"]]
    assert streamed == lp["tokens"]
    Completion.model_validate(whole)


async def test_several_prompts_token_ids_and_usage() -> None:
    svc, eng = service()
    whole, chunks = await run(svc, prompt=[[1, 2, 3], [4, 5]], n=2, max_tokens=8,
                              stream_options=None)
    assert [c["index"] for c in whole["choices"]] == [0, 1, 2, 3]
    assert {c["index"] for ch in chunks for c in ch["choices"]} == {0, 1, 2, 3}
    assert whole["usage"]["prompt_tokens"] == 5
    assert sorted(p for p, _ in eng.calls[:4]) == [[1, 2, 3], [1, 2, 3], [4, 5], [4, 5]]
    req = parse_completion_request({"prompt": "x", "stream": True,
                                    "stream_options": {"include_usage": True}})
    last = [c async for c in svc.stream(await svc.admit(req))][-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0


async def test_ignore_eos_generates_the_whole_budget() -> None:
    svc, eng = service()
    await run(svc, prompt="x", max_tokens=9, ignore_eos=True)
    assert eng.calls[0][1].min_tokens == 9


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "x", "suffix": "end"}, "suffix"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", ""]}, "prompt[1]"),
    ({"prompt": [tokens.VOCAB_SIZE]}, "prompt"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "prompt_logprobs": 1}, "prompt_logprobs"),
    ({"prompt": "x", "response_format": {"type": "json_object"}}, "response_format"),
    ({"prompt": "x", "n": 9}, "n"),
    ({"prompt": "x", "max_tokens": 5000}, "max_tokens"),
    ({"prompt": "x", "stop": ["s"] * 17}, "stop"),
    ({"prompt": "x", "model": "other"}, "model"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
])
async def test_what_cannot_be_served_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    svc, _ = service()
    with pytest.raises(Exception) as info:
        await svc.admit(parse_completion_request(body))
    assert getattr(info.value, "param", "").startswith(param), info.value
    assert isinstance(info.value, InvalidRequest) or param == "model"


async def test_best_of_equal_to_n_is_served() -> None:
    svc, _ = service()
    whole, _ = await run(svc, prompt="x", best_of=2, n=2)
    assert len(whole["choices"]) == 2


async def test_http_route_streamed_and_not_and_a_400_naming_suffix() -> None:
    chat = ChatService(FakeEngine(script))
    app = create_app(AppState(service=chat))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 20})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == TEXT
        r = await client.post("/v1/completions", json={"prompt": "x", "stream": True})
        events = [e[6:] for e in r.text.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == TEXT
        r = await client.post("/v1/completions", json={"prompt": "x", "suffix": "!"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"


async def test_a_batch_line_may_be_a_completion() -> None:
    chat = ChatService(FakeEngine(script))
    assert completions_service(chat) is completions_service(chat)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions",
            "body": {"prompt": "x", "max_tokens": 20}}
    bad = {**line, "custom_id": "b", "body": {"prompt": "x", "suffix": "!"}}
    out = await run_batch(chat, [line, bad], max_lines=4)
    assert out[0]["response"]["body"]["object"] == "text_completion"
    assert out[0]["response"]["body"]["choices"][0]["text"] == TEXT
    assert out[1]["response"]["body"]["error"]["param"] == "suffix"
