"""Batches through the official `openai` client on real servers (tiny random model, CPU vLLM),
durable on one BATCH_DIR: end to end, two servers on one directory, cancel mid-batch, and
a server SIGKILLed mid-batch then started again on the same directory.

The tests share servers and run in file order: `a` (and later `b`) serve one directory;
the last test kills `a` and starts it again. Deadlines are generous; no assertion depends
on how fast the engine is, only on what each batch reports and writes.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import START_TIMEOUT, Server, engine_env, free_port, wait_ready

MODEL = "tiny-random"
CHAT = "/v1/chat/completions"
DEADLINE = 600.0


def start(model: Path, tmp: Path, batch_dir: Path, name: str) -> Server:
    """A server in a process group of its own (so a SIGKILL takes its engine core too)."""
    port = free_port()
    env = engine_env(tmp / name, MODEL=str(model), HOST="127.0.0.1", PORT=str(port),
                     SERVED_MODEL_NAME=MODEL, BATCH_DIR=str(batch_dir))
    log = tmp / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    wait_ready(server, START_TIMEOUT)
    return server


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@dataclass
class Fleet:
    model: Path
    tmp: Path
    batch_dir: Path
    servers: dict[str, Server]

    def client(self, name: str = "a") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.servers[name].base_url, api_key="none",
                             max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def fleet(random_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("batches")
    batch_dir = tmp / "volume" / "batches"
    f = Fleet(random_model, tmp, batch_dir, {})
    f.servers["a"] = start(random_model, tmp, batch_dir, "a")
    try:
        yield f
    finally:
        for server in f.servers.values():
            stop(server)


def requests(n: int, prefix: str, max_tokens: int = 24, **extra: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "method": "POST", "url": CHAT,
             "body": {"model": MODEL, "max_tokens": max_tokens, "temperature": 0.0, "seed": i,
                      "messages": [{"role": "user", "content": f"Question {i}"}], **extra}}
            for i in range(n)]


def submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> Any:
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint=CHAT,
                                 completion_window="24h", metadata={"test": "batches"})


def wait_for(client: openai.OpenAI, batch_id: str, until: Any, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if until(batch):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not get there in {timeout}s: {batch}")


def finished(batch: Any) -> bool:
    return batch.status in ("completed", "failed", "cancelled", "expired")


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_official_client_end_to_end(fleet: Fleet) -> None:
    client = fleet.client()
    lines = requests(6, "ok-") + requests(1, "bad-", temperature=9)
    lines += [{**requests(1, "ghost-")[0], "body": {**requests(1, "g")[0]["body"],
                                                    "model": "no-such-model"}}]
    batch = submit(client, lines)
    assert batch.status == "validating" and batch.request_counts.total == 8
    done = wait_for(client, batch.id, finished)
    assert done.status == "completed", done
    assert done.request_counts.completed == 6 and done.request_counts.failed == 2
    assert done.metadata == {"test": "batches"} and done.usage.output_tokens > 0
    out = lines_of(client, done.output_file_id)
    assert [o["custom_id"] for o in out] == [f"ok-{i}" for i in range(6)]
    for o in out:
        body = o["response"]["body"]
        assert o["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] > 0
    errors = {e["custom_id"]: e for e in lines_of(client, done.error_file_id)}
    assert errors["bad-0"]["response"]["status_code"] == 400
    assert errors["bad-0"]["response"]["body"]["error"]["param"] == "temperature"
    assert errors["ghost-0"]["response"]["status_code"] == 404
    assert errors["ghost-0"]["response"]["body"]["error"]["code"] == "model_not_found"
    # the output file is a file like any other; the batch is in the list
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert batch.id in [b.id for b in client.batches.list(limit=100)]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_" + "0" * 32)


def test_two_servers_on_one_directory_run_a_batch_once(fleet: Fleet) -> None:
    fleet.servers["b"] = start(fleet.model, fleet.tmp, fleet.batch_dir, "b")
    a, b = fleet.client("a"), fleet.client("b")
    batch = submit(a, requests(24, "two-", max_tokens=32))
    # b sees the batch (same directory) and polls it: it must not run it as well
    seen = wait_for(b, batch.id, lambda x: x.status == "in_progress" or finished(x))
    done = wait_for(b, batch.id, finished)
    assert done.status == "completed" and done.request_counts.completed == 24
    ids = [o["custom_id"] for o in lines_of(b, done.output_file_id)]
    assert sorted(ids) == sorted(f"two-{i}" for i in range(24)) and len(set(ids)) == 24
    runs = [name for name, s in fleet.servers.items()
            if f"batch {batch.id}: running" in s.log_text()]
    assert len(runs) == 1, runs
    if seen.status == "in_progress":  # b was asked while a ran it, and declined
        other = "b" if runs == ["a"] else "a"
        assert f"batch {batch.id} is run by worker" in fleet.servers[other].log_text()
    stop(fleet.servers.pop("b"))


def test_cancel_mid_batch_keeps_what_finished(fleet: Fleet) -> None:
    client = fleet.client()
    batch = submit(client, requests(200, "cancel-", max_tokens=64))
    wait_for(client, batch.id, lambda x: x.request_counts.completed >= 1 or finished(x))
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled"), cancelling
    done = wait_for(client, batch.id, finished)
    assert done.status == "cancelled" and done.cancelled_at is not None
    ids = [o["custom_id"] for o in lines_of(client, done.output_file_id)]
    assert 1 <= len(ids) == len(set(ids)) == done.request_counts.completed < 200
    assert set(ids) <= {f"cancel-{i}" for i in range(200)}
    # nothing of it runs after the cancel: its in-flight lines were aborted, no more start
    deadline = time.monotonic() + 60
    while (busy := httpx.get(f"{fleet.servers['a'].url}/ready", timeout=10).json()
           )["engine_requests"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert busy["engine_requests"] == 0, busy
    assert client.batches.retrieve(batch.id).request_counts.completed == len(ids)


def test_sigkill_mid_batch_then_restart_completes_every_line_once(
    fleet: Fleet, reliability: dict[str, object]
) -> None:
    client = fleet.client()
    total = 120
    batch = submit(client, requests(total, "crash-", max_tokens=48))
    before = wait_for(client, batch.id,
                      lambda x: (x.request_counts.completed >= 2) or finished(x))
    server = fleet.servers.pop("a")
    os.killpg(server.proc.pid, signal.SIGKILL)  # the container dies: server and engine core
    server.proc.wait()
    killed_at = time.monotonic()
    journal = fleet.batch_dir / "batches" / batch.id / "journal.jsonl"
    at_kill = journal.read_bytes().count(b"\n")  # complete lines (a torn one is not counted)
    assert before.status == "in_progress" and at_kill < total, (before, at_kill)
    fleet.servers["a"] = start(fleet.model, fleet.tmp, fleet.batch_dir, "a")
    restarted = time.monotonic() - killed_at
    client = fleet.client()
    done = wait_for(client, batch.id, finished)
    assert done.status == "completed", done
    out = lines_of(client, done.output_file_id)
    ids = [o["custom_id"] for o in out]
    assert ids == [f"crash-{i}" for i in range(total)]  # every line, once, in input order
    assert done.request_counts.completed == total and done.request_counts.failed == 0
    resumed = fleet.servers["a"].log_text()
    assert f"batch {batch.id}: running {total - at_kill} of {total} lines" in resumed
    reliability["batch_crash_resume"] = {
        "lines": total, "journaled_at_kill": at_kill, "restart_to_ready_s": round(restarted, 1),
        "final_lines": len(ids), "unique_custom_ids": len(set(ids)),
    }
