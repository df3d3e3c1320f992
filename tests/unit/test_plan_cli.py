"""`python -m worker plan`: main(argv, env) with named cards and a faked probe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.setup import plan_cli
from worker.setup.gpu import lookup_gpu

ROOT = Path(__file__).resolve().parents[2]
BIG = {"MODEL": "openai/gpt-oss-120b"}


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = plan_cli.main(argv, env, out=out)
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unless a test says otherwise, the machine has no GPU (no NVML is touched)."""
    monkeypatch.setattr(plan_cli, "probe", lambda env: None)


def test_120b_on_l40s_refused_with_suggestion() -> None:
    code, text = run(["--gpu", "L40S"], BIG)
    assert code == 2
    assert "hardware: NVIDIA L40S (45.0 GiB, compute capability 8.9, ada)" in text
    assert "largest context         0 tokens" in text
    assert "verdict: does not fit" in text
    assert "reason:  openai/gpt-oss-120b does not fit NVIDIA L40S" in text
    assert ("suggest: Use H100 ×1, or 2× L40S with TENSOR_PARALLEL_SIZE=2, or "
            "MODEL=openai/gpt-oss-20b (fits here)") in text


def test_120b_on_h100_fits_and_prints_largest_context() -> None:
    code, text = run(["--gpu", "H100"], BIG)
    assert code == 0
    for line in ("attention backend       FLASH_ATTN", "max_model_len           131072",
                 "max_num_batched_tokens  1024", "weights                 61.43 GiB",
                 "KV bytes per token      36864 (18 full-attention layers)",
                 "largest context         131072 tokens (the model's maximum)",
                 "full-length sequences   2 at once (at 131072 tokens)",
                 "verdict: fits: MAX_MODEL_LEN=131072"):
        assert line in text


def test_count_and_settings_are_used() -> None:
    code, text = run(["--gpu", "l40s", "--count", "2"], BIG)
    assert code == 0 and "tensor parallel size    2" in text
    env = {**BIG, "MAX_MODEL_LEN": "131072", "GPU_MEMORY_UTILIZATION": "0.85"}
    code, text = run(["--gpu", "h100"], env)
    assert code == 2
    assert "suggest: Set MAX_MODEL_LEN=102400 or less" in text


def test_json_output() -> None:
    code, text = run(["--gpu", "B200", "--json"], {"MODEL": "openai/gpt-oss-20b"})
    body = json.loads(text)
    assert code == 0 and body["ok"] is True
    assert body["engine_args"]["attention_backend"] == "FLASHINFER"
    assert body["env"] == {"VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8": "1"}
    assert body["plan"]["fit"]["max_context"] == 131072
    assert body["hardware"]["compute_capability"] == [10, 0]
    code, text = run(["--gpu", "L40S", "--json"], BIG)
    body = json.loads(text)
    assert code == 2 and body["ok"] is False
    assert body["error"]["suggestion"].startswith("Use H100 ×1")
    assert body["fit"]["max_context"] == 0


def test_invalid_settings_and_arguments() -> None:
    code, text = run(["--gpu", "H100"], {"MAX_MODEL_LEN": "lots"})
    assert code == 2 and "MAX_MODEL_LEN" in text and "verdict: invalid configuration" in text
    code, text = run(["--gpu", "V100"], BIG)
    assert code == 2 and "unknown GPU 'V100'" in text
    code, text = run(["--count", "2"], BIG)
    assert code == 2 and "--count needs a GPU" in text
    code, text = run(["--gpu", "H100"], {**BIG, "KV_CACHE_DTYPE": "fp8"})
    assert code == 2 and "verdict: refused" in text and "#23832" in text
    assert run(["--bogus"], BIG)[0] == 2


def test_unset_model_is_one_default_and_auto_follows_the_card() -> None:
    for card in ("H100", "L40S"):
        code, text = run(["--gpu", card], {})
        assert code == 0 and "model:    openai/gpt-oss-20b  (MODEL not set: the default" in text
    code, text = run(["--gpu", "H100"], {"MODEL": "auto"})
    assert code == 0 and "model:    openai/gpt-oss-120b  (MODEL=auto:" in text
    assert "workers on other GPUs may serve another model" in text
    code, text = run(["--gpu", "L40S"], {"MODEL": "auto"})
    assert code == 0 and "model:    openai/gpt-oss-20b  (MODEL=auto:" in text
    assert "max_model_len           131072" in text


def test_probed_gpu_used_without_gpu_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_cli, "probe", lambda env: lookup_gpu("A100-80GB"))
    code, text = run([], BIG)
    assert code == 0 and "hardware: NVIDIA A100-SXM4-80GB" in text
    assert "(named with --gpu)" not in text and "TRITON_ATTN" in text


def test_cpu_without_model_plans_the_tiny_model() -> None:
    code, text = run([], {})
    assert code == 0
    assert "hardware: no GPU: the CPU engine" in text
    assert "model:    tiny-gpt-oss (random, CPU)" in text
    assert "attention backend       CPU_ATTN" in text
    assert "env                     VLLM_CPU_KVCACHE_SPACE=1" in text
    assert "verdict: fits: MAX_MODEL_LEN=4096" in text


def test_local_model_folder(tmp_path: Path) -> None:
    config = {"model_type": "gpt_oss", "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 64, "hidden_size": 64,
              "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"],
              "max_position_embeddings": 131072, "vocab_size": 201088}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    code, text = run(["--gpu", "L4"], {"MODEL": str(tmp_path)})
    assert code == 0
    assert f"model:    {tmp_path}" in text
    assert "KV bytes per token      512 (1 full-attention layers)" in text
    assert "MoE kernels             unquantised (bf16) experts" in text


def test_unknown_hub_id_skips_fit() -> None:
    code, text = run(["--gpu", "H100"], {"MODEL": "someone/other-model"})
    assert code == 0
    assert "fit skipped: 'someone/other-model' is not a known gpt-oss id" in text
    assert "attention backend would be FLASH_ATTN" in text


def test_python_dash_m_exits_within_seconds() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"MODEL", "MODEL_NAME"}}
    env["MODEL"] = "openai/gpt-oss-120b"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "worker", "plan", "--gpu", "L40S"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "does not fit" in proc.stdout
    assert time.monotonic() - t0 < 20
