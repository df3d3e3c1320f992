"""`python -m worker bench` against a stub OpenAI-compatible server on 127.0.0.1.

The stub streams a fixed SSE answer with known delays and token counts, so the numbers the
command prints can be checked: output tokens exactly, TTFT and ITL against the delays,
tok/s against tokens / wall time, and the cost per million tokens against the formula.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from worker.bench.cli import base_url, main
from worker.bench.loadgen import RequestRecord, percentile, summarize

FIRST_DELAY = 0.12  # request -> first content chunk
GAP = 0.03  # between content chunks
TOKENS = 5  # content chunks per answer


@dataclass
class Stub:
    url: str
    usage: bool = True
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [
                {"id": "stub-model", "object": "model", "created": 0, "owned_by": "test"}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.bodies.append(req)
            state.auth.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            head = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                    "model": req["model"]}

            def send(choices: list[Any], usage: Any = None) -> None:
                data = json.dumps({**head, "choices": choices, "usage": usage})
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            send([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
            time.sleep(FIRST_DELAY)
            for i in range(TOKENS):
                if i:
                    time.sleep(GAP)
                send([{"index": 0, "delta": {"content": f" w{i}"}}])
            send([{"index": 0, "delta": {}, "finish_reason": "length"}])
            if state.usage:
                send([], {"prompt_tokens": 7, "completion_tokens": TOKENS + 3,
                          "total_tokens": TOKENS + 10})
            self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def run_json(stub: Stub, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, Any]]:
    code = main(["--url", stub.url, "--concurrency", "1,3", "--requests", "6", "--max-tokens",
                 "9", "--json", *extra], {"OPENAI_API_KEY": "sk-env"})
    assert code == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_numbers_follow_the_stream(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    levels = run_json(stub, capsys, "--price-per-hour", "2.5")
    assert [lv["concurrency"] for lv in levels] == [1, 3]
    for lv in levels:
        assert lv["model"] == "stub-model" and lv["url"] == stub.url + "/v1"
        assert lv["ok"] == 6 and lv["errors"] == 0
        assert lv["output_tokens"] == 6 * (TOKENS + 3)  # usage, not chunks
        assert lv["prompt_tokens"] == 6 * 7
        assert lv["tokens_per_s"] == pytest.approx(lv["output_tokens"] / lv["wall_s"])
        # Lower bounds are hard (the stub sleeps before sending); upper bounds allow for a
        # busy machine.
        assert FIRST_DELAY <= lv["ttft_p50_s"] < FIRST_DELAY + 2.0
        assert GAP * 0.5 <= lv["itl_p50_s"] < GAP + 0.5
        assert lv["usd_per_million_output_tokens"] == pytest.approx(
            2.5 / 3600 / lv["tokens_per_s"] * 1e6)
    # Three at a time finish the same six requests in about a third of the time.
    assert levels[1]["wall_s"] < levels[0]["wall_s"] * 0.8
    body = stub.bodies[0]
    assert body["stream"] is True and body["max_tokens"] == 9
    assert body["stream_options"] == {"include_usage": True} and "seed" not in body
    assert set(stub.auth) == {"Bearer sk-env"}


def test_without_usage_tokens_are_counted_from_chunks(
        stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.usage = False
    levels = run_json(stub, capsys, "--seed", "40", "--model", "m", "--api-key", "sk-flag")
    assert all(lv["output_tokens"] == 6 * TOKENS for lv in levels)
    assert sorted(b["seed"] for b in stub.bodies[:6]) == [40, 41, 42, 43, 44, 45]
    assert {b["model"] for b in stub.bodies} == {"m"} and set(stub.auth) == {"Bearer sk-flag"}


def test_table_and_progress(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", stub.url + "/v1/", "--concurrency", "2", "--requests", "4",
                 "--price-per-hour", "3.6"], {})
    out, err = capsys.readouterr()
    assert code == 0
    head, row = out.strip().splitlines()
    assert "tok/s" in head and "$/1M output tokens at $3.6/h" in head
    cells = row.split()
    assert cells[:4] == ["2", "4", "0", str(4 * (TOKENS + 3))]
    tok_s = float(cells[4])
    cost = float(cells[-1].lstrip("$").replace(",", ""))
    assert cost == pytest.approx(3.6 / 3600 / tok_s * 1e6, rel=0.01)
    # Not a terminal: plain progress lines, the last one complete.
    lines = [ln for ln in err.splitlines() if ln.startswith("c=2")]
    assert lines and "4/4 requests" in lines[-1] and "\r" not in err


def test_errors_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "--concurrency", "1", "--requests", "1",
                 "--model", "x", "--json", "--timeout", "5"], {}) == 1
    assert "failed" in capsys.readouterr().err
    assert main(["--url", "http://127.0.0.1:9"], {}) == 1  # no /v1/models to ask
    assert main(["--url", "x", "--concurrency", "0"], {}) == 2
    assert main([], {}) == 2
    assert base_url("https://api.runpod.ai/v2/abc/openai/v1/") == (
        "https://api.runpod.ai/v2/abc/openai/v1")
    assert base_url("https://x.modal.run") == "https://x.modal.run/v1"


def test_summary_arithmetic() -> None:
    recs = [RequestRecord(start=0.0, end=2.0, first_text=0.5, text_times=[0.5, 0.6, 0.8],
                          completion_tokens=10, prompt_tokens=3),
            RequestRecord(start=1.0, end=2.5, first_text=1.1, text_times=[1.1, 1.2],
                          completion_tokens=6, prompt_tokens=3),
            RequestRecord(start=1.0, end=1.5, error="boom", completion_tokens=99)]
    s = summarize(recs, wall_s=4.0, concurrency=2)
    assert (s.ok, s.errors, s.output_tokens, s.prompt_tokens) == (2, 1, 16, 6)
    assert s.tokens_per_s == 4.0
    assert s.ttft_p50_s == pytest.approx(0.3)  # 0.5 and 0.1
    assert s.itl_p50_s == pytest.approx(0.1)  # gaps 0.1, 0.2, 0.1
    assert s.latency_p50_s == pytest.approx(1.75)
    assert s.cost_per_million(3.6) == pytest.approx(3.6 / 3600 / 4.0 * 1e6)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_several_client_processes(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    """--procs splits a level over processes: the same requests (indices, seeds) and numbers."""
    stub.usage = False
    levels = run_json(stub, capsys, "--seed", "40", "--procs", "2")
    for lv in levels:
        assert lv["ok"] == 6 and lv["errors"] == 0
        assert lv["output_tokens"] == 6 * TOKENS
        assert FIRST_DELAY <= lv["ttft_p50_s"] < FIRST_DELAY + 2.0
        assert lv["client_cpu_s"] > 0
    assert [lv["procs"] for lv in levels] == [1, 2]  # never more processes than streams
    assert sorted(b["seed"] for b in stub.bodies[6:]) == [40, 41, 42, 43, 44, 45]


def test_process_shares() -> None:
    from worker.bench.procs import auto_procs, shares

    assert shares(10, 3) == [4, 3, 3] and shares(2, 4) == [1, 1, 0, 0]
    assert auto_procs(8, cpus=16) == 1 and auto_procs(32, cpus=16) == 4
    assert auto_procs(256, cpus=16) == 8 and auto_procs(64, cpus=2) == 1
