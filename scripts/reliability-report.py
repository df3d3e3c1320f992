"""Render RELIABILITY.md's figures table from the JSON the reliability tests write.

    RELIABILITY_OUT=/tmp/rel.json python -m pytest tests/integration/test_reliability_*.py
    python scripts/reliability-report.py /tmp/rel.json   # prints the markdown table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    ("bad_input_http", "Bad-input matrix, HTTP", "cases", "status 4xx with `param` each"),
    ("bad_input_runpod", "Bad-input matrix, RunPod job loop", "cases", "FAILED + JSON error each"),
    ("cancellation_storm_http", "Cancellation storm, HTTP", "requests", "0.5 s client timeouts"),
    ("cancellation_storm_runpod", "Cancellation storm, RunPod", "jobs", "cancelled mid-stream"),
    ("soak_http", "Soak, HTTP", "requests", "concurrency 32"),
    ("graceful_drain_http", "Graceful drain (SIGTERM under load)", "in_flight_at_sigterm", ""),
    ("engine_death_http", "Engine death (engine core killed)", None, ""),
    ("secrets_http", "Secrets (HF_TOKEN, API_KEY)", "responses_checked", "log + responses"),
]


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    print("| test | sent | figures |")
    print("|---|---|---|")
    for key, title, sent_key, note in ROWS:
        if key not in data:
            print(f"| {title} | not run | |")
            continue
        rec = dict(data[key])
        sent = rec.pop(sent_key, "") if sent_key else ""
        figures = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(rec.items()))
        print(f"| {title} | {sent} {note} | {figures} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
