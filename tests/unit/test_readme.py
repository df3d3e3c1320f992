"""The README is a front page that reaches every doc, and the docs point at things that exist.

- docs/CONFIG.md's generated configuration table matches the settings model;
- README.md states the two commands, and CI runs the second;
- every docs/*.md the README links exists, and every docs/*.md is linked from the README;
- every relative link (and its #anchor) in the user docs resolves;
- every repository path the docs mention (`worker/...`, `tests/...`, ...), every
  `worker.x.y` name in a code span, every `python -m worker.x` module and every
  `python -m worker COMMAND` exists, so a moved module cannot leave a stale path behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_DOCS = [README, ROOT / "BENCHMARKS.md", ROOT / "RELIABILITY.md", *DOCS]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"(?<![\w./-])((?:worker|tests|bench|scripts|docs|\.runpod|\.ci)/[\w./-]*)")
DOTTED = re.compile(r"(?<![\w./-])(worker(?:\.\w+)+)")
PYTHON_M = re.compile(r"python3? -m (worker[\w.]*)")
SUBCOMMAND = re.compile(r"python3? -m worker ([a-z][\w-]*)")


def _prose(path: Path) -> str:
    """The file's text without fenced code blocks (links and spans are read from prose)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower().replace("`", ""))
    return re.sub(r"\s", "-", text)


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path).splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path)) if not re.match(r"^[a-z]+:", t)]


def test_config_table_is_regenerated() -> None:
    r = subprocess.run([sys.executable, "scripts/update-readme.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_states_the_two_commands_and_ci_runs_the_second() -> None:
    readme = README.read_text()
    assert "bash scripts/run-local.sh" in readme and "bash scripts/test.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_every_doc_and_only_existing_ones() -> None:
    linked = {t.split("#")[0] for t in _links(README)}
    linked_docs = {t for t in linked if t.startswith("docs/") and t.endswith(".md")}
    missing = sorted(t for t in linked_docs if not (ROOT / t).is_file())
    assert not missing, f"README links docs that do not exist: {missing}"
    unlinked = [d for d in (p.relative_to(ROOT).as_posix() for p in DOCS)
                if d not in linked_docs]
    assert not unlinked, f"docs not linked from README.md: {unlinked}"
    assert DOCS, "docs/ holds no .md file"


def test_relative_links_and_anchors_resolve() -> None:
    broken = []
    for doc in USER_DOCS:
        for target in _links(doc):
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _module_file(dotted: list[str]) -> Path | None:
    base = ROOT.joinpath(*dotted)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolves(name: str) -> bool:
    """`worker.a.b` is a module, or a module plus one name it defines."""
    parts = name.split(".")
    if _module_file(parts):
        return True
    module = _module_file(parts[:-1])
    if module is None:
        return False
    attr = re.escape(parts[-1])
    return re.search(rf"^\s*(?:async def|def|class)\s+{attr}\b|^{attr}\s*[:=]",
                     module.read_text(), re.M) is not None


def test_paths_and_modules_named_in_the_docs_exist() -> None:
    stale = []
    for doc in USER_DOCS:
        text = doc.read_text()
        for path in REPO_PATH.findall(text):
            clean = path.rstrip(".")
            if "*" not in clean and not (ROOT / clean).exists():
                stale.append(f"{doc.relative_to(ROOT)}: {clean}")
        for span in CODE_SPAN.findall(_prose(doc)):
            for name in DOTTED.findall(span):
                if not _resolves(name):
                    stale.append(f"{doc.relative_to(ROOT)}: {name}")
        for module in PYTHON_M.findall(text):
            if _module_file(module.split(".")) is None and not (
                    ROOT.joinpath(*module.split(".")) / "__main__.py").is_file():
                stale.append(f"{doc.relative_to(ROOT)}: python -m {module}")
    assert not stale, "the docs name paths or modules that do not exist:\n" + "\n".join(stale)


def test_commands_named_in_the_docs_exist() -> None:
    usage = subprocess.run([sys.executable, "-m", "worker", "help"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    commands = {line.split()[0] for line in usage.splitlines() if line.startswith("  ")}
    unknown = sorted({f"{doc.relative_to(ROOT)}: python -m worker {cmd}"
                      for doc in USER_DOCS for cmd in SUBCOMMAND.findall(doc.read_text())
                      if cmd not in commands})
    assert commands >= {"serve", "runpod", "plan", "bench"}, usage
    assert not unknown, "the docs name commands `python -m worker` does not have:\n" + \
        "\n".join(unknown)
