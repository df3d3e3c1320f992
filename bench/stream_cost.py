"""Where a streamed token's time goes: the worker's streaming path and the bench client.

    python bench/stream_cost.py layers [--streams 64] [--tokens 256] [--profile]
    python bench/stream_cost.py http [--streams 64] [--step-ms 6.6] [--client raw|openai]
    python bench/stream_cost.py client [--chunks 4096]

`layers`: in one process, no HTTP: 64 concurrent streams through each layer in turn, one
token per engine delta (the worst case: a consumer that keeps up with every step), CPU µs
per token of each layer added: the engine's deltas alone; `run_choice` (Harmony parser);
`core.choice_events` (metrics, stops); `ChatService.stream` (chunk dicts); `wire.sse`.
`--profile` prints cProfile's top functions for the whole path.

`http`: the worker's real app under uvicorn (`bench/stream_fake.py`: the `SteppingEngine`,
which steps every `--step-ms` like a GPU engine and merges what a slow consumer has not taken,
as vLLM does) in its own process, loaded by a cheap raw-socket client (`raw`) or by
`python -m worker bench` (`openai`, `--procs` processes); reports throughput, SSE events per
second and the server's CPU µs per token and per event (from /proc).

`client`: the official `openai` client's own CPU per chunk, parsing a recorded stream from
memory (no socket, no server), vs the raw client's parse.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from stream_fake import completion  # noqa: E402

from worker.engine.api import EngineInfo, GenerationDelta, SamplingOptions  # noqa: E402

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Tell me a story."}],
        "stream": True, "stream_options": {"include_usage": True}}


class OneByOne:
    """An engine that yields every token as its own delta, as fast as the loop runs."""

    def __init__(self) -> None:
        self._info = EngineInfo(model="fake", served_model_names=("bench",), max_model_len=8192,
                                max_num_seqs=256, device="cpu")
        self.is_dead = False

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(self, request_id: str, prompt_token_ids: Sequence[int],
                       options: SamplingOptions) -> AsyncGenerator[GenerationDelta, None]:
        toks = completion(options.max_tokens)
        n = len(prompt_token_ids)
        for i, t in enumerate(toks):
            await asyncio.sleep(0)
            last = i == len(toks) - 1
            yield GenerationDelta((t,), n, finished=last, finish_reason="length" if last else None)

    async def abort(self, request_id: str) -> None:
        return None

    async def check_schema(self, schema: str, *, time_limit: float) -> None:
        return None


async def _drain(gen: Any) -> int:
    n = 0
    async for _ in gen:
        n += 1
    return n


def layer_costs(streams: int, tokens: int, rounds: int = 3,
                profile: bool = False) -> dict[str, float]:
    """CPU µs per token, cumulative, of each layer of the streaming path (best of rounds)."""
    from worker.harmony.generation import ChoiceResult, run_choice
    from worker.openai import core, wire
    from worker.openai.chat.protocol import parse_chat_request
    from worker.openai.chat.service import ChatService

    engine = OneByOne()
    service = ChatService(engine, today=lambda: "2026-01-01")  # type: ignore[arg-type]
    req = parse_chat_request({**BODY, "max_tokens": tokens, "min_tokens": tokens})
    prepared = service.prepare(req)
    plan = prepared.plans[0]

    async def sse_of(i: int) -> None:
        async for chunk in service.stream(prepared):
            wire.sse(chunk)

    layers = {
        "engine deltas": lambda i: _drain(engine.generate(f"r{i}", plan.prompt, plan.options)),
        "+ Harmony parser (run_choice)": lambda i: _drain(
            run_choice(engine, f"r{i}", plan, ChoiceResult())),  # type: ignore[arg-type]
        "+ choice_events (metrics, stop)": lambda i: _drain(core.choice_events(
            engine, f"r{i}", plan, ChoiceResult())),  # type: ignore[arg-type]
        "+ ChatService.stream (chunk dicts)": lambda i: _drain(service.stream(prepared)),
        "+ wire.sse (JSON bytes)": sse_of,
    }

    async def run(make: Any) -> float:
        t0 = time.process_time()
        await asyncio.gather(*(make(i) for i in range(streams)))
        return time.process_time() - t0

    out: dict[str, float] = {}
    for name, make in layers.items():
        asyncio.run(run(make))  # warm
        best = min(asyncio.run(run(make)) for _ in range(rounds))
        out[name] = best / (streams * tokens) * 1e6
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(run(sse_of))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return out


# ----------------------------------------------------------------------------- http

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _raw_request(port: int, body: bytes) -> dict[str, Any]:
    """One streamed request over a raw socket: no client library cost beyond a read."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                 + body)
    parts: list[bytes] = []
    first = None
    while data := await reader.read(65536):
        parts.append(data)
        if first is None and (b'"content":"T' in data or b'"reasoning":"' in data):
            first = time.perf_counter() - t0
    writer.close()
    raw = b"".join(parts)
    usage = json.loads(raw.rsplit(b"data: ", 2)[1].split(b"\n", 1)[0])["usage"]
    return {"ttft": first, "events": raw.count(b"data: "), "tokens": usage["completion_tokens"],
            "end": time.perf_counter()}


