"""The vocabulary of `worker.setup.compat`: a rule, its kinds, the translation it makes,
and the constructors the rule tables are written with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.setup.config_env import FALSE as FALSE
from worker.setup.config_env import TRUE as TRUE

Kind = Literal["supported", "mapped", "rejected"]
ENGINE_ARGS = "ENGINE_ARGS"
ANY = frozenset({"*"})
OFF = frozenset({"false", "0", "no", "off"})
ON = frozenset({"true", "1", "yes", "on"})
SAME = "same name, same meaning"


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


def lowered(*values: str) -> frozenset[str]:
    """Values a rule compares with (lower case)."""
    return frozenset(v.lower() for v in values)


def _shown(values: frozenset[str]) -> str:
    if values == OFF:
        return "`false`"
    return ", ".join(f"`{v}`" for v in sorted(values))


def supported(name: str, note: str = SAME, **kw: Any) -> Rule:
    return Rule(name, "supported", note, **kw)


def to(name: str, target: str, note: str, **kw: Any) -> Rule:
    return Rule(name, "mapped", note, target=target, **kw)


def engine(name: str, unset: frozenset[str] = frozenset(), note: str = "") -> Rule:
    key = name.lower()
    if not note:
        note = "passed to vLLM (checked against the pinned vLLM at start)"
        if unset:
            note += f"; {_shown(unset)}: left to vLLM"
    return Rule(name, "mapped", note, target=f"{ENGINE_ARGS}.{key}", unset=unset)


def builtin(name: str, note: str, unset: frozenset[str] = ANY, **kw: Any) -> Rule:
    return Rule(name, "mapped", note, unset=unset, **kw)


def reject(name: str, note: str, unset: frozenset[str] = frozenset()) -> Rule:
    if unset and "*" not in unset:
        note = f"{_shown(unset)} passes (asks nothing); else {note}"
    return Rule(name, "rejected", note, unset=unset)
