"""Fields a client may send that gpt-oss cannot honour, refused by name.

Called by `validate_request` on a parsed request. Works on attributes only (no
import of the request models), so the protocol module can import it.
"""

from __future__ import annotations

from typing import Any

from worker.openai.bounds import LOGIT_BIAS_LIMIT as LOGIT_BIAS_LIMIT
from worker.openai.bounds import check_logit_bias as check_logit_bias
from worker.openai.errors import InvalidRequest


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
