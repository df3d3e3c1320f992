"""Regenerate docs/CONFIG.md's configuration table from the settings model.

`<!-- config-table:start -->…<!-- config-table:end -->` in docs/CONFIG.md is replaced by
`worker.setup.config.markdown_table()`. `--check` exits 1 if the file is stale (the unit
tests run it), so the table cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python scripts/update-readme.py` from anywhere

from worker.setup.config import markdown_table  # noqa: E402

CONFIG_DOC = ROOT / "docs" / "CONFIG.md"
TABLE = re.compile(r"(<!-- config-table:start -->\n)(.*?)(<!-- config-table:end -->)", re.S)


def render(text: str) -> str:
    if not TABLE.search(text):
        raise SystemExit(f"{CONFIG_DOC}: no <!-- config-table:start/end --> markers")
    return TABLE.sub(lambda m: m.group(1) + markdown_table() + m.group(3), text)


def main(argv: list[str]) -> int:
    current = CONFIG_DOC.read_text()
    fresh = render(current)
    name = CONFIG_DOC.relative_to(ROOT)
    if "--check" in argv:
        if fresh != current:
            print(f"{name} is stale: run python scripts/update-readme.py", file=sys.stderr)
            return 1
        return 0
    CONFIG_DOC.write_text(fresh)
    print(f"updated {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
