from __future__ import annotations

from pathlib import Path

import pytest

from worker.setup.config import Settings, SettingsError
from worker.setup.config_env import markdown_table


def test_defaults_follow_current_vllm() -> None:
    s = Settings.from_env({})
    assert s.model is None
    assert s.async_scheduling is True  # the seed's `false` was a vLLM 0.11 workaround
    assert s.kv_cache_dtype == "auto"
    assert s.gpu_memory_utilization == 0.95
    assert s.max_num_seqs == 64
    assert (s.host, s.port) == ("0.0.0.0", 8000)


def test_aliases_users_of_other_workers_have() -> None:
    s = Settings.from_env({
        "MODEL_NAME": "openai/gpt-oss-20b",
        "HUGGING_FACE_HUB_TOKEN": "hf_abc",
        "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "gpt-oss",
        "MODEL_CACHE_DIR": "/runpod-volume/hf",
        "VLLM_ATTENTION_BACKEND": "triton_attn",
        "MAX_CONCURRENCY": "12",
    })
    assert s.model == "openai/gpt-oss-20b"
    assert s.hf_token is not None and s.hf_token.get_secret_value() == "hf_abc"
    assert s.served_model_name == "gpt-oss"
    assert s.cache_dir == "/runpod-volume/hf"
    assert s.attention_backend_override == "TRITON_ATTN"
    assert s.max_concurrency == 12


def test_first_alias_wins_and_empty_means_unset() -> None:
    s = Settings.from_env({"MODEL": "", "MODEL_NAME": "b", "MAX_MODEL_LEN": " "})
    assert s.model == "b"
    assert s.max_model_len is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MAX_MODEL_LEN": "lots"}, "MAX_MODEL_LEN"),
        ({"MAX_MODEL_LEN": "12"}, "MAX_MODEL_LEN"),
        ({"GPU_MEMORY_UTILIZATION": "1.2"}, "GPU_MEMORY_UTILIZATION"),
        ({"GPU_MEMORY_UTILIZATION": "0"}, "GPU_MEMORY_UTILIZATION"),
        ({"KV_CACHE_DTYPE": "int4"}, "KV_CACHE_DTYPE"),
        ({"QUANTIZATION": "bnb"}, "QUANTIZATION"),
        ({"TOOL_CALL_PARSER": "hermes"}, "TOOL_CALL_PARSER"),
        ({"ASYNC_SCHEDULING": "sometimes"}, "ASYNC_SCHEDULING"),
        ({"PORT": "70000"}, "PORT"),
        ({"TENSOR_PARALLEL_SIZE": "0"}, "TENSOR_PARALLEL_SIZE"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MAX_NUM_SEQS": "-1"}, "MAX_NUM_SEQS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert names in str(err.value)


def test_enum_errors_list_what_is_allowed() -> None:
    with pytest.raises(SettingsError, match="must be one of 'auto', 'fp8'"):
        Settings.from_env({"KV_CACHE_DTYPE": "int4"})


def test_secrets_never_in_repr_describe_or_errors() -> None:
    env = {"HF_TOKEN": "hf_TOPSECRET", "API_KEY": "sk-TOPSECRET", "SSH_PASSWORD": "pw-TOPSECRET"}
    s = Settings.from_env(env)
    for text in (repr(s), str(s), str(s.describe()), s.model_dump_json()):
        assert "TOPSECRET" not in text
    assert s.describe()["api_key"] == "<set>"


def test_readme_documents_every_variable() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    assert markdown_table(Settings) in doc, \
        "stale docs/CONFIG.md: run python scripts/update-readme.py"
    seed_vars = [
        "MODEL", "MAX_MODEL_LEN", "TENSOR_PARALLEL_SIZE", "HUGGING_FACE_HUB_TOKEN",
        "GPU_MEMORY_UTILIZATION", "QUANTIZATION", "KV_CACHE_DTYPE", "MAX_NUM_SEQS",
        "MAX_NUM_BATCHED_TOKENS", "ASYNC_SCHEDULING", "ENABLE_PREFIX_CACHING",
        "ENABLE_CHUNKED_PREFILL", "ENABLE_AUTO_TOOL_CHOICE", "TOOL_CALL_PARSER", "HOST", "PORT",
        "API_KEY", "LOG_LEVEL", "PUBLIC_KEY", "SSH_PUBLIC_KEY", "SSH_PASSWORD",
        "SHOW_LOADING_PROGRESS", "VLLM_ATTENTION_BACKEND_OVERRIDE",
    ]
    known = {n for names in Settings.env_names().values() for n in names}
    assert set(seed_vars) <= known
