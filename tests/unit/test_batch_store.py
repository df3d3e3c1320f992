"""The batch store on a directory: files, journal, lease and the runner, with no engine."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from worker.openai.batches.api import BatchAPI
from worker.openai.batches.runner import BatchRunner
from worker.openai.batches.store import BatchStore, Lease
from worker.openai.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from worker.openai.files import disk
from worker.openai.files.store import FileStore
from worker.openai.files.upload import store_batch_file

CHAT = "/v1/chat/completions"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def jsonl(*lines: Any) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(x) + "\n" for x in lines).encode())


def line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"messages": [{"role": "user", "content": "hi"}], **body}}


def stored(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(tmp_path: Path, clock: Clock) -> FileStore:
    return FileStore(tmp_path, clock=clock)


def upload(files: FileStore, *lines: Any) -> dict[str, Any]:
    return store_batch_file(files, jsonl(*lines), filename="in.jsonl", purpose="batch",
                            endpoints=(CHAT,))


# -- files ---------------------------------------------------------------------------------
def test_upload_stores_the_lines_and_lists_them(files: FileStore) -> None:
    obj = upload(files, line("a"), line("b"))
    assert obj["purpose"] == "batch" and obj["object"] == "file" and obj["id"].startswith("file-")
    assert files.get(obj["id"]) == obj
    assert files.record(obj["id"])["info"] == {"lines": 2, "urls": [CHAT]}
    body = files.content_path(obj["id"]).read_bytes().splitlines()
    assert [json.loads(x)["custom_id"] for x in body] == ["a", "b"]
    listed = files.list_page()
    assert [f["id"] for f in listed["data"]] == [obj["id"]] and listed["has_more"] is False


@pytest.mark.parametrize(("lines", "message"), [
    ([line("a"), "not json"], "file line 2: not a JSON object"),
    ([line("a"), line("a")], "file line 2: custom_id 'a' is used twice"),
    ([{**line("a"), "method": "GET"}], "file line 1: method must be POST"),
    ([{**line("a"), "url": "/v1/embeddings"}], "file line 1: url '/v1/embeddings'"),
    ([{**line("a"), "body": []}], "file line 1: body must be the request object"),
    ([{**line("a"), "extra": 1}], "file line 1: unknown field 'extra'"),
    ([line("a", stream=True)], "file line 1: body.stream must be false"),
    ([{**line("a"), "custom_id": ""}], "file line 1: custom_id must be a non-empty string"),
])
def test_a_bad_line_fails_the_upload_and_nothing_is_stored(
    files: FileStore, tmp_path: Path, lines: list[Any], message: str
) -> None:
    before = stored(tmp_path)
    with pytest.raises(InvalidRequest) as err:
        upload(files, *lines)
    assert err.value.param == "file" and err.value.message.startswith(message)
    assert stored(tmp_path) == before


def test_broken_json_names_its_line(files: FileStore, tmp_path: Path) -> None:
    src = io.BytesIO(json.dumps(line("a")).encode() + b"\n{\"custom_id\": \n")
    with pytest.raises(InvalidRequest, match="file line 2: not valid JSON"):
        store_batch_file(files, src, filename="x", purpose="batch", endpoints=(CHAT,))
    assert stored(tmp_path) == []


def test_upload_limits_and_purpose(files: FileStore, tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge) as big:
        store_batch_file(files, jsonl(line("a"), line("b")), filename="x", purpose="batch",
                         endpoints=(CHAT,), max_bytes=100)
    assert big.value.param == "file"
    with pytest.raises(PayloadTooLarge, match="more than 1 requests"):
        store_batch_file(files, jsonl(line("a"), line("b")), filename="x", purpose="batch",
                         endpoints=(CHAT,), max_lines=1)
    with pytest.raises(InvalidRequest) as purpose:
        store_batch_file(files, jsonl(line("a")), filename="x", purpose="fine-tune",
                         endpoints=(CHAT,))
    assert purpose.value.param == "purpose"
    with pytest.raises(InvalidRequest, match="file is empty"):
        store_batch_file(files, io.BytesIO(b"\n\n"), filename="x", purpose="batch",
                         endpoints=(CHAT,))
    assert stored(tmp_path) == []


def test_ids_we_did_not_issue_are_not_found(files: FileStore, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    for bad in ("../secret", "file-../../secret", "file-" + "0" * 32, "batch_x"):
        with pytest.raises(NotFound):
            files.get(bad)
    batches = BatchStore(tmp_path)
    for bad in ("../files", "batch_" + "0" * 32, "fc-01234", "batch_../../secret"):
        with pytest.raises(NotFound):
            batches.record(bad)


def test_expired_files_are_swept_but_inputs_in_use_are_kept(files: FileStore,
                                                            clock: Clock) -> None:
    a, b = upload(files, line("a")), upload(files, line("b"))
    clock.now += 31 * 86_400
    assert files.sweep(keep={b["id"]}) == [a["id"]]
    with pytest.raises(NotFound):
        files.get(a["id"])
    assert files.get(b["id"])["id"] == b["id"]


def test_list_pages_like_openai(files: FileStore, clock: Clock) -> None:
    ids = []
    for i in range(5):
        clock.now += 1
        ids.append(upload(files, line(f"x{i}"))["id"])
    first = files.list_page(limit=2)
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = files.list_page(limit=10, after=first["last_id"])
    assert [f["id"] for f in rest["data"]] == ids[::-1][2:] and not rest["has_more"]
    with pytest.raises(InvalidRequest) as err:
        files.list_page(after="file-nope")
    assert err.value.param == "after"


# -- journal and lease ----------------------------------------------------------------------
def test_a_torn_journal_line_is_dropped_and_cut_before_the_next(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    disk.append_line(path, b'{"custom_id": "a"}')
    with path.open("ab") as f:
        f.write(b'{"custom_id": "b", "resp')  # the worker died mid-write
    assert [json.loads(x)["custom_id"] for x in disk.read_lines(path)] == ["a"]
    assert disk.repair_tail(path) > 0
    disk.append_line(path, b'{"custom_id": "c"}')
    assert [json.loads(x)["custom_id"] for x in disk.read_lines(path)] == ["a", "c"]


def test_one_lease_holder_and_a_takeover_after_expiry(tmp_path: Path, clock: Clock) -> None:
    a = Lease(tmp_path, {"id": "a", "host": "h1", "pid": 1}, 30, clock)
    b = Lease(tmp_path, {"id": "b", "host": "h2", "pid": 1}, 30, clock)
    assert a.acquire() is None and a.held()
    assert b.acquire() == {"id": "a", "host": "h1", "pid": 1, "expires_at": clock.now + 30}
    clock.now += 20
    assert a.renew()
    clock.now += 20  # a renewed: still a's
    assert b.acquire() is not None
    clock.now += 31  # a stopped renewing
    assert not a.held()
    assert b.acquire() is None and b.held()
    assert not a.renew()  # a sees the newer lease and stops
    clock.now -= 100  # even with a's own expiry not yet passed, the newer lease wins
    assert not a.held() and b.held()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_at_once(tmp_path: Path,
                                                                 clock: Clock) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = os.uname().nodename
    dead = Lease(tmp_path, {"id": "dead", "host": host, "pid": int(gone.stdout)}, 30, clock)
    assert dead.acquire() is None
    me = Lease(tmp_path, {"id": "me", "host": host, "pid": os.getpid()}, 30, clock)
    assert me.acquire() is None and me.held()


# -- the runner -----------------------------------------------------------------------------
def output(line: dict[str, Any]) -> dict[str, Any]:
    body = line["body"]
    if body.get("temperature", 0) > 2:
        return {"id": "r", "custom_id": line["custom_id"],
                "response": {"status_code": 400, "request_id": "q", "body": {"error": {}}},
                "error": {"code": "invalid_request_error", "message": "temperature"}}
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return {"id": "r", "custom_id": line["custom_id"], "error": None,
            "response": {"status_code": 200, "request_id": "q",
                         "body": {"echo": line["custom_id"], "usage": usage}}}


class Lines:
    """A line runner that records what ran and can hold lines back."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.two_started = asyncio.Event()

    async def __call__(self, line: dict[str, Any]) -> dict[str, Any]:
        self.ran.append(line["custom_id"])
        if len(self.ran) == 2:
            self.two_started.set()
        await self.gate.wait()
        return output(line)


