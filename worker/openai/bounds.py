"""Bounds at the edge: a value the engine cannot take is refused here, by name.

Every OpenAI endpoint and every job input runs these checks before anything
reaches Harmony or the engine, so a hostile value is a 400 naming its field,
never a 500 from deep inside (a lone surrogate breaks the Harmony renderer, a
seed past 64 bits vLLM's request encoder).

Applying them to a new endpoint (chat does exactly this):

1. Request model: type the engine's integers with the Annotated types below
   (`Seed`, `TopK`); pydantic then names the field when one is out of range.
2. Parse the body with `parse_body(Model, body)`: it runs `check_body` (lone
   surrogates and duplicated keys anywhere, the field path in `param`), then
   `Model.model_validate`, with pydantic's errors mapped to `InvalidRequest`.
3. In the service's preparation, with the worker's `Limits`:
   `check_stops(stops, max_count=..., max_chars=..., param="stop")`, and
   `await check_schema(engine, schema, param=..., max_bytes=..., time_limit=...)`
   for every JSON schema the output will be constrained to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from worker.engine.api import Engine, RequestRejected
from worker.harmony.tokens import VOCAB_SIZE
from worker.openai.errors import InvalidRequest, to_openai_error

# The tokenizer splits text into pieces (runs of letters, of symbols, of spaces; digits
# by three) and its cost grows with the square of a piece's length: 20,000 letters take
# 0.3 s, 150,000 take 13 s with the event loop held, and past ~600,000 it overflows its
# stack. No text has thousands of such characters in a row; refusing them bounds the cost.
MAX_TEXT_RUN = 4096
_LONG_RUNS = (re.compile(r"\s{" + str(MAX_TEXT_RUN + 1) + ",}"),
              re.compile(r"[^\s\d]{" + str(MAX_TEXT_RUN + 1) + ",}"))
_BREAK = re.compile(r"[\s\d]")

# Objects and arrays nest at most this deep anywhere in a request (Harmony's JSON reader
# stops at 128 levels; vLLM's structured outputs at 64).
MAX_DEPTH = 64

LOGIT_BIAS_LIMIT = 100.0

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# The engine's integers, bounded to what it accepts.
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
TopK = Annotated[int, Field(ge=-1, le=VOCAB_SIZE)]  # -1 and 0: off

M = TypeVar("M", bound=BaseModel)


class DuplicateKeys(dict[str, Any]):
    """A JSON object in which a key appeared more than once (see `json_pairs`)."""

    duplicates: tuple[str, ...] = ()


def json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for `json.loads`: remember the keys an object repeats.

    Plain `json.loads` keeps the last value of a repeated key and drops the others
    silently; `check_body` refuses such an object, naming where it is.
    """
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    dup = DuplicateKeys(obj)
    dup.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return dup


def loads(text: str | bytes) -> Any:
    """`json.loads` that marks duplicated keys for `check_body`."""
    return json.loads(text, object_pairs_hook=json_pairs)


