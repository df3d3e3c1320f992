"""worker-vllm's environment variables, translated at start-up: none is silently ignored.

Every variable runpod-workers/worker-vllm reads (`worker.setup.worker_vllm_names`) has a
`Rule` (`worker.setup.compat_rules`, the refused ones in `worker.setup.compat_refused`):

- **supported**: the same name with the same meaning; the settings model reads it.
  Some take a special value worker-vllm gave them (`MAX_MODEL_LEN=auto`,
  `QUANTIZATION=None`, `MAX_NUM_BATCHED_TOKENS=0`): that value means unset.
- **mapped**: translated to one of ours (`OPENAI_SERVED_MODEL_NAME_OVERRIDE` →
  `SERVED_MODEL_NAME`), or to an engine argument of `ENGINE_ARGS` (`BLOCK_SIZE=32` →
  `{"block_size": 32}`, checked against the pinned vLLM like `ENGINE_ARGS` itself), or
  to what the worker already does (`REASONING_PARSER=openai_gptoss`: Harmony reasoning
  is always parsed). Each is logged at start-up.
- **rejected**: a start-up error saying why and what to use instead. Values that ask
  for nothing (a template's defaults: `ENABLE_LORA=false`, `DEVICE=auto`) pass, logged.

`translate(env, known)` is pure: it returns the environment the settings model reads,
the engine arguments mapped in (with the variable each came from) and the log lines,
or raises `CompatError` listing every variable it refuses.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from worker.setup import worker_vllm_names as names
from worker.setup.compat_model import (  # noqa: F401  (the module's vocabulary, re-exported)
    ENGINE_ARGS,
    FALSE,
    TRUE,
    CompatError,
    Kind,
    Rule,
    Translation,
)
from worker.setup.compat_rules import rules, speculative_config


def translate(env: Mapping[str, str], known: frozenset[str]) -> Translation:
    """Apply every worker-vllm rule to `env`; `known` is the settings model's names."""
    table = rules(known)
    out = Translation(env=dict(env))
    errors: list[str] = []
    for name in names.ALL:
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            items = _extra_args(raw) if name == "VLLM_EXTRA_ARGS" else [(name, raw.strip(), name)]
        except CompatError as exc:
            errors.append(str(exc))
            continue
        for var, value, label in items:
            rule = table.get(var)
            if rule is None:
                errors.append(f"{label}: not a vLLM flag this worker knows; pass engine "
                              f"arguments as {ENGINE_ARGS} (a JSON object) instead")
                continue
            try:
                _apply(rule, value, label, env, out)
            except CompatError as exc:
                errors.append(str(exc))
    try:
        speculative_config(env, out)
    except CompatError as exc:
        errors.append(str(exc))
    if errors:
        raise CompatError("; ".join(errors))
    return out


def _apply(rule: Rule, value: str, label: str, env: Mapping[str, str], out: Translation) -> None:
    if rule.accepts_as_unset(value, env):
        if label == rule.name and (rule.kind == "supported" or rule.target):
            out.env.pop(rule.name, None)
        out.notes.append(f"{label}={rule.shown(value)}: {rule.note}")
        return
    if rule.kind == "rejected" or (rule.kind == "mapped" and rule.target is None):
        raise CompatError(f"{label}={rule.shown(value)}: {rule.note}")
    if rule.target == "SPECULATIVE_CONFIG" and rule.kind == "mapped":
        return  # combined by compat_rules.speculative_config
    new = rule.convert(value, env) if rule.convert else value
    key = rule.engine_arg
    if key is not None:
        out.engine_args[key] = parse_value(new, switch=rule.name in names.SWITCHES, label=label)
        out.sources[key] = label
        out.notes.append(f"{label}: engine argument {key}={out.engine_args[key]!r}")
        return
    target = rule.target or rule.name
    if target == label and new == value:
        return  # supported as it is
    current = out.env.get(target, "").strip()
    wins = rule.wins or label.startswith("VLLM_EXTRA_ARGS")  # appended last: it won there
    if current and current != new and not wins and target != label:
        raise CompatError(f"{label}={rule.shown(value)} and {target}={current!r} disagree: "
                          f"set only {target}")
    out.env[target] = new
    if target != label:
        out.env.pop(label, None)
    shown = "<set>" if rule.secret else repr(new)
    was = f" (instead of {current!r})" if current and current != new else ""
    out.notes.append(f"{label}: {target}={shown}{was}")


def parse_value(value: str, *, switch: bool, label: str) -> Any:
    """An engine argument's value from an environment string: a switch is true/false,
    anything else JSON if it parses (numbers, objects, lists) and else the string."""
    low = value.strip().lower()
    if switch:
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise CompatError(f"{label}={value!r} is not a boolean: use true/false")
    try:
        return json.loads(value)
    except ValueError:
        return value


def _extra_args(raw: str) -> list[tuple[str, str, str]]:
    """`VLLM_EXTRA_ARGS`'s flags as (variable, value, label), each then ruled like the
    variable of the same name."""
    try:
        tokens = shlex.split(raw)
    except ValueError as exc:
        raise CompatError(f"VLLM_EXTRA_ARGS cannot be split into arguments: {exc}") from None
    out: list[tuple[str, str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise CompatError(f"VLLM_EXTRA_ARGS: {tok!r} is not a --flag")
        flag, eq, value = tok[2:].partition("=")
        var = flag.replace("-", "_").upper()
        label = f"VLLM_EXTRA_ARGS --{flag}"
        if eq:
            out.append((var, value, label))
        elif var.startswith("NO_") and var[3:] in names.SWITCHES:
            out.append((var[3:], "false", label))
        elif var in names.SWITCHES or i + 1 == len(tokens) or tokens[i + 1].startswith("--"):
            out.append((var, "true", label))
        else:
            out.append((var, tokens[i + 1], label))
            i += 1
        i += 1
    return out


def table_rows(known: frozenset[str]) -> list[Rule]:
    """Every worker-vllm variable's rule, in name order."""
    table = rules(known)
    return [table[name] for name in sorted(names.ALL)]


def markdown_table(known: frozenset[str]) -> str:
    """docs/RUNPOD.md's worker-vllm table, generated from the rules."""
    lines = ["| worker-vllm variable | Here | Ours / what happens |", "|---|---|---|"]
    for rule in table_rows(known):
        if rule.kind == "supported":
            where = "supported"
        elif rule.kind == "mapped" and rule.target:
            key = rule.engine_arg
            where = f"mapped → `{ENGINE_ARGS}` `{key}`" if key else f"mapped → `{rule.target}`"
        elif rule.kind == "mapped":
            where = "mapped → built in"
        else:
            where = "**rejected**"
        lines.append(f"| `{rule.name}` | {where} | {rule.note} |")
    return "\n".join(lines) + "\n"
