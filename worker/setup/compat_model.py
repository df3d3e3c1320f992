"""The vocabulary of `worker.setup.compat`: a rule, its kinds, the translation it makes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.setup.config_env import FALSE as FALSE
from worker.setup.config_env import TRUE as TRUE

Kind = Literal["supported", "mapped", "rejected"]
ENGINE_ARGS = "ENGINE_ARGS"


class CompatError(ValueError):
    """A worker-vllm variable this worker refuses; the message names it and what to do."""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Kind
    note: str
    # supported: None (the same name). mapped: our variable, "ENGINE_ARGS.<key>", or None
    # for the worker's own behaviour (then only the values `unset` accepts pass).
    target: str | None = None
    # Values that ask for nothing (compared lower-case): dropped with a log line. "*": any.
    unset: frozenset[str] = frozenset()
    # The value for the target, or CompatError; gets the whole environment.
    convert: Callable[[str, Mapping[str, str]], str] | None = None
    wins: bool = False  # mapped onto a variable already set: this one wins, logged
    secret: bool = False  # never echo the value
    # Also accepted as asking for nothing when this says so (it sees the environment).
    accept: Callable[[str, Mapping[str, str]], bool] | None = None

    def accepts_as_unset(self, value: str, env: Mapping[str, str]) -> bool:
        if "*" in self.unset or value.lower() in self.unset:
            return True
        return self.accept is not None and self.accept(value, env)

    @property
    def engine_arg(self) -> str | None:
        if self.target and self.target.startswith(ENGINE_ARGS + "."):
            return self.target.split(".", 1)[1]
        return None

    def shown(self, value: str) -> str:
        return "<set>" if self.secret else repr(value)


@dataclass
class Translation:
    env: dict[str, str]
    engine_args: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # engine-arg key -> variable
    notes: list[str] = field(default_factory=list)
