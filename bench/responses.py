"""`python bench/responses.py`: /v1/responses against /v1/chat/completions, same worker.

One worker (`python -m worker serve`, CPU engine, tiny random gpt-oss); the same streaming
load (official client, the same prompts, `--max-tokens`, no seed) through each API,
interleaved over `--repeats` at each concurrency, so the ratio is the cost of the
Responses surface (its items and named events) over chat's on the one generation path.
Writes bench/results/responses.json and the "Responses" section of BENCHMARKS.md (between
its markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import report
import servers
from batch import write_section

from worker.bench.loadgen import LoadSpec, make_client, run_load, summarize
from worker.tiny import ensure_tiny_model

START, END = "<!-- responses-bench:start -->", "<!-- responses-bench:end -->"
MAX_MODEL_LEN, MAX_NUM_SEQS = 2048, 32
APIS = ("chat", "responses")


async def one(url: str, api: str, c: int, args: argparse.Namespace) -> dict[str, float]:
    spec = LoadSpec(model="bench", concurrency=c, requests=max(8, c * args.per_slot),
                    max_tokens=args.max_tokens, seed=None, api=api)
    records, wall = await run_load(make_client(url, "none"), spec)
    s = summarize(records, wall, c)
    assert s.errors == 0, f"{api} c={c}: {s.errors} errors"
    return {"tokens_per_s": s.tokens_per_s, "ttft_p50_s": s.ttft_p50_s,
            "itl_p50_s": s.itl_p50_s, "output_tokens": s.output_tokens}


async def main_async(args: argparse.Namespace) -> int:
    model = ensure_tiny_model("random", Path(args.cache))
    tmp = Path(tempfile.mkdtemp(prefix="responses-bench-"))
    p = servers.start_worker(model, tmp, MAX_MODEL_LEN, MAX_NUM_SEQS)
    levels = [int(c) for c in args.levels.split(",")]
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        api: {str(c): [] for c in levels} for api in APIS}
    t0 = time.perf_counter()
    try:
        servers.wait_ready(p, "/ready")
        for api in APIS:  # warm-up, not counted
            await one(p.base_url, api, 2, argparse.Namespace(**{**vars(args), "per_slot": 1}))
        for r in range(args.repeats):
            for c in levels:
                for api in APIS if r % 2 == 0 else APIS[::-1]:
                    runs[api][str(c)].append(await one(p.base_url, api, c, args))
            print(f"repeat {r} done", flush=True)
    finally:
        servers.stop(p)
    res = {"args": vars(args), "runs": runs, "environment": report.environment(),
           "elapsed_s": time.perf_counter() - t0}
    write_outputs(res, Path(args.out), Path(args.markdown))
    print(section(res))
    return 0


def write_outputs(res: dict[str, Any], out: Path, markdown: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "responses.json").write_text(json.dumps(res, indent=1, default=report.jsonable))
    write_section(markdown, section(res), START, END)


def med(values: list[dict[str, float]], key: str) -> float:
    return statistics.median(v[key] for v in values)


def section(res: dict[str, Any]) -> str:
    a, env, runs = res["args"], res["environment"], res["runs"]
    rows = []
    for c in runs["chat"]:
        ch, rs = runs["chat"][c], runs["responses"][c]
        tc, tr = med(ch, "tokens_per_s"), med(rs, "tokens_per_s")
        fc, fr = med(ch, "ttft_p50_s") * 1e3, med(rs, "ttft_p50_s") * 1e3
        rows.append(f"| {c} | {tc:.0f} | {tr:.0f} | **{tr / tc:.2f}** | {fc:.0f} | {fr:.0f} | "
                    f"{fr / fc:.2f} |")
    return "\n".join([
        START,
        "## Responses vs chat completions",
        "",
        f"`python bench/responses.py` ({env['date']}, commit `{env['commit']}`, "
        f"{a['repeats']} interleaved repeats, medians; one worker, tiny random gpt-oss on the "
        f"CPU engine, streaming, {a['max_tokens']} max output tokens, the official client; "
        "the machine is shared, so read the ratios).",
        "",
        "| concurrency | chat tok/s | responses tok/s | responses / chat | chat TTFT p50 ms | "
        "responses TTFT p50 ms | ratio |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Both APIs run the same generation path (`openai/core.py`, `harmony/generation.py`); "
        "the difference is the surface: Responses items and named SSE events against chat "
        "chunks.",
        END,
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--per-slot", type=int, default=4, help="requests per concurrency slot")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    servers.add_output_args(ap)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
