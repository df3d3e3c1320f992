"""Regenerate README.md's generated parts: the configuration table and included docs.

`<!-- config-table:start -->…<!-- config-table:end -->` is replaced by the table from
worker/config.py; `<!-- include:docs/X.md:start -->…<!-- include:docs/X.md:end -->` by that
file, its headings shifted to nest under the README's sections. `--check` exits 1 if the
README is stale (the unit tests run it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from worker.config import markdown_table

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"(<!-- include:(\S+):start -->\n)(.*?)(<!-- include:\2:end -->)", re.S)
TABLE = re.compile(r"(<!-- config-table:start -->\n)(.*?)(<!-- config-table:end -->)", re.S)
TOP_LEVEL = 3  # included docs start at ###


def _headings(lines: list[str]) -> list[int]:
    """Indexes of markdown headings, skipping `#` comments inside code fences."""
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#+ ", line):
            out.append(i)
    return out


def shifted(text: str) -> str:
    lines = text.splitlines()
    heads = _headings(lines)
    if heads:
        shift = TOP_LEVEL - min(len(lines[i]) - len(lines[i].lstrip("#")) for i in heads)
        for i in heads:
            lines[i] = "#" * shift + lines[i] if shift > 0 else lines[i][-shift:]
    return "\n".join(lines).strip() + "\n"


def render(readme: str) -> str:
    readme = TABLE.sub(lambda m: m.group(1) + markdown_table() + m.group(3), readme)
    return INCLUDE.sub(
        lambda m: m.group(1) + shifted((ROOT / m.group(2)).read_text()) + m.group(4), readme)


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    current = path.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("README.md is stale: run python scripts/update-readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(fresh)
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
