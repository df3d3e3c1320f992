"""How settings are read from the environment: the field metadata (variables, group, doc),
text to values, validation errors naming the variable, the generated docs table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the environment variable."""


def env_field(*names: str, group: str, doc: str) -> dict[str, Any]:
    """A settings field's metadata: the variables it is read from, its docs group and text."""
    return {"env": names, "group": group, "doc": doc}


def coerce(annotation: Any, raw: str, name: str) -> Any:
    """A variable's text as the field takes it: booleans and JSON objects parsed here."""
    if annotation is bool:
        low = raw.lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean: use true/false (or 1/0)")
    if annotation == dict[str, Any] | None:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise SettingsError(f"{name} must be a JSON object ({{...}})")
        return value
    return raw


def explain(exc: ValidationError, source: Mapping[str, str],
            env_names: Mapping[str, tuple[str, ...]]) -> str:
    """A pydantic error as one line per variable (secrets' values never shown)."""
    lines = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "?"
        var = source.get(field) or env_names.get(field, (field.upper(),))[0]
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            msg = f"must be one of {ctx['expected']}"
        secret = field in {"hf_token", "api_key", "ssh_password"}
        shown = "" if secret else f"={err.get('input')!r}"
        lines.append(f"{var}{shown}: {msg}")
    return "invalid configuration: " + "; ".join(lines)


def markdown_table(model: type[BaseModel]) -> str:
    """docs/CONFIG.md's table of `model`'s variables, generated so it cannot drift."""
    rows: dict[str, list[str]] = {}
    for f in model.model_fields.values():
        extra = f.json_schema_extra
        assert isinstance(extra, dict)
        names = " / ".join(f"`{n}`" for n in extra["env"])  # type: ignore[union-attr]
        if f.default is None:
            default = "(unset)"
        elif isinstance(f.default, bool):
            default = f"`{str(f.default).lower()}`"
        else:
            default = f"`{f.default}`"
        line = f"| {names} | {default} | {extra['doc']} |"
        rows.setdefault(str(extra["group"]), []).append(line)
    out = []
    for group, lines in rows.items():
        out += [f"#### {group}", "", "| Variable | Default | Meaning |", "|---|---|---|"]
        out += [*lines, ""]
    return "\n".join(out).rstrip() + "\n"
