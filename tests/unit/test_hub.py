""".runpod/hub.json is generated from the settings model and in sync; tests.json is sane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from worker.platforms import hubgen
from worker.platforms.runpod_jobs import BatchJob, ChatJob, ModelsJob, normalize_job_input
from worker.setup.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def hub() -> dict[str, Any]:
    return json.loads((ROOT / ".runpod/hub.json").read_text())


def test_hub_json_is_up_to_date() -> None:
    assert hubgen.main(["--check", "--path", str(ROOT / ".runpod/hub.json")]) == 0, \
        "run `python -m worker hubgen`"


def test_hub_json_has_the_required_fields() -> None:
    h = hub()
    assert {"title", "description", "type", "category", "config"} <= set(h)
    assert (h["type"], h["category"]) == ("serverless", "language")
    config = h["config"]
    assert config["runsOn"] == "GPU" and config["gpuCount"] >= 1 and config["gpuIds"]
    assert isinstance(config["containerDiskInGb"], int)


def test_every_runpod_setting_is_an_input_with_its_default() -> None:
    inputs = {e["key"]: e["input"] for e in hub()["config"]["env"]}
    names = Settings.env_names()
    expected = {names[f][0]: f for f in Settings.model_fields if f not in hubgen.NOT_ON_RUNPOD}
    assert set(inputs) == set(expected)
    for key, field_name in expected.items():
        field, spec = Settings.model_fields[field_name], inputs[key]
        assert spec["name"] and spec["description"]
        assert spec["type"] in {"string", "number", "boolean"}
        if field.annotation is SecretStr or field.annotation == SecretStr | None:
            assert spec["advanced"] and "default" not in spec and "RUNPOD_SECRET" in \
                spec["description"]
        elif field.default is not None:
            assert spec["default"] == field.default
        else:
            assert "default" not in spec
        for option in spec.get("options", []):  # every choice is one Settings accepts
            Settings.from_env({key: option["value"]})
    assert inputs["HF_TOKEN"]["advanced"] is True


def test_presets_only_set_known_variables() -> None:
    keys = {e["key"] for e in hub()["config"]["env"]}
    for preset in hub()["config"]["presets"]:
        assert set(preset["defaults"]) <= keys
        Settings.from_env({k: str(v) for k, v in preset["defaults"].items()})


def test_tests_json_jobs_are_accepted_inputs() -> None:
    spec = json.loads((ROOT / ".runpod/tests.json").read_text())
    kinds = {type(normalize_job_input(t["input"])) for t in spec["tests"]}
    assert kinds == {ChatJob, ModelsJob, BatchJob}
    assert all(t["name"] and t.get("timeout", 1) > 0 for t in spec["tests"])
    env = {e["key"]: e["value"] for e in spec["config"]["env"]}
    Settings.from_env(env)
    assert spec["config"]["gpuTypeId"] and spec["config"]["gpuCount"] == 1


def test_hub_files_ask_for_the_base_image_cuda() -> None:
    from worker import VLLM_VERSION
    from worker.platforms import runpod_pools

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"FROM vllm/vllm-openai:v{VLLM_VERSION}\n" in dockerfile
    assert runpod_pools.IMAGE_CUDA[VLLM_VERSION] == "13.0"  # vLLM's images: CUDA 13.0 builds
    assert runpod_pools.allowed_cuda_versions() == ["13.0"]
    assert hub()["config"]["allowedCudaVersions"] == ["13.0"]
    tests = json.loads((ROOT / ".runpod/tests.json").read_text())
    assert tests["config"]["allowedCudaVersions"] == ["13.0"]
    assert set(runpod_pools.allowed_cuda_versions("0.32.0")) <= set(
        runpod_pools.RUNPOD_CUDA_VERSIONS)


def test_every_offered_pool_fits_every_preset_and_the_default() -> None:
    from worker.platforms.runpod_pools import POOLS, pool_refusal

    config = hub()["config"]
    pools = config["gpuIds"].split(",")
    assert pools == ["ADA_80_PRO", "AMPERE_80", "HOPPER_141", "BLACKWELL_180"]
    for preset in [{"defaults": {}}, *config["presets"]]:
        for pool in pools:
            assert pool_refusal(pool, preset["defaults"]) is None, (preset, pool)
    assert pool_refusal("AMPERE_48", {"MODEL": "openai/gpt-oss-120b"}) is not None
    assert pool_refusal("AMPERE_24", {"MODEL": "openai/gpt-oss-20b"}) is None
    names = [p["name"] for p in config["presets"]]
    assert names == ["gpt-oss-20b (24 GB+ GPU)", "gpt-oss-120b (80 GB+ GPU)"]
    assert set(pools) <= set(POOLS)


def test_check_fails_on_a_preset_the_planner_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = hub()
    bad["config"]["gpuIds"] += ",AMPERE_48"
    bad["config"]["allowedCudaVersions"] = ["12.8", "13.0"]
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(bad, indent=2))
    tests = json.loads((ROOT / ".runpod/tests.json").read_text())
    tests["config"]["env"] = [{"key": "MODEL", "value": "openai/gpt-oss-120b"}]
    (tmp_path / "tests.json").write_text(json.dumps(tests))
    assert hubgen.main(["--check", "--path", str(path)]) == 1
    err = capsys.readouterr().err
    assert "preset 'gpt-oss-120b (80 GB+ GPU)' would be refused on AMPERE_48" in err
    assert "allowedCudaVersions is ['12.8', '13.0']" in err
    assert "tests.json: the planner refuses its settings on NVIDIA L40S" in err
    assert "is stale" in err
