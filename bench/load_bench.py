"""Weight loading at the disk's bandwidth: vLLM's loaders on a real-size random checkpoint.

    python bench/load_bench.py --out DIR [--tag NAME] [--work /tmp/gpu-real] [--model DIR]
        [--loaders auto,fastsafetensors,runai_streamer] [--worker-env KEY=VALUE ...]

1. `python -m worker.tiny --kind weights-20b` writes gpt-oss-20b's config, tokenizer and
   ~13 GiB of random MXFP4 safetensors in the hub's three shards (`--model DIR`: use that
   checkpoint instead, e.g. the tiny `random-mxfp4` for a CPU dry run).
2. The disk: the shards' pages are dropped from the page cache (`posix_fadvise(DONTNEED)`,
   no root needed; `mincore` confirms), then read with `dd` (1 MiB blocks) one shard after
   another, all shards at once, and with `O_DIRECT`: the best of these is the bandwidth a
   loader is held to.
3. For each loader: drop the pages again, start the worker on the checkpoint with
   `LOAD_FORMAT=<loader>` (and `ENFORCE_EAGER=true`: no compile or graphs, which are not
   loading), and take vLLM's own figures: "Loading weights took" (reading and copying to the
   GPU) and "Model loading took" (that plus the MXFP4 repacking). One more start with the
   files read into the page cache first (`cat`; `mincore` shows how much stayed) shows what
   loading costs with no disk at all.

Writes DIR/<tag>-results.json and DIR/<tag>-table.md; prints the table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_server import PY, REPO, Server, cache_env, free_port, http_get, log, vllm_timeline

PAGE = os.sysconf("SC_PAGE_SIZE")


def shards(model: Path) -> list[Path]:
    return sorted(model.glob("*.safetensors"))


def evict(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident(paths: list[Path]) -> float:
    """The fraction of the files' pages in the page cache (mincore over a private map)."""
    libc = ctypes.CDLL(None, use_errno=True)
    have = total = 0
    for p in paths:
        size = p.stat().st_size
        if not size:
            continue
        with p.open("rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                return float("nan")
            have += sum(b & 1 for b in vec)
            total += pages
    return have / total if total else float("nan")


def dd_read(paths: list[Path], parallel: bool, direct: bool) -> dict[str, float]:
    """Read the files with dd (evicted first); bytes, seconds and GB/s."""
    evict(paths)
    before = resident(paths)
    flag = ["iflag=direct"] if direct else []
    cmds = [["dd", f"if={p}", "of=/dev/null", "bs=1M", *flag] for p in paths]
    t0 = time.perf_counter()
    if parallel:
        procs = [subprocess.Popen(c, stderr=subprocess.DEVNULL) for c in cmds]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run(c, stderr=subprocess.DEVNULL).returncode for c in cmds]
    secs = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in paths)
    return {"bytes": size, "seconds": round(secs, 3), "gb_per_s": round(size / secs / 1e9, 3),
            "resident_before": round(before, 4), "ok": all(c == 0 for c in codes)}


def load_once(model: Path, loader: str, args: argparse.Namespace, cold: bool,
              logfile: Path) -> dict[str, Any]:
    files = shards(model)
    if cold:
        evict(files)
    else:  # warm: read them into the page cache (the loaders above may have bypassed it)
        for p in files:
            subprocess.run(["dd", f"if={p}", "of=/dev/null", "bs=1M"], check=False,
                           stderr=subprocess.DEVNULL)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_CACHE")}
    env.update(cache_env(args.work / "caches" / f"{args.tag}-load"))
    env.update({"MODEL": str(model), "SERVED_MODEL_NAME": "load", "HOST": "127.0.0.1",
                "PORT": str(port), "LOAD_FORMAT": loader, "ENFORCE_EAGER": "true",
                "MAX_MODEL_LEN": "8192", "MAX_NUM_SEQS": "8", "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1"})
    env.update(dict(kv.split("=", 1) for kv in args.worker_env))
    row: dict[str, Any] = {"loader": loader, "cold": cold, "resident_before": resident(files)}
    srv = Server(f"worker[{loader}]", [PY, "-m", "worker", "serve"], env, "/ready", port,
                 logfile)
    try:
        row["ready_s"] = round(srv.start(), 2)
        status, body = http_get(srv.ready_url)
        if status == 200:
            row["timeline"] = json.loads(body).get("timeline")
    except RuntimeError as exc:
        row["error"] = str(exc)[-2000:]
    finally:
        row["exit"] = srv.stop()
    row["vllm_phases"] = vllm_timeline(logfile)
    size = sum(p.stat().st_size for p in files)
    for key in ("weight_read", "weight_load"):
        secs = row["vllm_phases"].get(key)
        if secs:
            row[f"{key}_gb_per_s"] = round(size / secs / 1e9, 3)
    log(f"{loader} cold={cold}: {row.get('vllm_phases')} {row.get('error', '')[:300]}")
    return row


