"""One error hierarchy, mapped once to the OpenAI error body.

Errors are raised deep (validation, harmony, service, engine) as typed
exceptions and turned into `{"error": {...}}` only at the adapters, through
`to_openai_error`. Messages never carry secrets or Python reprs.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.engine.api import EngineDeadError, EngineError, RequestRejected

log = logging.getLogger(__name__)


class WorkerError(Exception):
    """Base of every error the worker reports to a client."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(WorkerError):
    """The request is malformed or asks for something this worker cannot honour."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    def __init__(self, message: str, *, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class AuthenticationFailed(WorkerError):
    status_code = 401
    error_type = "authentication_error"


class ModelNotFound(WorkerError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = "model"):
        super().__init__(message, param=param, code="model_not_found")


class NotFound(WorkerError):
    status_code = 404
    error_type = "invalid_request_error"


class Conflict(WorkerError):
    """The request conflicts with the state of what it names (a finished batch, a file in use)."""

    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLarge(WorkerError):
    status_code = 413
    error_type = "invalid_request_error"


class Unavailable(WorkerError):
    """The worker is starting, draining or its engine died: retry elsewhere."""

    status_code = 503
    error_type = "service_unavailable"


class InvalidResponse(WorkerError):
    """A response the worker built failed its own validation: our fault, never the client's."""

    status_code = 500
    error_type = "server_error"


class EngineFailure(WorkerError):
    """The engine failed while serving this request."""

    status_code = 500
    error_type = "server_error"


def error_body(
    message: str, *, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def from_engine(exc: EngineError) -> WorkerError:
    """The engine's own errors as OpenAI errors."""
    if isinstance(exc, RequestRejected):
        return InvalidRequest(exc.message, param="response_format" if exc.structured else None)
    return Unavailable(exc.message)


def is_expected(exc: BaseException) -> bool:
    """An error with a meaning for the client (not a bug worth a traceback in the log)."""
    from pydantic import ValidationError

    return isinstance(exc, WorkerError | EngineError | ValidationError)


def to_openai_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Map any exception to (HTTP status, OpenAI error body). Unknown ones hide their text."""
    if isinstance(exc, EngineError):
        exc = from_engine(exc)
    if isinstance(exc, WorkerError):
        return exc.status_code, error_body(
            exc.message, error_type=exc.error_type, param=exc.param, code=exc.code
        )
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400, validation_error_body(exc)
    return 500, error_body(
        "internal error while serving the request", error_type="server_error"
    )


def openai_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, OpenAI error object {message, type, param, code}) for a job or a batch line;
    an unexpected exception is logged with its traceback and reported without its text."""
    if isinstance(exc, EngineDeadError):
        exc = Unavailable("the engine died; this worker is restarting, retry the request")
    elif not is_expected(exc):
        log.error("unexpected error while serving a request", exc_info=exc)
    status, body = to_openai_error(exc)
    return status, dict(body["error"])


def validation_error_body(exc: Any, *, prefix: tuple[str | int, ...] = ()) -> dict[str, Any]:
    """Turn the first pydantic error into a body whose `param` names the field."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [*prefix, *(p for p in first.get("loc", ()) if p not in ("body",))]
    param = _dotted(loc) or None
    msg = str(first.get("msg", "invalid value"))
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return error_body(message, error_type="invalid_request_error", param=param)


_TYPE_LABELS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python"}
_ROLE_TAGS = {"system", "developer", "user", "assistant", "tool"}
_FORMAT_TAGS = {"text", "json_object", "json_schema"}
_ITEM_TAGS = {"message", "function_call", "function_call_output", "reasoning", "input_text",
              "output_text", "refusal", "input_image", "input_file", "input_audio",
              "reasoning_text", "summary_text"}  # Responses input items and their parts


def _dotted(loc: list[Any]) -> str:
    """`messages[0].content` from a pydantic loc, without union-branch labels."""
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not _is_label(part, prev):
            out += f".{part}" if out else part
        prev = part
    return out


def _is_label(part: str, prev: Any) -> bool:
    # pydantic names the union member it tried: a type (`str`, `list[...]`,
    # `literal['a','b']`, `function-after[...]`) or a discriminator tag (`user`).
    if part in _TYPE_LABELS or any(c in part for c in "[]'-("):
        return True
    if prev in ("response_format", "format"):
        return part in _FORMAT_TAGS
    return isinstance(prev, int) and part in _ROLE_TAGS | _ITEM_TAGS
