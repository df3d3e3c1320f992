"""`python -m worker bench --url URL`: measure any OpenAI-compatible chat endpoint.

The same closed-loop streaming load as `bench/run.py` (`worker.bench.loadgen`, official `openai`
async client) against a local worker, RunPod's `/openai/v1` route, Modal or anything else
that speaks the API. Prints output tokens/s, TTFT and inter-token latency per concurrency
level and, with `--price-per-hour`, the cost per million output tokens at that throughput
(price / 3600 / tok/s x 1e6): the cost table computed from a measurement, not a guess.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TextIO

from worker.bench.loadgen import LoadSpec, RequestRecord, Summary, make_client, run_load, summarize
from worker.bench.procs import auto_procs, run_load_procs

KEY_VARIABLES = ("BENCH_API_KEY", "OPENAI_API_KEY", "API_KEY", "RUNPOD_API_KEY")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m worker bench",
        description="Streaming load against an OpenAI-compatible endpoint: tok/s, TTFT, ITL, "
                    "cost per million output tokens.")
    ap.add_argument("--url", required=True,
                    help="base URL, e.g. http://127.0.0.1:8000/v1 or "
                         "https://api.runpod.ai/v2/<endpoint id>/openai/v1 (/v1 is added when "
                         "missing)")
    ap.add_argument("--api-key", help=f"bearer token (default: ${' / $'.join(KEY_VARIABLES)})")
    ap.add_argument("--model", help="model name (default: the first of GET /v1/models)")
    ap.add_argument("--concurrency", default="1,8,32", type=_levels,
                    help="comma-separated concurrency levels (default 1,8,32)")
    ap.add_argument("--requests", type=int, default=0,
                    help="requests per level (default: 4 x concurrency, at least 8)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--min-tokens", type=int,
                    help="send min_tokens (vLLM's extension, also this worker's): no stop "
                         "before this many tokens; equal to --max-tokens, every request "
                         "generates exactly that many, so two servers do the same work")
    ap.add_argument("--seed", type=int, help="request i sends seed + i (default: no seed)")
    ap.add_argument("--api", choices=("chat", "responses"), default="chat",
                    help="chat: /v1/chat/completions; responses: /v1/responses (takes no seed)")
    ap.add_argument("--price-per-hour", type=float,
                    help="what the endpoint's GPU costs per hour, in dollars")
    ap.add_argument("--procs", type=int, default=0,
                    help="client processes sharing each level's load (default 0 = auto: one "
                         "per 8 concurrent streams, at most half the CPUs); one process "
                         "parsing every chunk can be slower than a fast server")
    ap.add_argument("--json", action="store_true", help="print one JSON object per level")
    ap.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    args = ap.parse_args(list(argv))
    if args.procs < 0:
        ap.error("--procs must be 0 (auto) or more")
    if args.api == "responses" and args.seed is not None:
        ap.error("--seed: /v1/responses takes no seed; leave it out (or use --api chat)")
    return args


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be integers >= 1")
    return levels


def base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def api_key(explicit: str | None, env: Mapping[str, str]) -> str:
    if explicit:
        return explicit
    return next((env[k] for k in KEY_VARIABLES if env.get(k)), "EMPTY")


class Progress:
    """A bar on a terminal, a plain line per quarter of the level otherwise (stderr)."""

    def __init__(self, out: TextIO, level: int, total: int) -> None:
        self.out, self.level, self.total = out, level, total
        self.tty = out.isatty()
        self.done = self.tokens = self.errors = 0
        self.t0 = time.perf_counter()
        self._next_line = 0.25

    def __call__(self, rec: RequestRecord) -> None:
        self.done += 1
        self.tokens += rec.completion_tokens
        self.errors += rec.error is not None
        rate = self.tokens / max(1e-9, time.perf_counter() - self.t0)
        text = (f"c={self.level:<4} {self.done}/{self.total} requests  {rate:8.1f} tok/s"
                f"{f'  {self.errors} errors' if self.errors else ''}")
        if self.tty:
            width = 24
            filled = round(width * self.done / self.total)
            self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}")
            if self.done == self.total:
                self.out.write("\n")
        elif self.done / self.total >= self._next_line or self.done == self.total:
            self.out.write(text + "\n")
            while self._next_line <= self.done / self.total:
                self._next_line += 0.25
        self.out.flush()


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:.1f} ms"


def client_busy(s: Summary) -> float:
    """The share of its time each client process spent on the CPU (near 1: the client may be
    what limits the numbers)."""
    return s.client_cpu_s / (s.wall_s * s.procs) if s.wall_s > 0 else math.nan


def cost_text(s: Summary, price: float | None) -> str:
    if price is None:
        return ""
    cost = s.cost_per_million(price)
    return "n/a" if math.isinf(cost) else f"${cost:,.2f}"


def table(summaries: list[Summary], price: float | None) -> str:
    head = ["concurrency", "requests", "errors", "output tokens", "tok/s", "TTFT p50",
            "TTFT p95", "ITL p50", "client procs x busy"]
    if price is not None:
        head.append(f"$/1M output tokens at ${price:g}/h")
    rows = [head]
    for s in summaries:
        row = [str(s.concurrency), str(s.requests), str(s.errors), str(s.output_tokens),
               f"{s.tokens_per_s:.1f}", _ms(s.ttft_p50_s), _ms(s.ttft_p95_s), _ms(s.itl_p50_s),
               f"{s.procs}x{client_busy(s):.0%}"]
        if price is not None:
            row.append(cost_text(s, price))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                     for r in rows)


async def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    url = base_url(args.url)
    try:
        client = make_client(url, api_key(args.api_key, env), timeout=args.timeout)
    except ImportError:
        print("error: `python -m worker bench` needs the openai package: pip install openai",
              file=sys.stderr)
        return 2
    try:
        model = args.model
        if not model:
            try:
                models = await client.models.list()
            except Exception as exc:
                print(f"error: GET {url}/models failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr)
                return 1
            if not models.data:
                print(f"error: {url}/models lists no model; pass --model", file=sys.stderr)
                return 1
            model = models.data[0].id
        print(f"endpoint {url} ({args.api})  model {model}  max_tokens {args.max_tokens}",
              file=sys.stderr)
        summaries: list[Summary] = []
        for level in args.concurrency:
            n = args.requests or max(8, 4 * level)
            spec = LoadSpec(model=model, concurrency=level, requests=n,
                            max_tokens=args.max_tokens, seed=args.seed,
                            min_tokens=args.min_tokens, api=args.api)
            procs = min(args.procs or auto_procs(level), level, n)
            progress = Progress(sys.stderr, level, n)
            if procs > 1:
                records, wall, cpu = await run_load_procs(
                    url, api_key(args.api_key, env), spec, procs, request_timeout=args.timeout,
                    progress=progress)
            else:
                cpu0 = time.process_time()
                records, wall = await run_load(client, spec, progress)
                cpu = time.process_time() - cpu0
            s = replace(summarize(records, wall, level), procs=procs, client_cpu_s=cpu)
            summaries.append(s)
            if args.json:
                out = {"url": url, "model": model, **s.__dict__}
                if args.price_per_hour is not None:
                    out["usd_per_million_output_tokens"] = s.cost_per_million(args.price_per_hour)
                print(json.dumps(out), flush=True)
            if client_busy(s) > 0.8:
                print(f"c={level}: the client processes were on the CPU {client_busy(s):.0%} "
                      "of the time; they may be the limit: raise --procs", file=sys.stderr)
            failed = [r.error for r in records if r.error]
            if failed:
                print(f"c={level}: {len(failed)} failed, e.g. {failed[0]}", file=sys.stderr)
    finally:
        await client.close()
    if not args.json:
        print(table(summaries, args.price_per_hour))
    return 0 if any(s.ok for s in summaries) else 1


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    return asyncio.run(_run(args, env))