def setup(tmp_path: Path, clock: Clock, lines: Lines, **kw: Any) -> tuple[BatchAPI, BatchRunner]:
    files, batches = FileStore(tmp_path, clock=clock), BatchStore(tmp_path, clock=clock)
    runner = BatchRunner(batches, files, lines, concurrency=2, clock=clock, **kw)
    api = BatchAPI(batches, files, endpoints=(CHAT,), launch=runner.kick, adopt=runner.kick,
                   clock=clock)
    return api, runner


def content(api: BatchAPI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in api.files.content_path(file_id).read_bytes().splitlines()]


async def test_a_batch_runs_every_line_once_and_writes_output_and_errors(
    tmp_path: Path, clock: Clock
) -> None:
    lines = Lines()
    api, runner = setup(tmp_path, clock, lines)
    f = upload(api.files, *(line(f"q{i}") for i in range(5)), line("bad", temperature=9))
    batch = api.create({"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h",
                        "metadata": {"k": "v"}})
    assert batch["status"] == "validating" and batch["request_counts"]["total"] == 6
    await runner.run(batch["id"])
    done = api.retrieve(batch["id"])
    assert done["status"] == "completed" and done["metadata"] == {"k": "v"}
    assert done["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    assert done["usage"]["input_tokens"] == 15 and done["usage"]["output_tokens"] == 10
    assert [o["custom_id"] for o in content(api, done["output_file_id"])] == [
        f"q{i}" for i in range(5)]
    assert [o["custom_id"] for o in content(api, done["error_file_id"])] == ["bad"]
    assert sorted(lines.ran) == sorted([*(f"q{i}" for i in range(5)), "bad"])
    assert "info" not in done and api.files.get(done["output_file_id"])["purpose"] == "batch_output"


async def test_a_resumed_batch_runs_only_what_the_journal_lacks(tmp_path: Path,
                                                                clock: Clock) -> None:
    lines = Lines()
    api, runner = setup(tmp_path, clock, lines)
    f = upload(api.files, *(line(f"q{i}") for i in range(4)))
    batch = api.create({"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"})
    for cid in ("q0", "q2"):  # journaled before a crash, q2 twice
        api.batches.append(batch["id"], output(line(cid)))
    api.batches.append(batch["id"], output(line("q2")))
    with (api.batches.dir / batch["id"] / "journal.jsonl").open("ab") as j:
        j.write(b'{"custom_id": "q1", "resp')  # torn
    await runner.run(batch["id"])
    assert sorted(lines.ran) == ["q1", "q3"]
    done = api.retrieve(batch["id"])
    assert [o["custom_id"] for o in content(api, done["output_file_id"])] == [
        "q0", "q1", "q2", "q3"]


async def test_cancel_stops_the_rest_and_keeps_what_finished(tmp_path: Path,
                                                             clock: Clock) -> None:
    lines = Lines()
    api, runner = setup(tmp_path, clock, lines)
    f = upload(api.files, *(line(f"q{i}") for i in range(10)))
    batch = api.create({"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"})
    lines.gate.clear()
    task = asyncio.create_task(runner.run(batch["id"]))
    await asyncio.wait_for(lines.two_started.wait(), 30)  # two in flight (concurrency 2)
    api.batches.append(batch["id"], output(line("q9")))  # one finished meanwhile
    assert api.cancel(batch["id"])["status"] == "cancelling"
    await asyncio.wait_for(task, 30)
    done = api.retrieve(batch["id"])
    assert done["status"] == "cancelled" and done["cancelled_at"] and done["cancelling_at"]
    assert [o["custom_id"] for o in content(api, done["output_file_id"])] == ["q9"]
    assert done["request_counts"] == {"total": 10, "completed": 1, "failed": 0}
    assert len(lines.ran) == 2  # the in-flight ones were stopped, the rest never started
    assert api.cancel(batch["id"])["status"] == "cancelled"  # again: the same answer


async def test_a_finished_batch_cannot_be_cancelled_and_its_input_is_free(
    tmp_path: Path, clock: Clock
) -> None:
    api, runner = setup(tmp_path, clock, Lines())
    f = upload(api.files, line("a"))
    batch = api.create({"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"})
    with pytest.raises(Conflict) as busy:
        api.delete_file(f["id"])
    assert busy.value.param == "file_id"
    await runner.run(batch["id"])
    with pytest.raises(Conflict) as err:
        api.cancel(batch["id"])
    assert err.value.status_code == 409 and err.value.param == "batch_id"
    assert api.delete_file(f["id"]) == {"id": f["id"], "object": "file", "deleted": True}


async def test_an_expired_batch_lists_the_lines_not_run(tmp_path: Path, clock: Clock) -> None:
    lines = Lines()
    api, runner = setup(tmp_path, clock, lines)
    f = upload(api.files, line("a"), line("b"))
    batch = api.create({"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"})
    api.batches.append(batch["id"], output(line("a")))
    clock.now += 86_401
    await runner.run(batch["id"])
    done = api.retrieve(batch["id"])
    assert done["status"] == "expired" and lines.ran == []
    errors = content(api, done["error_file_id"])
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("b", "batch_expired")]
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}


