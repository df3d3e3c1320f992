"""`python -m worker {plan,serve,runpod,bench,weights,hubgen}`: the worker's command line."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "help"
    env = dict(os.environ)
    if command == "plan":
        from worker.setup.plan_cli import main as plan_main

        return plan_main(args, env)
    if command == "serve":
        from worker.platforms.serve import main as serve_main

        return serve_main(args, env)
    if command == "bench":
        from worker.bench.cli import main as bench_main

        return bench_main(args, env)
    if command == "hubgen":
        from worker.platforms.hubgen import main as hubgen_main

        return hubgen_main(args)
    if command == "weights":
        from worker.setup.weights import main as weights_main

        return weights_main(args, env)
    if command == "runpod":
        from worker.platforms.runpod_handler import main as runpod_main

        return runpod_main(args, env)
    print(
        "usage: python -m worker COMMAND\n\n"
        "  plan   [--gpu NAME] [--count N] [--json]   hardware, plan and fit; loads nothing\n"
        "  serve                                      OpenAI-compatible HTTP server on HOST:PORT\n"
        "  runpod                                     RunPod Serverless worker (the image's CMD)\n"
        "  bench  --url URL [--api-key K] [--price-per-hour P]   load test any endpoint\n"
        "  weights [MODEL]                            fetch the weights onto the cache volume\n"
        "  hubgen [--check]                           write (or check) the RunPod Hub files\n",
        file=sys.stderr if command != "help" else sys.stdout,
    )
    return 0 if command in {"help", "-h", "--help"} else 2


if __name__ == "__main__":
    sys.exit(main())
