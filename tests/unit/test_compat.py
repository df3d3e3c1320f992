"""worker-vllm's variables: every one classified against the settings model, and a
template made for worker-vllm starts here, or stops naming the variable and what to do."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from worker.engine.engine_config import ENGINE_ARG_NAMES, EngineConfig
from worker.engine.extra_args import MERGED, EngineArgsError, check_known
from worker.setup import compat, worker_vllm_names
from worker.setup.compat_rules import LIBRARY, rules
from worker.setup.config import Settings, SettingsError
from worker.setup.engine_extras import ARG_OWNERS, passthrough

KNOWN = frozenset(n for names in Settings.env_names().values() for n in names)

# The defaults worker-vllm's Hub form (.runpod/hub.json) fills in: a template made from it.
HUB_TEMPLATE = {
    "MODEL_NAME": "openai/gpt-oss-20b", "TOKENIZER_MODE": "auto", "SKIP_TOKENIZER_INIT": "false",
    "TRUST_REMOTE_CODE": "false", "LOAD_FORMAT": "auto", "DTYPE": "auto",
    "KV_CACHE_DTYPE": "auto", "MAX_MODEL_LEN": "auto", "DISTRIBUTED_EXECUTOR_BACKEND": "mp",
    "RAY_WORKERS_USE_NSIGHT": "false", "PIPELINE_PARALLEL_SIZE": "1",
    "TENSOR_PARALLEL_SIZE": "1", "MAX_PARALLEL_LOADING_WORKERS": "1",
    "ENABLE_PREFIX_CACHING": "false", "DISABLE_SLIDING_WINDOW": "false", "SEED": "0",
    "MAX_NUM_SEQS": "256", "MAX_LOGPROBS": "20", "DISABLE_LOG_STATS": "false",
    "QUANTIZATION": "None", "ENABLE_LORA": "false", "MAX_LORAS": "1", "MAX_LORA_RANK": "16",
    "LORA_DTYPE": "auto", "FULLY_SHARDED_LORAS": "false", "DEVICE": "auto",
    "SCHEDULER_DELAY_FACTOR": "0", "ENABLE_CHUNKED_PREFILL": "true", "SPECULATIVE_METHOD": "",
    "ENABLE_LOG_REQUESTS": "false", "GPU_MEMORY_UTILIZATION": "0.95", "BLOCK_SIZE": "16",
    "ENFORCE_EAGER": "false", "DISABLE_CUSTOM_ALL_REDUCE": "false", "DEFAULT_BATCH_SIZE": "50",
    "DEFAULT_MIN_BATCH_SIZE": "1", "DEFAULT_BATCH_SIZE_GROWTH_FACTOR": "3",
    "RAW_OPENAI_OUTPUT": "true", "OPENAI_RESPONSE_ROLE": "assistant", "MAX_CONCURRENCY": "30",
    "ENABLE_EXPERT_PARALLEL": "false", "BASE_PATH": "/runpod-volume",
    "ENABLE_AUTO_TOOL_CHOICE": "false", "TOOL_CALL_PARSER": "", "REASONING_PARSER": "",
    "PYTORCH_ALLOC_CONF": "expandable_segments:True", "VLLM_USE_DEEP_GEMM": "0",
}


def refused(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    return str(err.value)


# --- the table against the settings model --------------------------------------------------
def test_every_worker_vllm_variable_is_classified() -> None:
    table = rules(KNOWN)
    missing = [n for n in worker_vllm_names.ALL if n not in table]
    assert not missing, f"worker-vllm variables without a rule: {missing}"
    assert {table[n].kind for n in worker_vllm_names.ALL} == {"supported", "mapped", "rejected"}
    assert all(table[n].note for n in worker_vllm_names.ALL)


def test_every_row_targets_something_that_exists() -> None:
    for name in worker_vllm_names.ALL:
        rule = rules(KNOWN)[name]
        if rule.kind == "supported":
            assert name in KNOWN or name in LIBRARY, name
            assert rule.target is None, name
        elif rule.engine_arg is not None:
            # a key the worker sets itself would be a conflict at every start
            assert rule.engine_arg not in ENGINE_ARG_NAMES or rule.engine_arg in MERGED, name
            assert rule.engine_arg == name.lower(), name
        elif rule.target is not None:
            assert rule.target in KNOWN, f"{name} maps to {rule.target}, not a variable of ours"
        else:  # the worker's own behaviour, or refused: some values must pass or none
            assert rule.kind in ("mapped", "rejected"), name


def test_the_worker_owns_every_engine_argument_it_can_set() -> None:
    assert set(ARG_OWNERS) >= ENGINE_ARG_NAMES
    assert {v for v in ARG_OWNERS.values() if not v.startswith("the worker")} <= KNOWN


def test_the_table_in_the_docs_has_every_name() -> None:
    table = compat.markdown_table(KNOWN)
    for name in worker_vllm_names.ALL:
        assert f"| `{name}` |" in table


# --- a worker-vllm template ------------------------------------------------------------------
def test_a_template_from_worker_vllms_hub_form_starts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="worker.setup.compat"):
        s = Settings.from_env(HUB_TEMPLATE)
    assert s.model == "openai/gpt-oss-20b"
    assert s.max_model_len is None and s.quantization == "auto"  # `auto`, `None`: unset
    assert (s.max_num_seqs, s.max_concurrency, s.seed, s.max_logprobs) == (256, 30, 0, 20)
    assert s.engine_args == {"max_parallel_loading_workers": 1}
    assert s.engine_arg_source("max_parallel_loading_workers") == "MAX_PARALLEL_LOADING_WORKERS"
    logged = caplog.text
    for name in ("DEVICE='auto'", "BLOCK_SIZE='16'", "MAX_MODEL_LEN='auto'", "ENABLE_LORA"):
        assert name in logged  # nothing silently ignored


@pytest.mark.parametrize(("env", "expect"), [
    ({"MAX_MODEL_LEN": "auto"}, ("max_model_len", None)),
    ({"MAX_MODEL_LEN": "0"}, ("max_model_len", None)),
    ({"MAX_MODEL_LEN": "8192"}, ("max_model_len", 8192)),
    ({"QUANTIZATION": "None"}, ("quantization", "auto")),
    ({"MAX_NUM_BATCHED_TOKENS": "0"}, ("max_num_batched_tokens", None)),
    ({"TOOL_CALL_PARSER": "openai_gptoss"}, ("tool_call_parser", "openai")),
    ({"TOOL_CALL_PARSER": "openai"}, ("tool_call_parser", "openai")),
    ({"ATTENTION_BACKEND": "TRITON_ATTN"}, ("attention_backend_override", "TRITON_ATTN")),
])
def test_special_values_and_mappings(env: dict[str, str], expect: tuple[str, object]) -> None:
    field, value = expect
    assert getattr(Settings.from_env(env), field) == value


def test_served_name_override_wins_over_a_baked_images_name() -> None:
    baked = {"MODEL": "/models/baked", "SERVED_MODEL_NAME": "openai/gpt-oss-20b"}
    assert Settings.from_env(baked).served_model_name == "openai/gpt-oss-20b"
    s = Settings.from_env({**baked, "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "my-oss"})
    assert s.served_model_name == "my-oss"


@pytest.mark.parametrize(("env", "words"), [
    ({"TOOL_CALL_PARSER": "hermes"}, ["TOOL_CALL_PARSER", "Harmony"]),
    ({"REASONING_PARSER": "deepseek_r1"}, ["REASONING_PARSER", "analysis channel"]),
    ({"RAW_OPENAI_OUTPUT": "0"}, ["RAW_OPENAI_OUTPUT", "native input"]),
    ({"CUSTOM_CHAT_TEMPLATE": "{{ x }}"}, ["CUSTOM_CHAT_TEMPLATE", "Harmony"]),
    ({"ENABLE_LORA": "true"}, ["ENABLE_LORA", "LoRA"]),
    ({"DTYPE": "float16"}, ["DTYPE", "bfloat16"]),
    ({"SWAP_SPACE": "16"}, ["SWAP_SPACE", "gone"]),
    ({"DEFAULT_BATCH_SIZE": "10"} if "DEFAULT_BATCH_SIZE" not in KNOWN
     else {"DOWNLOAD_DIR": "/x"}, ["unset it"] if "DEFAULT_BATCH_SIZE" not in KNOWN
     else ["MODEL_CACHE_DIR"]),
    ({"VLLM_EXTRA_ARGS": "--chat-template t.jinja"}, ["VLLM_EXTRA_ARGS --chat-template"]),
    ({"VLLM_EXTRA_ARGS": "--not-a-flag 1"}, ["--not-a-flag", "ENGINE_ARGS"]),
    ({"TOKENIZER": "other/tokenizer", "MODEL": "openai/gpt-oss-20b"}, ["TOKENIZER", "o200k"]),
])
def test_refused_values_say_why_and_what_instead(env: dict[str, str], words: list[str]) -> None:
    message = refused(env)
    for word in words:
        assert word in message


def test_every_refusal_is_reported_at_once() -> None:
    message = refused({"DTYPE": "half", "TOOL_CALL_PARSER": "mistral", "LORA_MODULES": "[]"})
    assert "DTYPE" in message and "TOOL_CALL_PARSER" in message and "LORA_MODULES" in message


def test_accepted_values_pass() -> None:
    s = Settings.from_env({"REASONING_PARSER": "openai_gptoss", "RAW_OPENAI_OUTPUT": "1",
                           "TOKENIZER": "openai/gpt-oss-20b", "MODEL": "openai/gpt-oss-20b",
                           "DISABLE_LOG_STATS": "true", "UVICORN_LOG_LEVEL": "debug"})
    assert s.model == "openai/gpt-oss-20b" and s.engine_args is None


def test_a_secret_value_is_never_echoed() -> None:
    s = Settings.from_env({"VLLM_API_KEY": "sk-TOPSECRET"})
    assert s.api_key is not None and s.api_key.get_secret_value() == "sk-TOPSECRET"
    message = refused({"VLLM_API_KEY": "sk-TOPSECRET", "API_KEY": "sk-OTHER"})
    assert "TOPSECRET" not in message and "VLLM_API_KEY" in message
    assert "hf_token" in refused({"ENGINE_ARGS": '{"hf_token": "hf_x"}'})


# --- engine arguments passed through -----------------------------------------------------------
def test_engine_args_json_and_mapped_variables_merge() -> None:
    s = Settings.from_env({"ENGINE_ARGS": '{"cpu_offload_gb": 2}', "BLOCK_SIZE": "32",
                           "DISABLE_CUSTOM_ALL_REDUCE": "true",
                           "COMPILATION_CONFIG": '{"level": 3}'})
    assert s.engine_args == {"cpu_offload_gb": 2, "block_size": 32,
                             "disable_custom_all_reduce": True, "compilation_config": {"level": 3}}
    assert s.engine_arg_source("block_size") == "BLOCK_SIZE"
    assert s.engine_arg_source("cpu_offload_gb") == "ENGINE_ARGS"


@pytest.mark.parametrize(("env", "words"), [
    ({"ENGINE_ARGS": "[1]"}, ["ENGINE_ARGS", "JSON object"]),
    ({"ENGINE_ARGS": "{nope"}, ["ENGINE_ARGS", "not valid JSON"]),
    ({"SPECULATIVE_CONFIG": "eagle"}, ["SPECULATIVE_CONFIG", "JSON"]),
    ({"ENGINE_ARGS": '{"block_size": 8}', "BLOCK_SIZE": "32"}, ["BLOCK_SIZE", "ENGINE_ARGS"]),
    ({"DISABLE_SLIDING_WINDOW": "maybe"}, ["DISABLE_SLIDING_WINDOW", "boolean"]),
])
def test_bad_engine_arguments_stop_at_settings(env: dict[str, str], words: list[str]) -> None:
    message = refused(env)
    for word in words:
        assert word in message


def test_vllm_extra_args_read_flag_by_flag() -> None:
    s = Settings.from_env({
        "MAX_NUM_SEQS": "32",
        "VLLM_EXTRA_ARGS": "--max-num-seqs 8 --enforce-eager --no-trust-remote-code "
                           "--block-size=32 --served-model-name 'my oss'"})
    assert (s.max_num_seqs, s.enforce_eager, s.served_model_name) == (8, True, "my oss")
    assert s.engine_args == {"block_size": 32}
    assert s.engine_arg_source("block_size") == "VLLM_EXTRA_ARGS --block-size"


def test_old_speculative_variables_fold_into_speculative_config() -> None:
    s = Settings.from_env({"SPECULATIVE_MODEL": "org/draft", "NUM_SPECULATIVE_TOKENS": "3",
                           "NGRAM_PROMPT_LOOKUP_MAX": "0"})
    assert s.speculative_config == {"model": "org/draft", "num_speculative_tokens": 3}
    ngram = Settings.from_env({"NGRAM_PROMPT_LOOKUP_MAX": "4"})
    assert ngram.speculative_config == {"prompt_lookup_max": 4, "method": "ngram"}
    assert "SPECULATIVE_CONFIG" in refused({"SPECULATIVE_MODEL": "a/b",
                                            "SPECULATIVE_CONFIG": '{"model": "c/d"}'})


def _config(**extra: object) -> EngineConfig:
    s = Settings.from_env({k: str(v) for k, v in extra.items()})
    return EngineConfig(model="m", served_model_names=("m",), device="cuda",
                        engine_args={"model": "m", "max_model_len": 4096},
                        cudagraph_capture_sizes=(1, 2, 4, 8), **passthrough(s))


def test_a_key_the_worker_sets_is_a_conflict_naming_both() -> None:
    with pytest.raises(EngineArgsError, match=r"ENGINE_ARGS sets 'max_model_len'.*MAX_MODEL_LEN"):
        _config(ENGINE_ARGS='{"max_model_len": 1024}').vllm_args()
    # modelled but not set by this plan: still ours to set
    with pytest.raises(EngineArgsError, match=r"'seed'.*SEED"):
        _config(ENGINE_ARGS='{"seed": 3}').vllm_args()
    with pytest.raises(EngineArgsError, match=r"max_cudagraph_capture_size.*MAX_CUDAGRAPH"):
        _config(ENGINE_ARGS='{"compilation_config": {"max_cudagraph_capture_size": 8}}'
                ).vllm_args()
    with pytest.raises(EngineArgsError, match=r"cudagraph_capture_sizes.*MAX_CUDAGRAPH"):
        _config(ENGINE_ARGS='{"compilation_config": {"cudagraph_capture_sizes": [8]}}'
                ).vllm_args()


def test_passed_through_arguments_reach_vllms_keywords() -> None:
    args = _config(ENGINE_ARGS='{"cpu_offload_gb": 2, "compilation_config": {"level": 3}}',
                   BLOCK_SIZE="32").vllm_args()
    assert args["cpu_offload_gb"] == 2 and args["block_size"] == 32
    assert args["compilation_config"] == {"cudagraph_capture_sizes": [1, 2, 4, 8], "level": 3}


def test_an_unknown_key_names_its_variable() -> None:
    with pytest.raises(EngineArgsError, match=r"0\.32\.0 \(BLOCK_SIZE: 'block_size'\)"):
        check_known({"block_size": 1}, {"block_size": "BLOCK_SIZE"}, {"seed"}, "0.32.0")
    check_known({"seed": 1}, {}, {"seed"}, "0.32.0")


def test_start_up_hands_the_engine_our_arguments_and_the_passed_through_ones() -> None:
    from worker.setup.bootstrap import resolve

    s = Settings.from_env({"MODEL": "openai/gpt-oss-20b", "SEED": "3", "BLOCK_SIZE": "32",
                           "MAX_LOGPROBS": "8", "ENABLE_EXPERT_PARALLEL": "true",
                           "SPECULATIVE_CONFIG": '{"method": "ngram", "prompt_lookup_max": 4}'})
    config = resolve(s, {}, None).engine_config
    args = config.vllm_args()
    assert (args["seed"], args["max_logprobs"], args["enable_expert_parallel"]) == (3, 8, True)
    assert args["speculative_config"] == {"method": "ngram", "prompt_lookup_max": 4}
    assert args["block_size"] == 32 and config.extra_sources == {"block_size": "BLOCK_SIZE"}
    assert "seed" not in resolve(Settings.from_env({"MODEL": "openai/gpt-oss-20b"}), {},
                                 None).engine_config.engine_args  # unset: vLLM's default


def test_a_hub_draft_model_is_fetched_like_the_weights_and_loaded_locally(
        tmp_path: Path) -> None:
    from worker.setup.engine_extras import local_draft

    spec = {"method": "eagle3", "model": "org/draft", "revision": "r1"}
    config = EngineConfig(model="m", served_model_names=("m",), device="cuda",
                          engine_args={"model": "m", "speculative_config": spec})
    fetched: list[tuple[str, str | None]] = []

    def fetch(model: str, revision: str | None) -> Path:
        fetched.append((model, revision))
        return tmp_path / "draft"

    out = local_draft(config, fetch)
    assert fetched == [("org/draft", "r1")]
    assert out.engine_args["speculative_config"] == {"method": "eagle3",
                                                     "model": str(tmp_path / "draft")}
    ngram = EngineConfig(model="m", served_model_names=("m",), device="cuda",
                         engine_args={"speculative_config": {"method": "ngram"}})
    assert local_draft(ngram, fetch) is ngram and len(fetched) == 1