async def test_a_batch_leased_elsewhere_is_not_run(tmp_path: Path, clock: Clock) -> None:
    lines = Lines()
    api, runner = setup(tmp_path, clock, lines)
    f = upload(api.files, line("a"))
    batch = api.create({"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"})
    other = Lease(api.batches.path(batch["id"]), {"id": "other", "host": "x", "pid": 1}, 30,
                  clock)
    assert other.acquire() is None
    await runner.run(batch["id"])
    assert lines.ran == [] and api.retrieve(batch["id"])["status"] == "validating"
    clock.now += 31  # the other worker died
    await runner.run(batch["id"])
    assert lines.ran == ["a"] and api.retrieve(batch["id"])["status"] == "completed"


@pytest.mark.parametrize(("body", "param"), [
    ({"endpoint": CHAT, "completion_window": "24h"}, "input_file_id"),
    ({"input_file_id": "file-" + "0" * 32, "endpoint": CHAT, "completion_window": "24h"},
     "input_file_id"),
    ({"input_file_id": "F", "endpoint": "/v1/embeddings", "completion_window": "24h"},
     "endpoint"),
    ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "1h"}, "completion_window"),
    ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h", "model": "x"},
     "model"),
    ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h",
      "metadata": {"k": 1}}, "metadata.k"),
    ({"input_file_id": "F", "endpoint": CHAT, "completion_window": "24h",
      "output_expires_after": {"anchor": "created_at", "seconds": 5}},
     "output_expires_after.seconds"),
])
def test_bad_create_params_name_the_field_and_store_nothing(
    tmp_path: Path, clock: Clock, body: dict[str, Any], param: str
) -> None:
    api, _ = setup(tmp_path, clock, Lines())
    f = upload(api.files, line("a"))
    body = {k: (f["id"] if v == "F" else v) for k, v in body.items()}
    with pytest.raises((InvalidRequest, NotFound)) as err:
        api.create(body)
    assert err.value.param == param
    assert list(api.batches.records()) == []


def test_usage_sums_every_apis_usage_shape() -> None:
    from worker.openai.batches.outputs import usage

    chat = {"response": {"body": {"usage": {
        "prompt_tokens": 10, "completion_tokens": 5,
        "completion_tokens_details": {"reasoning_tokens": 2}}}}}
    responses = {"response": {"body": {"usage": {
        "input_tokens": 7, "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 1}}}}}
    failed = {"response": None, "error": {"code": "batch_expired"}}
    u = usage([chat, responses, failed])
    assert (u["input_tokens"], u["output_tokens"], u["total_tokens"]) == (17, 9, 26)
    assert u["output_tokens_details"]["reasoning_tokens"] == 3
