"""First vs second cold start on the CPU engine: a fresh vs a warm compile cache.

    .venv/bin/python bench/cold_start.py                 # engine, torch.compile on (default)
    .venv/bin/python bench/cold_start.py --mode worker   # `python -m worker serve` to /ready

Each start is a fresh process. Both starts share one cache volume laid out by
`worker.setup.weights.cache_env` (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR);
the first finds it empty, the second finds what the first compiled. `--mode engine` builds
`VllmEngine` with `enforce_eager=False` (the worker itself forces eager on the CPU, where
the compile cache has nothing to save) and reports vLLM's phases from its log lines;
`--mode worker` measures the real worker from spawn to /ready. Prints one JSON line per
start and the ratio first/second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOGS: Path | None = None  # --logs: keep each engine start's output there


def child(model: str, eager: bool) -> None:
    """One engine start in this process; prints its timings as JSON."""
    t0 = time.perf_counter()
    from worker.engine.vllm_engine import EngineConfig, VllmEngine

    config = EngineConfig(
        model=model, served_model_names=("tiny",), device="cpu",
        engine_args={"model": model, "dtype": "bfloat16", "max_model_len": 1024,
                     "max_num_seqs": 8, "enforce_eager": eager, "disable_log_stats": True},
        warmup=False,
    )

    async def run() -> dict[str, float]:
        t1 = time.perf_counter()
        engine = await VllmEngine.build(config)
        t2 = time.perf_counter()
        await engine.warmup()
        t3 = time.perf_counter()
        await engine.shutdown()
        return {"import": t1 - t0, "engine_build": t2 - t1, "warmup": t3 - t2}

    print(json.dumps({k: round(v, 2) for k, v in asyncio.run(run()).items()}), flush=True)


def start_engine(model: str, eager: bool, env: dict[str, str]) -> dict[str, Any]:
    from worker.setup.startup_log import VllmStartupLog

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", model, *(["--eager"] * eager)],
                         env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"engine start failed:\n{out.stderr[-4000:]}")
    timings = json.loads(out.stdout.strip().splitlines()[-1])
    if LOGS is not None:
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / f"start-{len(list(LOGS.iterdir()))}.log").write_text(out.stdout + out.stderr)
    # The CPU platform spawns the engine core, which the in-process hook cannot follow:
    # read vLLM's lines from its output instead.
    startup = VllmStartupLog()
    for line in (out.stdout + out.stderr).splitlines():
        startup.feed(line)
    seen = {k: round(v, 2) for k, v in startup.collect().items() if k != "load_start"}
    return {"wall": round(wall, 2), **timings, **seen, **cpu_compile(out.stdout + out.stderr)}


def cpu_compile(log: str) -> dict[str, float]:
    """The CPU runner logs no compile time: take it from its warm-up lines' timestamps (1 s)."""
    stamps = {}
    for m in re.finditer(r"(\d\d:\d\d:\d\d) \[cpu_model_runner\.py:\d+\] Warming up "
                         r"(model for the compilation|done)", log):
        h, mi, sec = (int(x) for x in m.group(1).split(":"))
        stamps[m.group(2)] = h * 3600 + mi * 60 + sec
    if len(stamps) < 2:
        return {}
    return {"cpu_compile_warmup": float(stamps["done"] - stamps["model for the compilation"])}


def start_worker(model: str, env: dict[str, str]) -> dict[str, Any]:
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**env, "MODEL": model, "HOST": "127.0.0.1", "PORT": str(port),
           "MAX_MODEL_LEN": "1024", "MAX_NUM_SEQS": "8"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "worker", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                sys.exit(f"worker exited with {proc.returncode}")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if r.status_code == 200:
                    return {"wall": round(time.perf_counter() - t0, 2), **r.json()["timeline"]}
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("engine", "worker"), default="engine")
    ap.add_argument("--eager", action="store_true", help="engine mode without torch.compile")
    ap.add_argument("--model", help="checkpoint dir (default: the tiny random gpt-oss)")
    ap.add_argument("--pairs", type=int, default=1, help="first/second pairs to run")
    ap.add_argument("--logs", type=Path, help="keep each engine start's output in this folder")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.eager)
        return
    global LOGS
    LOGS = args.logs
    from worker.setup.weights import cache_env
    from worker.tiny import ensure_tiny_model

    model = args.model or str(ensure_tiny_model("random", ROOT / ".tiny"))
    ratios = []
    for pair in range(args.pairs):
        with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
            volume = Path(tmp) / "volume"
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("VLLM_", "TORCHINDUCTOR_", "TRITON_"))}
            env.update(cache_env(volume))
            env.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TMPDIR=tmp,
                       PYTHONPATH=str(ROOT))
            runs = []
            for label in ("first (empty cache)", "second (warm cache)"):
                if args.mode == "engine":
                    result = start_engine(model, args.eager, env)
                else:
                    result = start_worker(model, env)
                runs.append(result)
                print(json.dumps({"pair": pair, "start": label, **result}), flush=True)
            size = sum(p.stat().st_size for p in volume.rglob("*") if p.is_file())
        ratios.append(runs[0]["wall"] / runs[1]["wall"])
        print(f"pair {pair}: compile cache {size / 2**20:.1f} MiB, first {runs[0]['wall']:.1f}s,"
              f" second {runs[1]['wall']:.1f}s, ratio {ratios[-1]:.2f}x", flush=True)
    ratios.sort()
    print(f"mode={args.mode} eager={args.eager or args.mode == 'worker'}: first/second cold "
          f"start ratio, median of {len(ratios)}: {ratios[len(ratios) // 2]:.2f}x")


if __name__ == "__main__":
    main()