def table(res: dict[str, Any]) -> str:
    disk = res["disk"]
    best = max(d["gb_per_s"] for d in disk.values() if d["ok"])
    lines = [f"checkpoint: {res['bytes'] / 1e9:.2f} GB in {res['files']} files; disk (dd, "
             "pages dropped first): " + ", ".join(f"{k} {v['gb_per_s']} GB/s"
                                                  for k, v in disk.items()), "",
             "| loader | page cache | weights read s | GB/s | of best disk | model load s "
             "(with MXFP4 repack) | GB/s |", "|---|---|---|---|---|---|---|"]
    for r in res["loads"]:
        p = r["vllm_phases"]
        rate = r.get("weight_read_gb_per_s") or r.get("weight_load_gb_per_s")
        share = f"{rate / best:.0%}" if rate else "n/a"
        lines.append(f"| {r['loader']} | {'dropped' if r['cold'] else 'read first'} "
                     f"({r['resident_before']:.0%} resident) | {p.get('weight_read', 'n/a')} | "
                     f"{r.get('weight_read_gb_per_s', 'n/a')} | {share} | "
                     f"{p.get('weight_load', 'n/a')} | {r.get('weight_load_gb_per_s', 'n/a')} |"
                     + (f" error: {r['error'][:120]}" if "error" in r else ""))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tag", default="load")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-real"))
    ap.add_argument("--model", type=Path, help="an existing checkpoint (default: build one)")
    ap.add_argument("--loaders", default="auto,fastsafetensors,runai_streamer")
    ap.add_argument("--worker-env", action="append", default=[], help="extra KEY=VALUE")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.work / "logs" / args.tag
    logs.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"tag": args.tag, "loads": []}
    if args.model is None:
        t0 = time.perf_counter()
        out = subprocess.run([PY, "-m", "worker.tiny", "--kind", "weights-20b", "--cache",
                              str(args.work / "models")], cwd=REPO, check=True,
                             capture_output=True, text=True)
        args.model = Path(out.stdout.strip().splitlines()[-1])
        res["build_s"] = round(time.perf_counter() - t0, 1)
        log(f"built {args.model} in {res['build_s']} s")
    files = shards(args.model)
    res["files"], res["bytes"] = len(files), sum(p.stat().st_size for p in files)
    res["disk"] = {name: dd_read(files, parallel, direct) for name, parallel, direct in (
        ("one by one", False, False), ("all at once", True, False), ("O_DIRECT", False, True))}
    log(f"disk: {res['disk']}")
    result_file = args.out / f"{args.tag}-results.json"
    loaders = [x for x in args.loaders.split(",") if x]
    for i, loader in enumerate(loaders):
        res["loads"].append(load_once(args.model, loader, args, True,
                                      logs / f"{i}-{loader}-cold.log"))
        result_file.write_text(json.dumps(res, indent=1))
    res["loads"].append(load_once(args.model, loaders[0], args, False,
                                  logs / f"{loaders[0]}-cached.log"))
    result_file.write_text(json.dumps(res, indent=1))
    text = table(res)
    (args.out / f"{args.tag}-table.md").write_text(text + "\n")
    subprocess.run(["tar", "czf", str(args.out / f"{args.tag}-logs.tgz"), "-C", str(logs.parent),
                    args.tag], check=False)
    print(text)
    return 0 if all("error" not in r for r in res["loads"]) else 1


if __name__ == "__main__":
    sys.exit(main())
