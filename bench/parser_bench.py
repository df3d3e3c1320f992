"""CPU cost of the Harmony streaming parser per token, at 1 and 64 concurrent streams.

Completions are real Harmony token sequences rendered by openai_harmony from the repo's
own docs (analysis + final answer; every fourth one a tool call with JSON arguments), and
are fed one token per `feed` call, as the engine's DELTA outputs arrive. "64 streams"
keeps 64 parsers alive and feeds them round-robin, one token each, so their states
interleave as they do under load. Time is process CPU time (`time.process_time`), which a
busy shared machine disturbs less than wall time; the best of several rounds is reported,
with the median too. openai_harmony's own StreamableParser is measured the same way for
reference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.harmony.parser import HarmonyStreamParser
from worker.harmony.tokens import CALL, RETURN, encoding

REPO = Path(__file__).resolve().parent.parent
TEXTS = ("README.md", "ARCHITECTURE.md", "docs/RUNPOD.md", "docs/API.md", "docs/WEIGHTS.md")


@dataclass(frozen=True)
class ParserResult:
    streams: int
    tokens: int
    best_us: float
    median_us: float


def completions(count: int = 64, words: int = 160) -> list[list[int]]:
    """`count` completion token sequences (after `<|start|>assistant`)."""
    from openai_harmony import Message, Role

    text = " ".join((REPO / name).read_text() for name in TEXTS if (REPO / name).is_file())
    vocab = text.split()
    enc = encoding()
    out: list[list[int]] = []
    for i in range(count):
        start = (i * 97) % max(1, len(vocab) - 2 * words)
        reasoning = " ".join(vocab[start : start + words])
        answer = " ".join(vocab[start + words : start + 2 * words])
        msgs = [Message.from_role_and_content(Role.ASSISTANT, reasoning).with_channel("analysis")]
        if i % 4 == 3:
            args = '{"query": "' + answer[:200].replace('"', "'") + '", "limit": 5}'
            msgs.append(Message.from_role_and_content(Role.ASSISTANT, args)
                        .with_channel("commentary").with_recipient("functions.search")
                        .with_content_type("<|constrain|>json"))
            stop = CALL
        else:
            msgs.append(Message.from_role_and_content(Role.ASSISTANT, answer)
                        .with_channel("final"))
            stop = RETURN
        toks: list[int] = []
        for m in msgs:
            toks += list(enc.render(m))
        toks[-1] = stop  # the last message ends the turn: <|return|> or <|call|>
        out.append(toks[2:])  # drop <|start|>assistant: the prompt ends with it
    return out


def _interleave(seqs: list[list[int]], streams: int) -> list[list[tuple[int, list[int]]]]:
    """Per group of `streams` sequences, the feed order: (stream, [token]) round-robin."""
    groups = []
    for start in range(0, len(seqs), streams):
        group = seqs[start : start + streams]
        order = [(i, [seq[pos]]) for pos in range(max(map(len, group)))
                 for i, seq in enumerate(group) if pos < len(seq)]
        groups.append(order)
    return groups


def _run_ours(groups: list[list[tuple[int, list[int]]]], streams: int) -> float:
    """CPU seconds to parse every group, its streams interleaved, one token per feed."""
    t0 = time.process_time()
    for order in groups:
        feeds = [HarmonyStreamParser().feed for _ in range(streams)]
        for i, one in order:
            feeds[i](one)
    return time.process_time() - t0


def _run_empty(groups: list[list[tuple[int, list[int]]]], streams: int) -> float:
    """The same loops with a no-op feed: the harness's own cost, subtracted."""
    def feed(one: list[int]) -> list[Any]:
        return []

    t0 = time.process_time()
    for order in groups:
        feeds = [feed for _ in range(streams)]
        for i, one in order:
            feeds[i](one)
    return time.process_time() - t0


def _run_harmony(groups: list[list[tuple[int, list[int]]]], streams: int) -> float:
    from openai_harmony import Role, StreamableParser

    enc = encoding()
    t0 = time.process_time()
    for order in groups:
        parsers = [StreamableParser(enc, role=Role.ASSISTANT) for _ in range(streams)]
        for i, one in order:
            parser = parsers[i]
            parser.process(one[0])
            _ = parser.last_content_delta  # what a streaming server reads per token
    return time.process_time() - t0


Run = Callable[[list[list[tuple[int, list[int]]]], int], float]


def _measure(run: Run, seqs: list[list[int]], streams: int, rounds: int) -> ParserResult:
    tokens = sum(len(s) for s in seqs)
    groups = _interleave(seqs, streams)
    run(groups, streams)  # warm caches (byte table, regexes)
    times = []
    for _ in range(rounds):
        empty = _run_empty(groups, streams)
        times.append((run(groups, streams) - empty) / tokens * 1e6)
    return ParserResult(streams=streams, tokens=tokens, best_us=min(times),
                        median_us=statistics.median(times))


def parser_benchmark(rounds: int = 7) -> dict[str, Any]:
    seqs = completions()
    ours = [_measure(_run_ours, seqs, n, rounds) for n in (1, 64)]
    ref = [_measure(_run_harmony, seqs, n, max(3, rounds // 2)) for n in (1, 64)]
    return {"ours": ours, "openai_harmony": ref,
            "mean_tokens": sum(len(s) for s in seqs) / len(seqs), "rounds": rounds}


if __name__ == "__main__":
    for name, results in parser_benchmark().items():
        print(name, results)
