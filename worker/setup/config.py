"""Settings built from an environment mapping.

`Settings.from_env(env)` is pure: it reads only the mapping it is given, so it
is testable with a dict and nothing happens at import. Every field lists the
environment variables it is read from (first one found wins; empty values
count as unset); a bad value raises `SettingsError` naming the variable and
what is allowed. Secrets are `SecretStr`: they never show in reprs or logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from worker.setup.config_engine import EngineSettings
from worker.setup.config_env import SettingsError as SettingsError
from worker.setup.config_env import coerce, explain
from worker.setup.config_env import env_field as _env


class Settings(EngineSettings):
    """Every setting: the engine's (`EngineSettings`, first in the docs) and the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- tool calling ----------------------------------------------------------
    enable_auto_tool_choice: bool = Field(True, json_schema_extra=_env(
        "ENABLE_AUTO_TOOL_CHOICE", group="Tool calling",
        doc="Accepted for compatibility: Harmony tool calls are always parsed, and "
        "`tool_choice` none/auto/required/named all work."))
    tool_call_parser: Literal["openai"] = Field("openai", json_schema_extra=_env(
        "TOOL_CALL_PARSER", group="Tool calling",
        doc="Only `openai` (Harmony), built in."))
    default_reasoning_effort: Literal["low", "medium", "high"] = Field(
        "medium", json_schema_extra=_env(
            "DEFAULT_REASONING_EFFORT", group="Tool calling",
            doc="Reasoning effort when a request sets none."))

    # --- API & networking -----------------------------------------------------
    host: str = Field("0.0.0.0", json_schema_extra=_env(
        "HOST", group="API & networking", doc="Address `serve` binds."))
    port: int = Field(8000, ge=1, le=65535, json_schema_extra=_env(
        "PORT", group="API & networking", doc="Port `serve` binds; API at /v1."))
    api_key: SecretStr | None = Field(None, json_schema_extra=_env(
        "API_KEY", group="API & networking",
        doc="If set, `/v1/*` requires `Authorization: Bearer <key>`. Never logged."))
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", json_schema_extra=_env(
            "LOG_LEVEL", group="API & networking", doc="Log level."))
    batch_dir: str | None = Field(None, json_schema_extra=_env(
        "BATCH_DIR", group="API & networking",
        doc="Where the Files and Batches APIs keep uploads, batch state and outputs (put it "
        "on the network volume: batches survive restarts and resume there). Unset: "
        "`batches` in the worker's folder beside the weight cache (on RunPod's network "
        "volume when one is mounted), else `~/.cache/gpt-oss-worker/batches`."))
    max_concurrency: int | None = Field(None, ge=1, le=4096, json_schema_extra=_env(
        "MAX_CONCURRENCY", group="API & networking",
        doc="Jobs one RunPod worker takes at once. Unset: MAX_NUM_SEQS (times "
        "DATA_PARALLEL_SIZE: each data-parallel engine runs MAX_NUM_SEQS)."))

    # --- RunPod stream batching (worker-vllm's knobs; docs/RUNPOD.md) -----------
    default_batch_size: int | None = Field(None, ge=1, le=512, json_schema_extra=_env(
        "DEFAULT_BATCH_SIZE", group="RunPod streaming",
        doc="Most events in one streamed RunPod output (a job's `max_batch_size` wins). "
        "Unset with the two below: group by time (one output per 50 ms at most)."))
    default_min_batch_size: int | None = Field(None, ge=1, le=512, json_schema_extra=_env(
        "DEFAULT_MIN_BATCH_SIZE", "MIN_BATCH_SIZE", group="RunPod streaming",
        doc="Events in the first streamed output, growing to DEFAULT_BATCH_SIZE "
        "(a job's `min_batch_size` wins)."))
    default_batch_size_growth_factor: float | None = Field(
        None, ge=1, le=100, json_schema_extra=_env(
            "DEFAULT_BATCH_SIZE_GROWTH_FACTOR", "BATCH_SIZE_GROWTH_FACTOR",
            group="RunPod streaming",
            doc="Each streamed output holds this many times the events of the one before "
            "(a job's `batch_size_growth_factor` wins)."))

    # --- limits ----------------------------------------------------------------
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, json_schema_extra=_env(
        "MAX_REQUEST_BYTES", group="Limits",
        doc="Largest request body (HTTP) in bytes; larger → 413."))
    max_completion_tokens_limit: int | None = Field(None, ge=1, json_schema_extra=_env(
        "MAX_COMPLETION_TOKENS_LIMIT", group="Limits",
        doc="Cap on max_tokens per request. Unset: the rest of the context."))
    max_n: int = Field(8, ge=1, le=128, json_schema_extra=_env(
        "MAX_N", group="Limits", doc="Largest `n` (choices per request)."))
    max_messages: int = Field(2048, ge=1, json_schema_extra=_env(
        "MAX_MESSAGES", group="Limits", doc="Most messages in one request."))
    max_batch_lines: int = Field(4096, ge=1, json_schema_extra=_env(
        "MAX_BATCH_LINES", group="Limits", doc="Most lines in one batch (RunPod job or HTTP)."))
    max_stop_sequences: int = Field(16, ge=1, le=1024, json_schema_extra=_env(
        "MAX_STOP_SEQUENCES", group="Limits",
        doc="Most `stop` strings in one request (OpenAI allows 4); more → 400 naming `stop`."))
    max_stop_chars: int = Field(1024, ge=1, le=65536, json_schema_extra=_env(
        "MAX_STOP_CHARS", group="Limits",
        doc="Longest `stop` string, in characters; longer → 400 naming it."))
    max_schema_bytes: int = Field(256 * 1024, ge=1024, json_schema_extra=_env(
        "MAX_SCHEMA_BYTES", group="Limits",
        doc="Largest JSON schema the output may be constrained to (`response_format`, "
        "forced tools), in bytes; larger → 400 naming the field."))
    schema_compile_seconds: float = Field(10.0, gt=0, le=600, json_schema_extra=_env(
        "SCHEMA_COMPILE_SECONDS", group="Limits",
        doc="Time a JSON schema may take to compile into a grammar (in a separate process, "
        "so other requests go on); slower → 400 naming the field."))
    drain_seconds: float = Field(30.0, ge=0, le=3600, json_schema_extra=_env(
        "DRAIN_SECONDS", group="Limits",
        doc="On SIGTERM, how long in-flight requests may finish while new ones get 503."))

    # --- SSH (pod image compatibility) ---------------------------------------
    public_key: str | None = Field(None, json_schema_extra=_env(
        "PUBLIC_KEY", group="SSH (pods)",
        doc="Accepted for compatibility with the pod image; the serverless worker "
        "starts no SSH server."))
    ssh_public_key: str | None = Field(None, json_schema_extra=_env(
        "SSH_PUBLIC_KEY", group="SSH (pods)", doc="As PUBLIC_KEY (takes precedence)."))
    ssh_password: SecretStr | None = Field(None, json_schema_extra=_env(
        "SSH_PASSWORD", group="SSH (pods)", doc="As PUBLIC_KEY. Never logged."))

    # --- loading & monitoring ----------------------------------------------------
    show_loading_progress: bool = Field(False, json_schema_extra=_env(
        "SHOW_LOADING_PROGRESS", group="Loading & monitoring",
        doc="Print each start-up phase as it happens."))

    # --- engine arguments (vLLM's, validated against the pinned release at start) ---------
    speculative_config: dict[str, Any] | None = Field(None, json_schema_extra=_env(
        "SPECULATIVE_CONFIG", group="Engine arguments",
        doc="Speculative decoding, vLLM's JSON object, e.g. "
        "`{\"method\": \"eagle3\", \"model\": \"ORG/gpt-oss-120b-eagle3\", "
        "\"num_speculative_tokens\": 3}`; a draft model from the Hub is downloaded next to "
        "the weights."))
    seed: int | None = Field(None, ge=0, le=2**32 - 1, json_schema_extra=_env(
        "SEED", group="Engine arguments",
        doc="The engine's random seed (a request's own `seed` still wins). Unset: vLLM's."))
    max_logprobs: int | None = Field(None, ge=0, le=1024, json_schema_extra=_env(
        "MAX_LOGPROBS", group="Engine arguments",
        doc="Most `top_logprobs` a request may ask for. Unset: vLLM's (20, OpenAI's too)."))
    enable_expert_parallel: bool = Field(False, json_schema_extra=_env(
        "ENABLE_EXPERT_PARALLEL", group="Engine arguments",
        doc="Split the MoE experts across the GPUs instead of slicing each (with "
        "TENSOR_PARALLEL_SIZE > 1)."))
    engine_args: dict[str, Any] | None = Field(None, json_schema_extra=_env(
        "ENGINE_ARGS", group="Engine arguments",
        doc="Any other vLLM engine argument, as a JSON object: `{\"block_size\": 32}`. A key "
        "the pinned vLLM does not have, or one the worker sets from its own variables, "
        "stops the worker naming it. worker-vllm's variables for engine arguments land here."))
    _engine_arg_sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("engine_args")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v and "hf_token" in v:
            raise ValueError("hf_token is a secret: set HF_TOKEN instead")
        return v

    def engine_arg_source(self, key: str) -> str:
        """The variable an `engine_args` key came from (ENGINE_ARGS or a worker-vllm one)."""
        return self._engine_arg_sources.get(key, "ENGINE_ARGS")

    @classmethod
    def env_names(cls) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for name, f in cls.model_fields.items():
            extra = f.json_schema_extra
            assert isinstance(extra, dict)
            out[name] = tuple(extra["env"])  # type: ignore[arg-type]
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from `env`; raise SettingsError naming the variable on bad input.
        worker-vllm's variables are translated first (worker.setup.compat), logged."""
        from worker.setup.compat import CompatError, translate

        known = frozenset(n for names in cls.env_names().values() for n in names)
        try:
            compat = translate(env, known)
        except CompatError as exc:
            raise SettingsError(f"invalid configuration: {exc}") from None
        for note in compat.notes:
            logging.getLogger("worker.setup.compat").info("worker-vllm variable %s", note)
        settings = cls._from_env(compat.env)
        if not compat.engine_args:
            return settings
        own = settings.engine_args or {}
        both = sorted(set(own) & set(compat.engine_args))
        if both:
            raise SettingsError(f"invalid configuration: {compat.sources[both[0]]} and "
                                f"ENGINE_ARGS both set {both[0]!r}: set it once")
        merged = settings.model_copy(update={"engine_args": {**own, **compat.engine_args}})
        merged._engine_arg_sources.update(compat.sources)
        return merged

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        source: dict[str, str] = {}
        for field, names in cls.env_names().items():
            for name in names:
                raw = env.get(name)
                if raw is None or raw.strip() == "":
                    continue
                source[field] = name
                values[field] = coerce(cls.model_fields[field].annotation, raw.strip(), name)
                break
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(explain(exc, source, cls.env_names())) from None

    def describe(self) -> dict[str, Any]:
        """A log-safe view: secrets shown only as set/unset."""
        out: dict[str, Any] = {}
        for name, value in self:
            out[name] = ("<set>" if value else None) if isinstance(value, SecretStr) else value
        return out


def load_settings(env: Mapping[str, str]) -> Settings | None:
    """For command lines: the settings, or None after printing the error to stderr."""
    import sys

    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
