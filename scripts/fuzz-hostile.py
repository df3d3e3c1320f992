"""Every hostile case (tests/hostile.py) on every endpoint, in process on the fake engine.

Prints the figures and the table of RELIABILITY.md (fields x hostile value kinds, each
cell the statuses the endpoints answered) and exits 1 if any case broke the property
(a 5xx, a 4xx not naming the field, or no answer to a normal request right after).

    python scripts/fuzz-hostile.py > /tmp/hostile.md                 # every endpoint
    python scripts/fuzz-hostile.py "http chat" > /tmp/hostile.md     # some of them
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict

from tests.hostile import KINDS, check_answer, mutate
from tests.unit.test_fuzz_hostile import (
    ENDPOINTS,
    SENDERS,
    cases_for,
    normal_for,
    run,
    template_for,
)


def main(argv: list[str]) -> int:
    endpoints = [e for e in ENDPOINTS if not argv or e in argv]
    cells: dict[tuple[str, str], set[int]] = defaultdict(set)
    per_endpoint: dict[str, Counter[str]] = {e: Counter() for e in endpoints}
    failures: list[str] = []
    t0 = time.monotonic()
    for endpoint in endpoints:
        for case in cases_for(endpoint):
            body = mutate(template_for(endpoint, case.template), case.path, case.kind)
            answer = run(SENDERS[endpoint](body))
            count = per_endpoint[endpoint]
            count["cases"] += 1
            count[f"{answer.status // 100}xx"] += 1
            try:
                check_answer(answer, case)
            except AssertionError as exc:
                failures.append(f"{endpoint}: {exc}")
            if run(SENDERS[endpoint](normal_for(endpoint))).status != 200:
                failures.append(f"{endpoint}: no answer after {case}")
            cells[(case.field, case.kind)].add(answer.status)
    seconds = time.monotonic() - t0
    total = sum(c["cases"] for c in per_endpoint.values())
    print(f"{total} cases in {seconds:.0f} s; {len(failures)} broke the property\n")
    print("| endpoint | cases | 2xx | 4xx | 5xx |\n|---|---|---|---|---|")
    for endpoint, c in per_endpoint.items():
        print(f"| {endpoint} | {c['cases']} | {c['2xx']} | {c['4xx']} | {c['5xx']} |")
    kinds = list(KINDS)
    fields = sorted({f for f, _ in cells})
    print("\n| field | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for field in fields:
        row = ["/".join(str(s) for s in sorted(cells.get((field, k), ()))) or "·"
               for k in kinds]
        print(f"| `{field}` | " + " | ".join(row) + " |")
    for line in failures[:50]:
        print("FAILED", line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
