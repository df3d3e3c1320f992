"""`python -m worker hubgen [--check]`: `.runpod/hub.json` generated from the settings model.

Every setting the RunPod worker reads becomes one Hub environment input (its first
variable name, its default, its description, number bounds and choices), so the Hub
form cannot drift from `worker.setup.config.Settings`. The RunPod Hub schema has no secret
input type: secrets are advanced string inputs with no default whose description points to
RunPod Secrets.

A user deploys from the Hub blind, so the file only offers what works:
`allowedCudaVersions` are those of the base image's CUDA build and newer (a host whose
driver is older cannot run it), and the GPU pools (`gpuIds`, one list for every preset in
RunPod's schema) are those on which the fit planner accepts every preset and the default
model, each pool judged by its weakest card (`worker.platforms.runpod_pools`).
`--check` fails when the file is stale, when a preset in it would be refused on one of its
pools, or when `tests.json` asks for other CUDA versions or a card its model does not fit.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from worker.platforms.runpod_pools import (
    allowed_cuda_versions,
    check_hub,
    check_tests,
    offered_pools,
    preset_name,
)
from worker.setup.config import Settings

HUB_PATH = Path(".runpod/hub.json")
TESTS_NAME = "tests.json"  # beside hub.json; hand-written, checked here

# Read by `serve` or by the pod image only, never by the RunPod worker (RunPod authenticates
# callers itself, its SDK drains the jobs in flight on SIGTERM, and its own queue holds
# many jobs: the Files and Batches APIs' BATCH_DIR is the HTTP server's).
NOT_ON_RUNPOD = frozenset({"host", "port", "api_key", "max_request_bytes", "drain_seconds",
                           "public_key", "ssh_public_key", "ssh_password", "batch_dir"})
# Shown by default; everything else sits under the Hub form's "advanced" toggle.
BASIC = frozenset({"model", "max_model_len", "hf_token", "served_model_name",
                   "max_concurrency", "default_reasoning_effort"})
# The Hub's presets: (short name, environment defaults). MODEL unset is one more (the default).
PRESETS: tuple[tuple[str, dict[str, str]], ...] = (
    ("gpt-oss-20b", {"MODEL": "openai/gpt-oss-20b"}),
    ("gpt-oss-120b", {"MODEL": "openai/gpt-oss-120b"}),
)


def hub_config() -> dict[str, Any]:
    pools = offered_pools([env for _, env in PRESETS])
    return {
        "title": "gpt-oss (vLLM)",
        "description": "OpenAI's gpt-oss-20b / gpt-oss-120b (or any gpt-oss checkpoint on the "
        "Hub) on vLLM: OpenAI-compatible chat completions with Harmony reasoning and tool "
        "calls, streaming, batch jobs; gpt-oss-20b unless MODEL says otherwise, sized to the "
        "GPU automatically.",
        "type": "serverless",
        "category": "language",
        "config": {
            "runsOn": "GPU",
            "containerDiskInGb": 150,
            "gpuCount": 1,
            "gpuIds": ",".join(pools),
            "allowedCudaVersions": allowed_cuda_versions(),
            "presets": [{"name": preset_name(name, env), "defaults": env}
                        for name, env in PRESETS],
            "env": [env_entry(name, field) for name, field in Settings.model_fields.items()
                    if name not in NOT_ON_RUNPOD],
        },
    }


def env_entry(name: str, field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    assert isinstance(extra, dict)
    names = [str(n) for n in extra["env"]]  # type: ignore[union-attr]
    doc = str(extra["doc"]).replace("`", "")
    if len(names) > 1:
        doc += f" (Also read from {', '.join(names[1:])}.)"
    kind = _base_type(field.annotation)
    spec: dict[str, Any] = {"name": name.replace("_", " ").capitalize(), "type": "string",
                            "description": doc}
    if kind is SecretStr:
        spec["description"] = (f"{doc} Secret: store it as a RunPod Secret and enter "
                               f"{{{{ RUNPOD_SECRET_{name} }}}} here.")
    elif kind is bool:
        spec.update(type="boolean", trueValue="true", falseValue="false")
    elif kind in (int, float):
        spec["type"] = "number"
        for meta in field.metadata:
            if getattr(meta, "ge", None) is not None:
                spec["min"] = meta.ge
            if getattr(meta, "le", None) is not None:
                spec["max"] = meta.le
    elif typing.get_origin(kind) is Literal:
        spec["options"] = [{"label": str(v), "value": str(v)} for v in typing.get_args(kind)]
    if field.default is not None and kind is not SecretStr:
        spec["default"] = field.default
    spec["advanced"] = name not in BASIC or kind is SecretStr
    return {"key": names[0], "input": spec}


def _base_type(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def render() -> str:
    return json.dumps(hub_config(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[argv.index("--path") + 1]) if "--path" in argv else HUB_PATH
    text = render()
    if "--check" in argv:
        if not path.is_file():
            print(f"{path} is missing: run `python -m worker hubgen`", file=sys.stderr)
            return 1
        problems = check_hub(json.loads(path.read_text()))
        tests = path.parent / TESTS_NAME
        problems += check_tests(json.loads(tests.read_text())) if tests.is_file() else [
            f"{tests} is missing"]
        if path.read_text() != text:
            problems.append(f"{path} is stale: run `python -m worker hubgen`")
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
