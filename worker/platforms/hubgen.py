"""`python -m worker hubgen [--check]`: `.runpod/hub.json` generated from the settings model.

Every setting the RunPod worker reads becomes one Hub environment input (its first
variable name, its default, its description, number bounds and choices), so the Hub
form cannot drift from `worker.setup.config.Settings`; `--check` fails when the file is stale.
The RunPod Hub schema has no secret input type: secrets are advanced string inputs
with no default whose description points to RunPod Secrets.
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

from worker.setup.config import Settings

HUB_PATH = Path(".runpod/hub.json")

# Read by `serve` or by the pod image only, never by the RunPod worker (RunPod authenticates
# callers itself, its SDK drains the jobs in flight on SIGTERM, and its own queue holds
# many jobs: the Files and Batches APIs' BATCH_DIR is the HTTP server's).
NOT_ON_RUNPOD = frozenset({"host", "port", "api_key", "max_request_bytes", "drain_seconds",
                           "public_key", "ssh_public_key", "ssh_password", "batch_dir"})
# Shown by default; everything else sits under the Hub form's "advanced" toggle.
BASIC = frozenset({"model", "max_model_len", "hf_token", "served_model_name",
                   "max_concurrency", "default_reasoning_effort"})
GPU_POOLS = "ADA_80_PRO,AMPERE_80,HOPPER_141,ADA_48_PRO,AMPERE_48"


def hub_config() -> dict[str, Any]:
    return {
        "title": "gpt-oss (vLLM)",
        "description": "OpenAI's gpt-oss-20b / gpt-oss-120b on vLLM: OpenAI-compatible chat "
        "completions with Harmony reasoning and tool calls, streaming, batch jobs; the model "
        "that fits the GPU is picked and sized automatically.",
        "type": "serverless",
        "category": "language",
        "config": {
            "runsOn": "GPU",
            "containerDiskInGb": 150,
            "gpuCount": 1,
            "gpuIds": GPU_POOLS,
            "presets": [
                {"name": "gpt-oss-120b (80 GB GPU)", "defaults": {"MODEL": "openai/gpt-oss-120b"}},
                {"name": "gpt-oss-20b (24 GB+ GPU)", "defaults": {"MODEL": "openai/gpt-oss-20b"}},
            ],
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
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is stale: run `python -m worker hubgen`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
