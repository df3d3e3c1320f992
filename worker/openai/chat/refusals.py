"""Fields a client may send that gpt-oss cannot honour, refused by name; logit_bias checks.

Called by `validate_request` on a parsed request. Works on attributes only (no
import of the request models), so the protocol module can import it.
"""

from __future__ import annotations

from typing import Any

from worker.harmony.tokens import VOCAB_SIZE
from worker.openai.errors import InvalidRequest

LOGIT_BIAS_LIMIT = 100.0


def refuse_unsupported(req: Any) -> None:
    """Legacy function calling, non-text input or output, built-in web search: a 400 each."""
    if req.functions is not None:
        raise InvalidRequest("`functions` is deprecated and not supported here: send `tools`",
                             param="functions")
    if req.function_call is not None:
        raise InvalidRequest("`function_call` is deprecated and not supported here: send "
                             "`tool_choice`", param="function_call")
    if req.audio is not None or any(m != "text" for m in req.modalities or []):
        raise InvalidRequest("gpt-oss is text-only: no audio output",
                             param="audio" if req.audio is not None else "modalities")
    if req.web_search_options is not None:
        raise InvalidRequest("this worker has no built-in web search; offer a function tool",
                             param="web_search_options")
    for i, m in enumerate(req.messages):
        if m.role == "function":
            raise InvalidRequest('role "function" is deprecated and not supported here: send a '
                                 '"tool" message with the tool_call_id',
                                 param=f"messages[{i}].role")
        if getattr(m, "function_call", None) is not None:
            raise InvalidRequest("`function_call` is deprecated and not supported here: send "
                                 "`tool_calls`", param=f"messages[{i}].function_call")
        content = getattr(m, "content", None)
        for j, part in enumerate(content if isinstance(content, list) else []):
            if part.type not in ("text", "refusal"):
                raise InvalidRequest(
                    f"gpt-oss is text-only: {part.type!r} content parts are not supported; "
                    "send text parts", param=f"messages[{i}].content[{j}]")


def check_logit_bias(bias: dict[str, float] | None) -> None:
    """Keys: token ids of the o200k_harmony vocabulary; values: -100 to 100."""
    for key, value in (bias or {}).items():
        if not (key.isascii() and key.isdigit() and int(key) < VOCAB_SIZE):
            raise InvalidRequest(f"logit_bias key {key[:40]!r} is not a token id of this "
                                 f"model's vocabulary (0 to {VOCAB_SIZE - 1})", param="logit_bias")
        if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
            raise InvalidRequest(f"logit_bias value for token {key} must be between -100 and 100",
                                 param="logit_bias")
