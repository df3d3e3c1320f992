"""Engine arguments passed through by the user (`ENGINE_ARGS`, worker-vllm's variables).

Checked twice, both times before anything loads: every key must be a field of the pinned
vLLM's `AsyncEngineArgs` (the field names come from `vllm_engine.engine_arg_fields`, the
one module that imports vLLM), and no key may be one the worker sets from its own
variables (`MAX_MODEL_LEN`, ...): that would be two settings for one thing. The one
exception is a dict the worker fills only partly (`compilation_config`): the user's keys
are merged into it, unless they name the same key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MERGED = frozenset({"compilation_config"})
# a merged key the worker sets also claims these (vLLM derives one from the other)
RELATED = {"cudagraph_capture_sizes": ("max_cudagraph_capture_size",)}


class EngineArgsError(ValueError):
    """A passed-through engine argument is unknown or set twice; the message names it."""


def check_known(extra: Mapping[str, Any], sources: Mapping[str, str], fields: Iterable[str],
                version: str) -> None:
    """Every key of `extra` is an engine argument of this vLLM."""
    known = frozenset(fields)
    unknown = sorted(k for k in extra if k not in known)
    if unknown:
        where = "; ".join(f"{sources.get(k, 'ENGINE_ARGS')}: {k!r}" for k in unknown)
        raise EngineArgsError(f"not an engine argument of vLLM {version} ({where}): check the "
                              "name against vLLM's AsyncEngineArgs, or unset it")


def merge(ours: Mapping[str, Any], extra: Mapping[str, Any], *, sources: Mapping[str, str],
          owners: Mapping[str, str], modelled: Iterable[str]) -> dict[str, Any]:
    """`ours` with `extra` added. A key in `modelled` (every engine argument the worker may
    set) is a conflict naming both variables, whether or not this plan set it."""
    args = dict(ours)
    claimed = frozenset(modelled) | frozenset(ours)
    for key, value in extra.items():
        source = sources.get(key, "ENGINE_ARGS")
        owner = owners.get(key, "the worker itself")
        if key in MERGED and isinstance(value, dict):
            have = args.get(key) or {}
            claimed_here = set(have) | {r for k in have for r in RELATED.get(k, ())}
            clash = sorted(set(value) & claimed_here)
            if clash:
                raise EngineArgsError(f"{source} sets {key}[{clash[0]!r}], which the worker "
                                      f"sets from {owner}: set it there instead")
            args[key] = {**have, **value}
        elif key in claimed:
            raise EngineArgsError(f"{source} sets {key!r}, which the worker sets from {owner}:"
                                  f" set {owner} instead, or drop it from {source}")
        else:
            args[key] = value
    return args
