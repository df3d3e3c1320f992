"""Build a tiny gpt-oss checkpoint and print its directory.

    python -m worker.tiny --kind KIND --cache DIR

KIND: random, scripted, random-mxfp4, shape-20b, shape-120b or weights-20b.

`shape-20b` / `shape-120b` write gpt-oss's real config and tokenizer with no weights: serve them
with LOAD_FORMAT=dummy (random weights at the real size: real cost, noise for output).
`weights-20b` adds random weights at gpt-oss-20b's real size (~13 GiB of MXFP4 safetensors),
to time weight loading; its output is noise too.

Offline: the vocabulary comes from `openai_harmony` (oss-harmony embeds it; openai-harmony
0.0.8 reads `$TIKTOKEN_ENCODINGS_BASE/o200k_base.tiktoken`). An existing build is reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from worker.tiny import KINDS, ensure_tiny_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.tiny", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--cache", type=Path, required=True,
                        help="directory holding the built models (created if missing)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    path = ensure_tiny_model(args.kind, args.cache)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"{args.kind}: {size / 1e6:.1f} MB in {time.monotonic() - start:.1f} s", file=sys.stderr)
    if args.kind.startswith("weights-"):
        print(f"{args.kind}: random weights, for timing the load only: the output is NOISE",
              file=sys.stderr)
    if args.kind.startswith("shape-"):
        print(f"{args.kind}: config only. Serve it with LOAD_FORMAT=dummy: random weights, the "
              "output is NOISE (the cost per token and per start is the real model's)",
              file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
