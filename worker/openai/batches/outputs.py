"""A batch's output lines: counts, summed usage, the expired-line error, finish time."""

from __future__ import annotations

import json
import uuid
from typing import Any


def counts(total: int, outputs: Any) -> dict[str, int]:
    outs = list(outputs)
    failed = sum(1 for o in outs if o.get("error"))
    return {"total": total, "completed": len(outs) - failed, "failed": failed}


def usage(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch's token usage: summed over its lines' bodies, whichever API's usage shape
    (chat and completions: prompt/completion tokens; Responses: input/output tokens)."""
    prompt = completion = reasoning = 0
    for o in outputs:
        body = (o.get("response") or {}).get("body") or {}
        u = body.get("usage") or {}
        prompt += int(u.get("prompt_tokens") or u.get("input_tokens") or 0)
        completion += int(u.get("completion_tokens") or u.get("output_tokens") or 0)
        details = u.get("completion_tokens_details") or u.get("output_tokens_details") or {}
        reasoning += int(details.get("reasoning_tokens") or 0)
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": prompt + completion, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": reasoning}}


def expired_line(custom_id: str) -> dict[str, Any]:
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": None,
            "error": {"code": "batch_expired",
                      "message": "This request could not be executed before the completion "
                                 "window expired."}}


def finished_at(rec: dict[str, Any]) -> float:
    return float(max(rec.get(k) or 0 for k in
                     ("completed_at", "failed_at", "expired_at", "cancelled_at", "created_at")))


def dump_line(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode()