async def _raw_load(port: int, streams: int, requests: int, tokens: int) -> list[dict[str, Any]]:
    body = json.dumps({**BODY, "max_tokens": tokens, "min_tokens": tokens}).encode()
    left = list(range(requests))
    out: list[dict[str, Any]] = []

    async def worker() -> None:
        while left:
            left.pop()
            out.append(await _raw_request(port, body))

    await asyncio.gather(*(worker() for _ in range(streams)))
    return out


def http_cost(streams: int, step_ms: float, tokens: int, client: str, procs: int,
              requests: int) -> dict[str, Any]:
    from worker.bench.loadgen import percentile

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    srv = subprocess.Popen([sys.executable, str(REPO / "bench" / "stream_fake.py"), "--port",
                            str(port), "--step-ms", str(step_ms)], env=env)
    try:
        _wait_ready(port)
        asyncio.run(_raw_load(port, min(streams, 8), 8, 16))  # warm-up
        cpu0, t0 = _cpu_seconds(srv.pid), time.perf_counter()
        if client == "raw":
            recs = asyncio.run(_raw_load(port, streams, requests, tokens))
            ttft = percentile([r["ttft"] for r in recs if r["ttft"] is not None], 50)
            done_tokens = sum(r["tokens"] for r in recs)
            events = sum(r["events"] for r in recs)
            client_cpu = None
        else:
            cmd = [sys.executable, "-m", "worker", "bench", "--url", f"http://127.0.0.1:{port}/v1",
                   "--model", "bench", "--json", "--concurrency", str(streams), "--requests",
                   str(requests), "--max-tokens", str(tokens), "--min-tokens", str(tokens),
                   "--procs", str(procs)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
            row = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
            ttft, done_tokens, events = row["ttft_p50_s"], row["output_tokens"], None
            client_cpu = row.get("client_cpu_s")
        wall = time.perf_counter() - t0
        if client != "raw":
            wall = row["wall_s"]  # the load alone, not the client's start-up
        cpu = _cpu_seconds(srv.pid) - cpu0
    finally:
        srv.terminate()
        srv.wait(30)
    offered = streams * 1e3 / step_ms
    return {"client": client, "procs": procs, "streams": streams, "step_ms": step_ms,
            "offered_tok_s": round(offered), "tok_s": round(done_tokens / wall),
            "events_per_s": round(events / wall) if events else None,
            "tokens_per_event": round(done_tokens / events, 2) if events else None,
            "server_cpu_share": round(cpu / wall, 2),
            "server_us_per_token": round(cpu / done_tokens * 1e6, 1),
            "client_cpu_share": round(client_cpu / wall / procs, 2) if client_cpu else None,
            "ttft_p50_ms": round(ttft * 1e3, 1)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int) -> None:
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the fake server did not start")


# --------------------------------------------------------------------------- client

def client_cost(chunks: int) -> dict[str, float]:
    """CPU µs per chunk for the openai client to parse a stream, and for the raw count."""
    import httpx2
    from openai import AsyncOpenAI

    from worker.bench.loadgen import LoadSpec, one_request

    head = ('{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"bench",'
            '"choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null,'
            '"logprobs":null}]}')
    usage = ('{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"bench",'
             f'"choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":{chunks},'
             f'"total_tokens":{chunks + 9}}}}}')
    body = (("data: " + head + "\n\n") * chunks + "data: " + usage + "\n\ndata: [DONE]\n\n")
    raw = body.encode()

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=raw)

    client = AsyncOpenAI(base_url="http://x/v1", api_key="x", max_retries=0,
                         http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    spec = LoadSpec(model="bench", concurrency=1, requests=1, max_tokens=chunks)

    async def parse() -> Any:
        return await one_request(client, spec, 0)

    asyncio.run(parse())
    t0 = time.process_time()
    rec = asyncio.run(parse())
    openai_us = (time.process_time() - t0) / chunks * 1e6
    assert rec.error is None and rec.completion_tokens == chunks, rec.error
    t0 = time.process_time()
    for _ in range(20):
        raw.count(b"data: ")
    raw_us = (time.process_time() - t0) / 20 / chunks * 1e6
    return {"openai_client_us_per_chunk": round(openai_us, 1),
            "raw_count_us_per_chunk": round(raw_us, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("layers", "http", "client"))
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--requests", type=int, default=0, help="default: 2 x streams")
    ap.add_argument("--step-ms", type=float, default=6.6)
    ap.add_argument("--client", choices=("raw", "openai"), default="raw")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=4096)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.what == "layers":
        res: Any = layer_costs(args.streams, args.tokens, profile=args.profile)
        prev = 0.0
        for name, us in res.items():
            print(f"{name:40s} {us:7.2f} µs/token cumulative  (+{us - prev:.2f})")
            prev = us
    elif args.what == "http":
        res = http_cost(args.streams, args.step_ms, args.tokens, args.client, args.procs,
                        args.requests or 2 * args.streams)
        print(json.dumps(res))
    else:
        print(json.dumps(client_cost(args.chunks)))


if __name__ == "__main__":
    main()
