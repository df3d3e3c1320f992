"""`python bench/batch.py`: batch throughput and live latency while a batch runs.

One worker (`python -m worker serve`, CPU engine, tiny random gpt-oss, BATCH_DIR on a temp
directory); in one run, interleaved over `--repeats`:

- a batch of `--lines` requests through the Files and Batches API (official client):
  lines/s and output tok/s from create to completed;
- the same requests sent live (streaming) at the batch's concurrency: lines/s and tok/s;
- a light live load (`--probe` requests at concurrency 2), alone, then while a large batch
  runs, then while the same work runs as live requests at the batch's concurrency:
  TTFT p50 of the live requests in each case.

Writes bench/results/batch.json and the "Batches" section of BENCHMARKS.md (between its
markers, so `bench/run.py` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import report
import servers

from worker.bench.loadgen import LoadSpec, make_client, run_load, summarize
from worker.tiny import ensure_tiny_model

START, END = "<!-- batch-bench:start -->", "<!-- batch-bench:end -->"
MAX_MODEL_LEN, MAX_NUM_SEQS = 2048, 32
CONCURRENCY = MAX_NUM_SEQS // 2  # what a batch runs at (the runner's bound)
CHAT = "/v1/chat/completions"


def lines(n: int, max_tokens: int, prefix: str) -> bytes:
    rows = [{"custom_id": f"{prefix}{i}", "method": "POST", "url": CHAT,
             "body": {"model": "bench", "max_tokens": max_tokens, "seed": i,
                      "messages": [{"role": "user", "content": f"Question number {i}"}]}}
            for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def submit(client: openai.AsyncOpenAI, n: int, max_tokens: int, prefix: str) -> Any:
    f = await client.files.create(file=("b.jsonl", io.BytesIO(lines(n, max_tokens, prefix))),
                                  purpose="batch")
    return await client.batches.create(input_file_id=f.id, endpoint=CHAT,
                                       completion_window="24h")


async def wait(client: openai.AsyncOpenAI, batch_id: str, until: Any) -> Any:
    while True:
        b = await client.batches.retrieve(batch_id)
        if until(b):
            return b
        await asyncio.sleep(0.05)


async def batch_run(client: openai.AsyncOpenAI, n: int, max_tokens: int, tag: str
                    ) -> dict[str, float]:
    t0 = time.perf_counter()
    b = await submit(client, n, max_tokens, tag)
    done = await wait(client, b.id, lambda x: x.status in ("completed", "failed"))
    wall = time.perf_counter() - t0
    assert done.status == "completed" and done.request_counts.completed == n, done
    return {"wall_s": wall, "lines_per_s": n / wall,
            "tokens_per_s": done.usage.output_tokens / wall}


async def live_run(url: str, n: int, max_tokens: int) -> dict[str, float]:
    client = make_client(url, "none")
    spec = LoadSpec(model="bench", concurrency=CONCURRENCY, requests=n, max_tokens=max_tokens)
    records, wall = await run_load(client, spec)
    s = summarize(records, wall, CONCURRENCY)
    assert s.errors == 0
    return {"wall_s": wall, "lines_per_s": n / wall, "tokens_per_s": s.tokens_per_s}


async def probe(url: str, n: int, max_tokens: int) -> float:
    spec = LoadSpec(model="bench", concurrency=2, requests=n, max_tokens=max_tokens, seed=1000)
    records, wall = await run_load(make_client(url, "none"), spec)
    s = summarize(records, wall, 2)
    assert s.errors == 0
    return s.ttft_p50_s


async def ttft_under(url: str, client: openai.AsyncOpenAI, args: argparse.Namespace,
                     background: str, tag: str) -> float:
    """TTFT p50 of the probe while `background` (none, batch, live) keeps the engine busy."""
    if background == "none":
        return await probe(url, args.probe, args.max_tokens)
    if background == "batch":
        b = await submit(client, 400, args.max_tokens * 4, tag)
        await wait(client, b.id, lambda x: x.request_counts.completed >= CONCURRENCY)
        try:
            return await probe(url, args.probe, args.max_tokens)
        finally:
            await client.batches.cancel(b.id)
            await wait(client, b.id, lambda x: x.status == "cancelled")
    spec = LoadSpec(model="bench", concurrency=CONCURRENCY, requests=100_000,
                    max_tokens=args.max_tokens * 4, seed=5000)
    load = asyncio.create_task(run_load(make_client(url, "none"), spec))
    await asyncio.sleep(5.0)  # the background load is running at full concurrency
    try:
        return await probe(url, args.probe, args.max_tokens)
    finally:
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)


async def main_async(args: argparse.Namespace) -> int:
    model = ensure_tiny_model("random", Path(args.cache))
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    p = servers.start_worker(model, tmp, MAX_MODEL_LEN, MAX_NUM_SEQS,
                             extra_env={"BATCH_DIR": str(tmp / "batches")})
    t0 = time.perf_counter()
    runs: dict[str, list[Any]] = {k: [] for k in ("batch", "live", "ttft_none", "ttft_batch",
                                                  "ttft_live")}
    try:
        servers.wait_ready(p, "/ready")
        client = openai.AsyncOpenAI(base_url=p.base_url, api_key="none", max_retries=0)
        await live_run(p.base_url, CONCURRENCY, args.max_tokens)  # warm-up
        for r in range(args.repeats):
            order = ("batch", "live") if r % 2 == 0 else ("live", "batch")
            for kind in order:
                if kind == "batch":
                    runs[kind].append(await batch_run(client, args.lines, args.max_tokens,
                                                      f"r{r}-"))
                else:
                    runs[kind].append(await live_run(p.base_url, args.lines, args.max_tokens))
            for bg in ("none", "batch", "live"):
                runs[f"ttft_{bg}"].append(await ttft_under(p.base_url, client, args, bg,
                                                           f"bg{r}-"))
            print(f"repeat {r}: " + ", ".join(f"{k}={v[-1]}" for k, v in runs.items()),
                  flush=True)
    finally:
        servers.stop(p)
    res = {"args": vars(args), "concurrency": CONCURRENCY, "runs": runs,
           "environment": report.environment(), "elapsed_s": time.perf_counter() - t0}
    write_outputs(res, Path(args.out), Path(args.markdown))
    print(section(res))
    return 0


def write_outputs(res: dict[str, Any], out: Path, markdown: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch.json").write_text(json.dumps(res, indent=1, default=report.jsonable))
    write_section(markdown, section(res))


def med(values: list[Any], key: str | None = None) -> float:
    return statistics.median(v[key] if key else v for v in values)


def section(res: dict[str, Any]) -> str:
    runs, a, env = res["runs"], res["args"], res["environment"]
    b_lps, l_lps = med(runs["batch"], "lines_per_s"), med(runs["live"], "lines_per_s")
    b_tps, l_tps = med(runs["batch"], "tokens_per_s"), med(runs["live"], "tokens_per_s")
    none, batch, live = (med(runs[k]) * 1e3 for k in ("ttft_none", "ttft_batch", "ttft_live"))
    return "\n".join([
        START,
        "## Batches (Files + Batches API)",
        "",
        f"`python bench/batch.py` ({env['date']}, commit `{env['commit']}`, "
        f"{a['repeats']} interleaved repeats, medians; tiny random gpt-oss on the CPU engine, "
        f"MAX_NUM_SEQS={MAX_NUM_SEQS}, so a batch runs {res['concurrency']} lines at once; "
        "the machine is shared, so read the ratios).",
        "",
        f"| {a['lines']} requests of {a['max_tokens']} tokens | lines/s | output tok/s |",
        "|---|---|---|",
        f"| as a batch (files.create, batches.create, poll) | {b_lps:.2f} | {b_tps:.0f} |",
        f"| the same, live at concurrency {res['concurrency']} | {l_lps:.2f} | {l_tps:.0f} |",
        f"| batch / live | {b_lps / l_lps:.2f} | {b_tps / l_tps:.2f} |",
        "",
        f"| live TTFT p50 ({a['probe']} streaming requests, concurrency 2) | ms | vs idle |",
        "|---|---|---|",
        f"| engine otherwise idle | {none:.0f} | 1.00 |",
        f"| while a batch runs | {batch:.0f} | {batch / none:.2f} |",
        f"| while the same work runs as live requests (concurrency {res['concurrency']}) | "
        f"{live:.0f} | {live / none:.2f} |",
        "",
        "Batch lines run at engine priority 1 (vLLM's priority scheduler: a waiting live "
        "request is scheduled first) and at most MAX_NUM_SEQS/2 at a time, so live requests "
        "always find a free sequence slot.",
        END,
    ])


def write_section(path: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace the text between `start` and `end` in `path` (or append it)."""
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + text + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--probe", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    servers.add_output_args(ap)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
