"""RunPod's side of the job protocol, served on 127.0.0.1, and worker processes to drive.

The queue plays what the SDK calls: `GET /job-take[-batch]/<worker>` hands out
jobs, `GET /job-stop/<worker>` long-polls for jobs to cancel, `POST
/job-stream/...` receives each yield, `POST /job-done/...` the final result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from .conftest import START_TIMEOUT, engine_env, stop

RUNNING: list[subprocess.Popen[bytes]] = []  # worker processes started here


class JobQueue:
    """RunPod's job API, as the SDK calls it; records everything it receives."""

    def __init__(self) -> None:
        self.url = ""
        self.cond = threading.Condition()
        self.pending: list[dict[str, Any]] = []
        self.to_stop: list[str] = []
        self.takes: list[tuple[int, list[str]]] = []  # (batch_size asked, job ids given)
        self.streamed: dict[str, list[tuple[float, Any]]] = {}
        self.done: dict[str, tuple[float, dict[str, Any]]] = {}
        self.polled = threading.Event()

    def submit(self, job_input: Any) -> str:
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        with self.cond:
            self.pending.append({"id": job_id, "input": job_input})
            self.cond.notify_all()
        return job_id

    def submit_all(self, inputs: list[Any]) -> list[str]:
        with self.cond:  # all at once, so one batch take can fetch them together
            ids = [f"job-{uuid.uuid4().hex[:8]}" for _ in inputs]
            self.pending += [{"id": i, "input": x} for i, x in zip(ids, inputs, strict=True)]
            self.cond.notify_all()
        return ids

    def cancel(self, job_id: str) -> None:
        with self.cond:
            self.to_stop.append(job_id)
            self.cond.notify_all()

    def result(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        with self.cond:
            if not self.cond.wait_for(lambda: job_id in self.done, timeout):
                raise TimeoutError(f"{job_id} not done in {timeout}s")
            return self.done[job_id][1]

    def wait_streamed(self, job_id: str, timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.streamed.get(job_id), timeout)

    def outputs(self, job_id: str) -> list[Any]:
        return [body["output"] for _, body in self.streamed.get(job_id, [])]

    # -- what the HTTP handler calls ------------------------------------------------
    def take(self, n: int) -> list[dict[str, Any]]:
        self.polled.set()
        with self.cond:
            self.cond.wait_for(lambda: self.pending, timeout=0.5)
            jobs, self.pending = self.pending[:n], self.pending[n:]
            if jobs:
                self.takes.append((n, [j["id"] for j in jobs]))
            return jobs

    def stops(self) -> list[str]:
        with self.cond:
            self.cond.wait_for(lambda: self.to_stop, timeout=0.5)
            ids, self.to_stop = self.to_stop, []
            return ids

    def record(self, kind: str, job_id: str, body: dict[str, Any]) -> None:
        with self.cond:
            if kind == "job-stream":
                self.streamed.setdefault(job_id, []).append((time.monotonic(), body))
            else:
                self.done[job_id] = (time.monotonic(), body)
            self.cond.notify_all()


def serve_queue(queue: JobQueue) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            kind = url.path.split("/")[1]
            if kind == "job-stop":
                ids = queue.stops()
                return self.reply(200, {"jobsToStop": ids}) if ids else self.reply(204)
            n = int(parse_qs(url.query).get("batch_size", ["1"])[0])
            jobs = queue.take(n)
            if not jobs:
                return self.reply(204)
            return self.reply(200, jobs if kind == "job-take-batch" else jobs[0])

        def do_POST(self) -> None:
            parts = urlparse(self.path).path.split("/")  # /job-done/<worker>/<job id>
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            queue.record(parts[1], parts[3], body)
            self.reply(200, {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(model: Path, tmp: Path, argv: list[str], **env: str) -> Worker:
    log = tmp / "worker.log"
    full_env = engine_env(tmp, MODEL=str(model), SERVED_MODEL_NAME="tiny-random",
                          RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", RUNPOD_SKIP_GPU_CHECK="true",
                          RUNPOD_POD_ID="local", **env)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker", "runpod", *argv], env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)
    RUNNING.append(proc)
    return Worker(proc, log)


@contextmanager
def queue_worker(model: Path, tmp: Path, **env: str) -> Iterator[tuple[JobQueue, Worker]]:
    """A queue on 127.0.0.1 and `python -m worker runpod` polling it, up and ready."""
    queue = JobQueue()
    server = serve_queue(queue)
    url = queue.url = f"http://127.0.0.1:{server.server_address[1]}"
    w = start_worker(
        model, tmp, [],
        RUNPOD_WEBHOOK_GET_JOB=f"{url}/job-take/$ID?gpu=test",
        RUNPOD_WEBHOOK_POST_OUTPUT=f"{url}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
        RUNPOD_WEBHOOK_POST_STREAM=f"{url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
        **env,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not queue.polled.wait(0.5):  # the SDK asks for jobs only once the engine is up
            if w.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{w.log_text()[-4000:]}")
        yield queue, w
    finally:
        stop(w.proc)
        server.shutdown()


def error_of(done: dict[str, Any]) -> dict[str, Any]:
    """The JSON error of a FAILED job (never COMPLETED-with-nothing, never a repr)."""
    assert "output" not in done or not done["output"], done
    return json.loads(done["error"])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
