"""The package's layers point one way, and no two modules import each other.

platforms -> setup -> openai -> harmony -> engine (interface and the one vLLM module).
`worker.tiny` (test checkpoints) and `worker.bench` (load generator) stand apart: they
import only themselves, and only setup and the command line import them. Every import
counts, the lazy ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "worker"
RANK = {"engine": 0, "harmony": 1, "openai": 2, "setup": 3, "platforms": 4}
APART = {"tiny", "bench"}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The worker modules `name` imports (a `from pkg import mod` counts as pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("worker")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if not base.startswith("worker"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(name)
    return {m for m in found if m in known}


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK.keys() | APART else None


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_every_module_is_in_a_layer() -> None:
    loose = sorted(n for n in GRAPH if layer(n) is None
                   and n not in {"worker", "worker.__main__"})
    assert not loose, f"modules outside the layers: {loose}"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name: str) -> None:
    here = layer(name)
    for target in GRAPH[name]:
        there = layer(target)
        if name == "worker.__main__" or there is None:
            continue  # the command line dispatches to every layer; `worker` is the version
        if there in APART:
            assert here in (there, "setup", "platforms"), f"{name} imports {target}"
        elif here in APART:
            raise AssertionError(f"{name} ({here} stands apart) imports {target}")
        else:
            assert here is not None
            assert RANK[there] <= RANK[here], (
                f"{name} ({here}) imports {target} ({there}), a layer above it")


def test_no_import_cycles() -> None:
    seen: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(GRAPH[node]):
            if seen.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(GRAPH):
        if start not in seen:
            visit(start, [start])


def importers(package: str) -> set[str]:
    users = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == package or m.startswith(package + ".") for m in mods):
                users.add(name)
    return users


def test_only_the_engine_module_imports_vllm() -> None:
    assert importers("vllm") == {"worker.engine.vllm_engine"}


def test_only_the_engine_schema_checker_imports_xgrammar() -> None:
    # vLLM's grammar library, used by the vLLM engine's checker child (never vLLM itself)
    assert importers("xgrammar") == {"worker.engine.grammar_check"}
    assert {m for m in importers("worker.engine.grammar_check")} == {"worker.engine.vllm_engine"}


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: an engine module importing the OpenAI layer is caught."""
    fake = tmp_path / "bad.py"
    fake.write_text("from worker.openai.errors import InvalidRequest\n")
    found = imports("worker.engine.bad", fake, {**modules(), "worker.engine.bad": fake})
    assert found == {"worker.openai.errors"}
    assert RANK[layer("worker.openai.errors") or ""] > RANK[layer("worker.engine.bad") or ""]
