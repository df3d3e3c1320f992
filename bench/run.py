"""`python bench/run.py [--quick]`: our worker vs vLLM's own OpenAI server, side by side.

One run, on the CPU engine with tiny gpt-oss checkpoints, both servers with the same engine
arguments (see bench/servers.py). Every speed claim is a ratio of runs interleaved in this
run (A B, then B A, ...), reported as the median over repeats. Writes BENCHMARKS.md at the
repository root, and plots plus the raw numbers into bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loop_model
import parser_bench
import plots
import report
import servers
from runpod_queue import JobQueue

from worker.bench.loadgen import LoadSpec, RequestRecord, make_client, run_load, summarize

MAX_MODEL_LEN, MAX_NUM_SEQS = 2048, 32
KEPT_SECTIONS = ("<!-- batch-bench:start -->", "<!-- responses-bench:start -->")
MODES: dict[str, dict[str, Any]] = {
    "quick": {"repeats": 2, "requests": {1: 2, 8: 8, 32: 32}, "max_tokens": 32,
              "runpod_jobs": 0, "random": False, "parser_rounds": 3, "bursts": 3},
    "full": {"repeats": 7, "requests": {1: 2, 8: 8, 32: 32}, "max_tokens": 48,
             "runpod_jobs": 16, "random": True, "parser_rounds": 7, "bursts": 8},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def measure(p: servers.Proc, spec: LoadSpec) -> dict[str, Any]:
    """One load run against `p`, with the CPU its API and engine processes used meanwhile."""
    client = make_client(p.base_url, "unused")
    before = p.cpu_seconds()
    records, wall = await run_load(client, spec)
    after = p.cpu_seconds()
    await client.close()
    s = summarize(records, wall, spec.concurrency)
    out = dict(s.__dict__)
    tokens = max(1, s.output_tokens)
    out["api_cpu_ms_per_token"] = (after["api"] - before["api"]) / tokens * 1e3
    out["engine_cpu_ms_per_token"] = (after["engine"] - before["engine"]) / tokens * 1e3
    out["error_samples"] = [r.error for r in records if r.error][:3]
    return out


async def compare(procs: list[servers.Proc], mode: dict[str, Any], levels: list[int],
                  repeats: int) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Interleaved runs: per repeat and level, every server once, order rotating."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {p.name: {c: [] for c in levels}
                                                        for p in procs}
    for p in procs:  # warm-up, discarded: first-request lazy work, connection pools
        await measure(p, LoadSpec(model="bench", concurrency=8, requests=8, max_tokens=8))
    for rep in range(repeats):
        for li, c in enumerate(levels):
            order = procs[(rep + li) % len(procs):] + procs[:(rep + li) % len(procs)]
            for p in order:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"{p.name} exited ({p.proc.returncode}):\n{p.tail()}")
                spec = LoadSpec(model="bench", concurrency=c, requests=mode["requests"][c],
                                max_tokens=mode["max_tokens"], seed=1000 * rep)
                r = await measure(p, spec)
                runs[p.name][c].append(r)
                log(f"  {p.name:<8} c={c:<3} {r['tokens_per_s']:7.1f} tok/s  "
                    f"TTFT p50 {r['ttft_p50_s'] * 1e3:6.0f} ms  ITL p50 "
                    f"{r['itl_p50_s'] * 1e3:5.1f} ms  errors {r['errors']}")
    return runs


async def ttft_bursts(procs: list[servers.Proc], levels: list[int], repeats: int
                      ) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """TTFT alone: bursts of `c` requests with max_tokens 4 on kept-alive connections,
    many short alternations (the throughput runs see fewer TTFT samples)."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {p.name: {c: [] for c in levels}
                                                        for p in procs}
    clients = {p.name: make_client(p.base_url, "unused") for p in procs}
    for p in procs:  # open the connections
        await run_load(clients[p.name], LoadSpec(model="bench", concurrency=max(levels),
                                                 requests=max(levels), max_tokens=2))
    for c in levels:
        for rep in range(repeats):
            order = procs[rep % len(procs):] + procs[:rep % len(procs)]
            for p in order:
                spec = LoadSpec(model="bench", concurrency=c, requests=max(c, 3), max_tokens=4,
                                seed=rep)
                records, wall = await run_load(clients[p.name], spec)
                s = summarize(records, wall, c)
                runs[p.name][c].append({"ttft_p50_s": s.ttft_p50_s, "ttft_p95_s": s.ttft_p95_s,
                                        "errors": s.errors})
        ms = {n: [round(r["ttft_p50_s"] * 1e3) for r in runs[n][c]] for n in runs}
        log(f"  TTFT bursts c={c}: worker {ms.get('worker')} ms, vLLM {ms.get('vllm')} ms")
    for client in clients.values():
        await client.close()
    return runs


