"""Regenerate the docs' generated tables from the code.

`<!-- config-table:start -->…<!-- config-table:end -->` in docs/CONFIG.md is replaced by
`worker.setup.config.markdown_table()`, and `<!-- worker-vllm-table:start -->…end -->` in
docs/RUNPOD.md by `worker.setup.compat.markdown_table()` (worker-vllm's variables, each
supported, mapped or rejected). `--check` exits 1 if a file is stale (the unit tests run
it), so the tables cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python scripts/update-readme.py` from anywhere

from worker.setup import compat  # noqa: E402
from worker.setup.config import Settings  # noqa: E402
from worker.setup.config_env import markdown_table as settings_table  # noqa: E402

CONFIG_DOC = ROOT / "docs" / "CONFIG.md"
RUNPOD_DOC = ROOT / "docs" / "RUNPOD.md"


def _known() -> frozenset[str]:
    return frozenset(n for names in Settings.env_names().values() for n in names)


TABLES = [
    (CONFIG_DOC, "config-table", lambda: settings_table(Settings)),
    (RUNPOD_DOC, "worker-vllm-table", lambda: compat.markdown_table(_known())),
]


def render(path: Path, marker: str, table: str) -> str:
    text = path.read_text()
    pattern = re.compile(rf"(<!-- {marker}:start -->\n)(.*?)(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no <!-- {marker}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + table + m.group(3), text)


def main(argv: list[str]) -> int:
    stale = 0
    for path, marker, make in TABLES:
        current = path.read_text()
        fresh = render(path, marker, make())
        name = path.relative_to(ROOT)
        if "--check" in argv:
            if fresh != current:
                print(f"{name} is stale: run python scripts/update-readme.py", file=sys.stderr)
                stale = 1
        elif fresh != current:
            path.write_text(fresh)
            print(f"updated {name}")
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
