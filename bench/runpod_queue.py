"""RunPod's job API on 127.0.0.1, as the SDK's worker loop calls it, with timestamps.

`GET /job-take[-batch]/...` hands out jobs (long-polls 0.5 s), `GET /job-stop/...` long-polls
for cancellations (none here), `POST /job-stream/...` receives each yield and `POST
/job-done/...` the result. Same protocol as tests/integration/test_runpod_worker.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class JobTimes:
    submitted: float
    taken: float | None = None
    first_stream: float | None = None
    first_text: float | None = None  # first stream POST carrying generated text
    last_stream: float | None = None
    done: float | None = None
    output: Any = None
    error: Any = None
    stream_posts: int = 0
    streamed: list[Any] = field(default_factory=list)


class JobQueue:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[dict[str, Any]] = []
        self.jobs: dict[str, JobTimes] = {}
        self.polled = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> None:
        self._server = _serve(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def submit(self, job_input: Any) -> str:
        job_id = f"job-{uuid.uuid4().hex[:10]}"
        with self.cond:
            self.jobs[job_id] = JobTimes(submitted=time.perf_counter())
            self.pending.append({"id": job_id, "input": job_input})
            self.cond.notify_all()
        return job_id

    def wait(self, job_id: str, timeout: float = 300.0) -> JobTimes:
        with self.cond:
            if not self.cond.wait_for(lambda: self.jobs[job_id].done is not None, timeout):
                raise TimeoutError(f"{job_id} not done in {timeout}s")
            return self.jobs[job_id]

    # -- called by the HTTP handler -------------------------------------------------
    def take(self, n: int) -> list[dict[str, Any]]:
        self.polled.set()
        with self.cond:
            self.cond.wait_for(lambda: self.pending, timeout=0.5)
            jobs, self.pending = self.pending[:n], self.pending[n:]
            now = time.perf_counter()
            for j in jobs:
                self.jobs[j["id"]].taken = now
            return jobs

    def record(self, kind: str, job_id: str, body: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self.cond:
            t = self.jobs.get(job_id)
            if t is None:
                return
            if kind == "job-stream":
                t.stream_posts += 1
                t.streamed.append(body.get("output"))
                if t.first_stream is None:
                    t.first_stream = now
                if t.first_text is None and _has_text(body.get("output")):
                    t.first_text = now
                t.last_stream = now
            else:
                t.done = now
                t.output = body.get("output")
                t.error = body.get("error")
            self.cond.notify_all()


def _serve(queue: JobQueue) -> ThreadingHTTPServer:
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
                time.sleep(0.5)
                return self.reply(204)
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


def _has_text(output: Any) -> bool:
    """Whether a streamed output (SSE text on the OpenAI route) carries generated text."""
    if not isinstance(output, str):
        return False
    for event in output.split("\n\n"):
        if not event.startswith("data: {"):
            continue
        try:
            chunk = json.loads(event[6:])
        except ValueError:
            continue
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"):
                return True
    return False