async def runpod_vs_http(worker: servers.Proc, queue: JobQueue, jobs: int,
                         max_tokens: int) -> dict[str, Any]:
    """Sequential jobs through the SDK loop vs the same requests over HTTP, alternating."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "Hello there!"}],
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    client = make_client(worker.base_url, "unused")
    spec = LoadSpec(model="bench", concurrency=1, requests=1, max_tokens=max_tokens,
                    prompts=("Hello there!",), seed=None)
    http: list[RequestRecord] = []
    rp: list[dict[str, float]] = []
    for i in range(jobs + 1):
        records, _ = await run_load(client, spec)
        job = queue.submit({"openai_route": "/v1/chat/completions", "openai_input": body})
        t = await asyncio.to_thread(queue.wait, job)
        if records[0].error or t.error:
            raise RuntimeError(f"RunPod comparison failed: {records[0].error or t.error}")
        if i == 0:
            continue  # warm-up pair
        http.extend(records)
        rp.append({"latency": (t.done or 0) - t.submitted,
                   "first": (t.first_text or t.done or 0) - t.submitted,
                   "after_last_post": (t.done or 0) - (t.last_stream or t.done or 0),
                   "pickup": (t.taken or 0) - t.submitted, "posts": t.stream_posts,
                   "error": 1.0 if t.error else 0.0})
    await client.close()
    h_lat = statistics.median(r.end - r.start for r in http)
    h_first = statistics.median((r.first_text or r.end) - r.start for r in http)
    r_lat = statistics.median(x["latency"] for x in rp)
    r_first = statistics.median(x["first"] for x in rp)
    return {"jobs": jobs, "max_tokens": max_tokens, "http_latency_s": h_lat,
            "runpod_latency_s": r_lat, "added_latency_s": r_lat - h_lat,
            "http_first_s": h_first, "runpod_first_s": r_first,
            "added_first_s": r_first - h_first,
            "pickup_s": statistics.median(x["pickup"] for x in rp),
            "after_last_post_s": statistics.median(x["after_last_post"] for x in rp),
            "stream_posts": statistics.median(x["posts"] for x in rp),
            "errors": sum(x["error"] for x in rp)}


def wait_polled(queue: JobQueue, rp: servers.Proc, timeout: float = 420.0) -> None:
    """The SDK asks for jobs only once the engine is up."""
    t0 = time.perf_counter()
    while not queue.polled.wait(0.2):
        if rp.proc.poll() is not None or time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"RunPod worker did not start:\n{rp.tail()}")


def start_pair(model: Path, tmp: Path, engine_args: dict[str, Any], vllm_first: bool,
               src: Path) -> tuple[servers.Proc, servers.Proc]:
    """Start both servers one after the other (never overlapping): start-up is timed too."""
    procs: dict[str, servers.Proc] = {}
    for name in (["vllm", "worker"] if vllm_first else ["worker", "vllm"]):
        d = tmp / f"{model.name}-{name}"
        if name == "worker":
            p = servers.start_worker(model, d, MAX_MODEL_LEN, MAX_NUM_SEQS, src)
            servers.wait_ready(p, "/ready")
        else:
            p = servers.start_vllm(model, d, engine_args)
            servers.wait_ready(p, "/v1/models")
        procs[name] = p
        log(f"{name} ready in {p.ready_s:.1f}s {p.timeline or ''}")
    return procs["worker"], procs["vllm"]


def startup_record(w: servers.Proc, v: servers.Proc) -> dict[str, Any]:
    engine = w.timeline.get("engine", 0.0)
    return {"worker_ready_s": w.ready_s, "vllm_ready_s": v.ready_s, "worker_engine_s": engine,
            "worker_overhead_s": w.ready_s - engine, "timeline": w.timeline}


async def main_async(args: argparse.Namespace) -> int:
    mode = MODES["quick" if args.quick else "full"]
    levels = [1, 8, 32]
    cache = Path(args.cache)
    t_start = time.time()
    env_before = report.environment()
    log("parser benchmark ...")
    parser = parser_bench.parser_benchmark(rounds=mode["parser_rounds"])
    log("tiny models ...")
    loop_dir = loop_model.ensure_loop_model(cache)
    from worker.tiny import ensure_tiny_model

    random_dir = ensure_tiny_model("random", cache)
    engine_args = servers.resolved_engine_args(loop_dir, MAX_MODEL_LEN, MAX_NUM_SEQS)
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "levels": levels,
                               "settings": {k: v for k, v in mode.items()},
                               "engine_args": engine_args, "parser": parser, "startup": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    started: list[servers.Proc] = []
    try:
        log("starting the servers on the loop model (one at a time) ...")
        w, v = start_pair(loop_dir, tmp, engine_args, vllm_first=False, src=Path(args.worker_src))
        started += [w, v]
        results["startup"].append(startup_record(w, v))
        log("serving comparison (loop model) ...")
        results["loop"] = await compare([w, v], mode, levels, mode["repeats"])
        log("TTFT in bursts ...")
        results["ttft"] = await ttft_bursts([w, v], levels, mode["bursts"])
        servers.stop(v)
        # The RunPod worker and the random-model servers start together (not timed).
        rp: servers.Proc | None = None
        queue = JobQueue()
        if mode["runpod_jobs"] and not args.skip_runpod:
            queue.start()
            rp = servers.start_runpod(loop_dir, tmp / "runpod", queue.url, MAX_MODEL_LEN,
                                      MAX_NUM_SEQS)
            started.append(rp)
        pair: list[servers.Proc] = []
        if mode["random"] and not args.skip_random:
            pair = [servers.start_worker(random_dir, tmp / "random-worker", MAX_MODEL_LEN,
                                         MAX_NUM_SEQS, Path(args.worker_src)),
                    servers.start_vllm(random_dir, tmp / "random-vllm",
                                       engine_args | {"model": str(random_dir)})]
            started += pair
        log("starting the RunPod worker" + (" and the random-model servers" if pair else "")
            + " (together; not timed) ...")
        if pair:
            servers.wait_ready(pair[0], "/ready")
            servers.wait_ready(pair[1], "/v1/models")
        if rp is not None:
            await asyncio.to_thread(wait_polled, queue, rp)
            log("RunPod worker loop vs HTTP ...")
            results["runpod"] = await runpod_vs_http(w, queue, mode["runpod_jobs"], 16)
            servers.stop(rp)
            queue.close()
        servers.stop(w)
        if pair:
            log("throughput on the random model ...")
            results["random"] = await compare(pair, mode, [8, 32], 4)
    finally:
        for p in started:
            servers.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    results["environment"] = env_before | {"load_after": report.load_average(),
                                           "elapsed_s": time.time() - t_start}
    write_outputs(results, Path(args.out), Path(args.markdown))
    log(f"done in {time.time() - t_start:.0f}s: {args.markdown}, {args.out}/")
    return 0


def write_outputs(results: dict[str, Any], out: Path, markdown: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=report.jsonable))
    plots.plots(results, out)
    text = report.markdown(results, " ".join(["python", *sys.argv]))
    old = markdown.read_text() if markdown.exists() else ""
    # The sections bench/batch.py and bench/responses.py write (from the first of their
    # markers to the end of the page) are kept until those scripts run again.
    starts = [old.find(m) for m in KEPT_SECTIONS if m in old]
    if starts:
        text = text.rstrip("\n") + "\n\n" + old[min(starts):].rstrip("\n") + "\n"
    markdown.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats, no RunPod and random-model phases (~3 min)")
    ap.add_argument("--cache", default=os.environ.get("TINY_MODEL_CACHE")
                    or str(Path(tempfile.gettempdir()) / "bench-tiny-models"),
                    help="where the tiny checkpoints are built and reused (TINY_MODEL_CACHE)")
    ap.add_argument("--out", default=str(servers.REPO / "bench" / "results"))
    ap.add_argument("--markdown", default=str(servers.REPO / "BENCHMARKS.md"))
    ap.add_argument("--worker-src", default=str(servers.REPO),
                    help="checkout whose `worker` package is benchmarked (for before/after)")
    ap.add_argument("--skip-runpod", action="store_true")
    ap.add_argument("--skip-random", action="store_true")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
