"""Files and Batches over HTTP on a fake engine, driven by the official `openai` client."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.unit.fake_engine import FakeEngine
from tests.unit.test_http_batch import answer
from worker.openai.chat.service import ChatService
from worker.platforms.http_app import create_app
from worker.platforms.http_common import AppState
from worker.platforms.http_files import open_batches

CHAT = "/v1/chat/completions"


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 32, **body}}


def jsonl(*lines: Any) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    state = AppState(service=ChatService(FakeEngine(answer)))
    runner = open_batches(state, tmp_path, concurrency=2)
    state.batches.max_file_bytes = 64 * 1024  # so that "oversized" is small here
    serving = asyncio.create_task(runner.serve())
    app = create_app(state)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with http:
        yield openai.AsyncOpenAI(base_url="http://t/v1", api_key="none", http_client=http,
                                 max_retries=0)
    serving.cancel()
    await runner.close()


def stored(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_upload_batch_poll_and_read_the_output(client: openai.AsyncOpenAI) -> None:
    f = await client.files.create(file=("in.jsonl", io.BytesIO(jsonl(
        line("a"), line("b"), line("c", temperature=9)))), purpose="batch")
    assert f.purpose == "batch" and f.filename == "in.jsonl" and f.bytes > 0
    batch = await client.batches.create(input_file_id=f.id, endpoint=CHAT,
                                        completion_window="24h")
    for _ in range(500):
        batch = await client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        await asyncio.sleep(0.02)
    assert batch.status == "completed" and batch.in_progress_at and batch.completed_at
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    out = [json.loads(x) for x in (await client.files.content(batch.output_file_id)).text
           .splitlines()]
    assert [o["custom_id"] for o in out] == ["a", "b"]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "done"
    err = [json.loads(x) for x in (await client.files.content(batch.error_file_id)).text
           .splitlines()]
    assert err[0]["custom_id"] == "c" and err[0]["response"]["body"]["error"]["param"] == (
        "temperature")
    listed = await client.batches.list()
    assert [b.id for b in listed.data] == [batch.id]
    files = await client.files.list()
    assert {x.id for x in files.data} == {f.id, batch.output_file_id, batch.error_file_id}
    assert (await client.files.delete(f.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(f.id)


@pytest.mark.parametrize(("case", "status", "param"), [
    ("malformed", 400, "file"),
    ("purpose", 400, "purpose"),
    ("oversized", 413, "file"),
    ("unknown-file", 404, "input_file_id"),
    ("endpoint", 400, "endpoint"),
    ("window", 400, "completion_window"),
])
async def test_bad_input_is_a_4xx_naming_the_field_and_stores_nothing(
    client: openai.AsyncOpenAI, tmp_path: Path, case: str, status: int, param: str
) -> None:
    good = jsonl(line("a"))
    before = stored(tmp_path)
    with pytest.raises(openai.APIStatusError) as err:
        if case == "malformed":
            await client.files.create(file=("x.jsonl", io.BytesIO(jsonl(line("a"), "{oops"))),
                                      purpose="batch")
        elif case == "purpose":
            await client.files.create(file=("x.jsonl", io.BytesIO(good)), purpose="fine-tune")
        elif case == "oversized":
            big = jsonl(*(line(f"q{i}", stop=["x" * 4000]) for i in range(40)))
            await client.files.create(file=("x.jsonl", io.BytesIO(big)), purpose="batch")
        elif case == "unknown-file":
            await client.batches.create(input_file_id="file-" + "0" * 32, endpoint=CHAT,
                                        completion_window="24h")
        else:
            f = await client.files.create(file=("x.jsonl", io.BytesIO(good)), purpose="batch")
            before = stored(tmp_path)
            await client.batches.create(
                input_file_id=f.id, endpoint="/v1/embeddings" if case == "endpoint" else CHAT,
                completion_window="24h" if case == "endpoint" else "1h")  # type: ignore[arg-type]
    assert err.value.status_code == status
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    if case == "malformed":
        assert "line 2" in body["message"]
    assert stored(tmp_path) == before
    assert (await client.batches.list()).data == []


async def test_forged_ids_are_not_found(client: openai.AsyncOpenAI) -> None:
    for bad in ("batch_" + "0" * 32, "fc-01JABCDEF", "..%2F..%2Fetc"):
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve(bad)
        with pytest.raises(openai.NotFoundError):
            await client.batches.cancel(bad)
    for bad in ("file-" + "0" * 32, "file-x"):
        with pytest.raises(openai.NotFoundError):
            await client.files.content(bad)


async def test_a_stored_batch_of_text_completions(client: openai.AsyncOpenAI) -> None:
    lines = [{"custom_id": c, "method": "POST", "url": "/v1/completions",
              "body": {"prompt": "Once", "max_tokens": 8, **extra}}
             for c, extra in (("a", {}), ("b", {"suffix": "!"}))]
    f = await client.files.create(file=("in.jsonl", io.BytesIO(jsonl(*lines))), purpose="batch")
    batch = await client.batches.create(input_file_id=f.id, endpoint="/v1/completions",
                                        completion_window="24h")
    for _ in range(500):
        batch = await client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        await asyncio.sleep(0.02)
    assert batch.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
    [out] = [json.loads(x) for x in (await client.files.content(batch.output_file_id)).text
             .splitlines()]
    assert out["response"]["body"]["object"] == "text_completion"
    [err] = [json.loads(x) for x in (await client.files.content(batch.error_file_id)).text
             .splitlines()]
    assert err["response"]["body"]["error"]["param"] == "suffix"
