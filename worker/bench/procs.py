"""The closed-loop load split over several client processes.

One Python process parsing every chunk of a fast stream becomes the limit long before a
GPU server does: the official `openai` client spends tens of microseconds of CPU per chunk
(`bench/stream_cost.py client`), and a streaming server sends one chunk per token per
stream. `run_load_procs` gives each of `procs` processes its share of the concurrency and of
the requests (the same request indices, so the same prompts and seeds as one process), starts
them together once each has its client, and merges their records. Times are
`time.perf_counter`, one monotonic clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from worker.bench.loadgen import LoadSpec, RequestRecord, make_client, run_load

# What `auto` gives each client process: on the H200 machines' Xeons the official client
# spent about 300 µs of CPU per chunk, so 8 streams of a fast GPU keep one process busy.
CONCURRENCY_PER_PROCESS = 8


def auto_procs(concurrency: int, cpus: int | None = None) -> int:
    """One process per 8 concurrent streams, at most half the machine's CPUs."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(math.ceil(concurrency / CONCURRENCY_PER_PROCESS), cpus // 2))


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal non-negative integers (larger ones first)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def _child(url: str, key: str, timeout: float, spec: LoadSpec, start: Any, out: Any) -> None:
    async def go() -> None:
        client = make_client(url, key, timeout=timeout)
        try:
            out.put(("ready", None))
            await asyncio.to_thread(start.wait)
            cpu0 = time.process_time()
            records, _ = await run_load(
                client, spec, lambda r: out.put(("record", (r.completion_tokens, r.error))))
            out.put(("done", (records, time.process_time() - cpu0)))
        finally:
            await client.close()

    try:
        asyncio.run(go())
    except BaseException as exc:  # the parent reports it; it must not wait forever
        out.put(("failed", f"{type(exc).__name__}: {exc}"))


async def run_load_procs(
    url: str, key: str, spec: LoadSpec, procs: int, *, request_timeout: float = 600.0,
    progress: Callable[[RequestRecord], None] | None = None,
) -> tuple[list[RequestRecord], float, float]:
    """`spec` over `procs` processes: (records, wall seconds, client CPU seconds)."""
    ctx = multiprocessing.get_context("spawn")  # no forked event loop or client state
    start, out = ctx.Event(), ctx.Queue()
    specs, offset = [], spec.offset
    for conc, n in zip(shares(spec.concurrency, procs), shares(spec.requests, procs),
                       strict=True):
        if conc and n:
            specs.append(replace(spec, concurrency=conc, requests=n, offset=offset))
        offset += n
    children = [ctx.Process(target=_child, daemon=True,
                            args=(url, key, request_timeout, s, start, out)) for s in specs]
    for c in children:
        c.start()
    records: list[RequestRecord] = []
    cpu = 0.0
    try:
        ready = done = 0
        while done < len(children):
            try:
                kind, value = await asyncio.to_thread(out.get, True, 5.0)
            except queue.Empty:
                if not all(c.is_alive() for c in children):
                    raise RuntimeError("a bench client process exited early") from None
                continue
            if kind == "ready":
                ready += 1
                if ready == len(children):
                    start.set()
            elif kind == "record" and progress is not None:
                tokens, error = value
                progress(RequestRecord(start=0.0, completion_tokens=tokens, error=error))
            elif kind == "done":
                done += 1
                records.extend(value[0])
                cpu += value[1]
            elif kind == "failed":
                raise RuntimeError(f"a bench client process failed: {value}")
    finally:
        for c in children:
            c.join(10)
            if c.is_alive():
                c.kill()
    wall = max(r.end for r in records) - min(r.start for r in records) if records else 0.0
    return records, wall, cpu
