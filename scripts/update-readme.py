"""Regenerate the README's configuration table from worker/config.py."""

from __future__ import annotations

from pathlib import Path

from worker.config import markdown_table

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
readme.write_text(f"{head}{START}\n{markdown_table()}{END}{tail}")
print(f"updated {readme}")
