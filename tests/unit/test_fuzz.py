"""Property-based fuzzing of the HTTP API from its own OpenAPI schema: no request gets a 5xx.

Schemathesis generates valid and invalid requests for every operation (the
chat request body included) against the real FastAPI app, service and Harmony
layer on the fake engine. The count is bounded so it runs in CI; FUZZ_EXAMPLES
raises it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import hypothesis
import schemathesis

from tests.unit.fake_engine import FakeEngine
from worker.harmony.render import final_prefix_tokens
from worker.harmony.tokens import RETURN, encode_text
from worker.openai.chat.service import ChatService
from worker.platforms.http_app import AppState, create_app
from worker.platforms.http_files import open_batches

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "700"))
SENT: dict[str, int] = {"requests": 0, "5xx": 0}


def _script(prompt: list[int], options: Any) -> list[int]:
    # the fake model answers in valid Harmony, constrained phases included
    if options.choice:
        return [*encode_text(options.choice[0]), RETURN]
    if options.json_schema is not None or options.json_object:
        return [*encode_text("{}"), RETURN]
    return [*final_prefix_tokens(after_message=False)[0:0],
            *encode_text("<|channel|>final<|message|>ok"), RETURN]


def _app() -> Any:
    service = ChatService(FakeEngine(_script, max_model_len=8192))
    state = AppState(service=service)
    # The Files and Batches APIs on a store of their own (no runner: batches stay queued)
    open_batches(state, tempfile.mkdtemp(prefix="fuzz-batches-"), concurrency=1)
    return create_app(state)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_request_gets_a_5xx(case: schemathesis.Case) -> None:
    response = case.call()
    SENT["requests"] += 1
    if response.status_code >= 500:
        SENT["5xx"] += 1
    assert response.status_code < 500, (case.body, response.text)
    if response.status_code >= 400:
        body = json.loads(response.text)
        assert set(body) == {"error"} and body["error"]["message"]
        assert "Traceback" not in response.text and "object at 0x" not in response.text


def test_fuzzing_sent_at_least_a_thousand_requests() -> None:
    # runs after the parametrized test above (pytest keeps file order)
    floor = 1000 if EXAMPLES >= 700 else 0
    assert SENT["requests"] >= floor, SENT
    assert SENT["5xx"] == 0
