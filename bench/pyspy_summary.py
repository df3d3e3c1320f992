"""Where a start's wall time went, from a py-spy raw profile (`bench/gpu_server.py`'s `--pyspy`).

    python bench/pyspy_summary.py FILE [--rate 50] [--top 30] [--match TEXT ...]

py-spy samples every thread of every process `--rate` times a second, idle ones included, so
a thread's samples over the rate are its wall seconds. For each process and thread with at
least a second of samples, prints its seconds and the functions it spent them in, inclusively
(a function counts once per sample wherever it is on the stack), largest first; import
machinery frames are skipped, the module being imported is kept. `--match` lists only
functions whose name or file contains one of the texts.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

SKIP = re.compile(r"<frozen importlib|_call_with_frames_removed|^_find_and_load|"
                  r"^_load_unlocked|exec_module|^_handle_fromlist")


def parse(path: Path) -> dict[tuple[str, str], list[tuple[list[str], int]]]:
    """(process, thread) -> [(frames root first, samples)]."""
    out: dict[tuple[str, str], list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        proc = "?"
        while frames and frames[0].startswith("process "):  # parent first, then children
            proc = frames.pop(0)
            while proc.count('"') % 2 and frames:  # the command line may hold a ";"
                proc += ";" + frames.pop(0)
        thread = frames.pop(0) if frames and frames[0].startswith("thread ") else "all threads"
        out[(proc[:100], thread)].append((frames, int(count)))
    return out


def summary(path: Path, rate: float, top: int, match: list[str]) -> str:
    lines = []
    for (proc, thread), stacks in sorted(parse(path).items(),
                                         key=lambda kv: -sum(c for _, c in kv[1])):
        total = sum(c for _, c in stacks)
        if total < rate:
            continue
        lines.append(f"\n{proc} {thread}: {total / rate:.1f} s")
        incl: Counter[str] = Counter()
        for frames, count in stacks:
            for f in {f for f in frames if not SKIP.search(f)}:
                incl[f] += count
        shown = 0
        for f, c in incl.most_common():
            if match and not any(m in f for m in match):
                continue
            lines.append(f"  {c / rate:7.1f} s  {c / total:5.1%}  {f}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--match", action="append", default=[])
    args = ap.parse_args()
    print(summary(args.file, args.rate, args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