def check_body(body: Any, *, root: str = "") -> None:
    """Refuse a body holding text that is not Unicode scalar values, a run of more than
    `MAX_TEXT_RUN` characters the tokenizer would take as one piece, NaN or an infinity
    (JSON has neither; Python's parser lets them through), nesting deeper than
    `MAX_DEPTH`, or a repeated key.

    A JSON `\\ud800` escape decodes to a lone surrogate, which no UTF-8 encoder
    (Harmony's, vLLM's, ours) can write. The error's `param` is the path of the
    first such string (`messages[1].content[0].text`), of the object whose key
    it is, or `root` for the body itself.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not is_text(value):
                raise InvalidRequest(
                    f"{_where(path, root)} holds a lone UTF-16 surrogate: text must be "
                    "valid Unicode", param=_param(path, root))
            if len(value) > MAX_TEXT_RUN and (run := _long_run(value)):
                raise InvalidRequest(
                    f"{_where(path, root)} holds {run} or more characters in a row "
                    f"without a space or a digit (or spaces only); at most {MAX_TEXT_RUN} "
                    "are allowed", param=_param(path, root))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest(
                    f"{_where(path, root)} is {value}: JSON numbers are finite",
                    param=_param(path, root))
        elif isinstance(value, dict | list) and len(path) > MAX_DEPTH:
            raise InvalidRequest(f"{_where(path, root)} is nested more than {MAX_DEPTH} levels "
                                 "deep", param=_param(path, root))
        elif isinstance(value, dict):
            if isinstance(value, DuplicateKeys):
                key = value.duplicates[0]
                raise InvalidRequest(
                    f"{_where(path, root)} repeats the key {_show(key)}; each key may appear "
                    "once", param=_param((*path, key), root))
            for key, item in value.items():
                if isinstance(key, str) and not is_text(key):
                    raise InvalidRequest(
                        f"a key of {_where(path, root)} holds a lone UTF-16 surrogate: "
                        "text must be valid Unicode", param=_param(path, root))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))


def parse_body(model: type[M], body: Any, *, root: str = "") -> M:
    """`check_body`, then `model.model_validate(body)`; every error names its field."""
    check_body(body, root=root)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        _, err = to_openai_error(exc)
        param = err["error"]["param"]
        if root:
            param = f"{root}.{param}" if param else root
        raise InvalidRequest(err["error"]["message"], param=param) from None


def check_stops(stops: Sequence[str], *, max_count: int, max_chars: int,
                param: str = "stop") -> None:
    """At most `max_count` stop strings of at most `max_chars` characters each.

    Every generated token is checked against every stop string, so their number
    and length are the worker's cost, not the client's.
    """
    if len(stops) > max_count:
        raise InvalidRequest(f"{param} holds {len(stops)} strings; at most {max_count} "
                             "are allowed on this worker", param=param)
    for i, s in enumerate(stops):
        if len(s) > max_chars:
            where = param if len(stops) == 1 else f"{param}[{i}]"
            raise InvalidRequest(f"{where} is {len(s)} characters long; at most {max_chars} "
                                 "are allowed", param=where)


async def check_schema(engine: Engine, schema: Any, *, param: str, max_bytes: int,
                       time_limit: float) -> None:
    """A JSON schema the output will be constrained to: small enough, and compiled by the
    engine's grammar backend within `time_limit` seconds (off the event loop: a slow
    compile never stalls other requests). Otherwise a 400 naming `param`."""
    text = json.dumps(schema, ensure_ascii=False, sort_keys=True)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidRequest(f"the JSON schema is {size} bytes; at most {max_bytes} are "
                             "allowed", param=param)
    try:
        await engine.check_schema(text, time_limit=time_limit)
    except RequestRejected as exc:
        raise InvalidRequest(f"the JSON schema cannot constrain the output: {exc.message}",
                             param=param) from None


def is_text(s: str) -> bool:
    """True when `s` is Unicode scalar values only (no lone surrogate): writable as UTF-8."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _long_run(s: str) -> int:
    """The length of a run over MAX_TEXT_RUN characters in `s` (at least), else 0.

    Such a run covers a whole window of MAX_TEXT_RUN / 2 characters at a multiple of that
    stride; a window holding a space or a digit (nearly every one) is skipped with a fast
    substring test, so a megabyte of ordinary text costs milliseconds."""
    step = MAX_TEXT_RUN // 2
    for p in range(0, len(s) - step + 1, step):
        w = s[p:p + step]
        if w.isspace() or (" " not in w and "\n" not in w and _BREAK.search(w) is None):
            lo, hi = max(0, p - MAX_TEXT_RUN), p + step + MAX_TEXT_RUN
            for pattern in _LONG_RUNS:
                if (m := pattern.search(s, lo, hi)) is not None:
                    return len(m.group())
    return 0


def _param(path: tuple[str | int, ...], root: str) -> str | None:
    out = root
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or None


def _where(path: tuple[str | int, ...], root: str) -> str:
    return _param(path, root) or "the request body"


def _show(key: str) -> str:
    return ascii(key[:64])


def check_logit_bias(bias: dict[str, float] | None) -> None:
    """Keys: token ids of the o200k_harmony vocabulary; values: -100 to 100."""
    for key, value in (bias or {}).items():
        if not (key.isascii() and key.isdigit() and int(key) < VOCAB_SIZE):
            raise InvalidRequest(f"logit_bias key {key[:40]!r} is not a token id of this "
                                 f"model's vocabulary (0 to {VOCAB_SIZE - 1})", param="logit_bias")
        if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
            raise InvalidRequest(f"logit_bias value for token {key} must be between -100 and 100",
                                 param="logit_bias")
