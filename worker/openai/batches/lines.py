"""What a stored batch's line runs through: the live service of its url, at the batch priority.

`ENDPOINTS` are the urls a batch can run (each line's `url`, the batch's `endpoint`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.openai.batch import LINE_URLS, run_line
from worker.openai.batches.runner import LineRunner

ENDPOINTS = tuple(LINE_URLS)  # /v1/chat/completions, /v1/completions
# The engine schedules lower numbers first; live requests are 0, so a waiting live request
# is scheduled before any waiting batch line.
BATCH_PRIORITY = 1


def chat_lines(service_of: Callable[[], Any], *, priority: int = BATCH_PRIORITY) -> LineRunner:
    """Run a line through the service `service_of()` returns (Unavailable while the engine
    is down: the runner then stops, and the line runs when the batch resumes)."""
    async def run(line: dict[str, Any]) -> dict[str, Any]:
        return await run_line(service_of(), line, priority=priority, fail_unavailable=False)

    return run
