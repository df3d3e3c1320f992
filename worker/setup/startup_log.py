"""vLLM's own start-up log lines as phase timings (weight load, compile, CUDA graphs, engine
init), moving the loading progress display on; and this process's age for the timeline.
Nothing happens at import."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.setup.progress import Progress

# vLLM 0.2x-0.32 start-up lines (worker process or in-process engine core). Unknown text
# is ignored: a vLLM release that rewords these only loses the breakdown, never start-up.
_VLLM_LINES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("load_start", re.compile(r"Starting to load model")),
    ("weight_load", re.compile(r"Model loading took .*? and ([\d.]+) seconds")),
    ("weight_read", re.compile(r"Loading weights took ([\d.]+) seconds")),
    ("compile", re.compile(r"torch\.compile (?:takes|took|and initial profiling/warmup run "
                           r"together took) ([\d.]+) s in total")),
    ("graph_capture", re.compile(r"Graph capturing finished in ([\d.]+) secs")),
    ("engine_init", re.compile(r"init engine \(profile, create kv cache, warmup model\) "
                               r"took ([\d.]+) s")),
)


class VllmStartupLog:
    """Reads vLLM's start-up log lines while `watch()` is active: records phase seconds and
    moves the progress display on. It hooks the log-record factory, not a handler: vLLM
    re-applies its logging config (dropping foreign handlers) while it builds the engine, but
    chains an existing record factory, and a forked engine-core process inherits it. With
    `sink`, what is seen is also appended there as JSON lines, which `collect()` reads back in
    the parent. Unknown lines are ignored: a reworded release only loses the breakdown."""

    def __init__(self, progress: Progress | None = None, sink: Path | None = None) -> None:
        self.progress = progress
        self.sink = sink
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        previous = logging.getLogRecordFactory()
        active = True

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if active and record.name.startswith("vllm"):
                with contextlib.suppress(Exception):
                    self.feed(record.getMessage())
            return record

        logging.setLogRecordFactory(factory)
        try:
            yield
        finally:
            active = False  # vLLM may have wrapped it: then it stays, as a pass-through
            if logging.getLogRecordFactory() is factory:
                logging.setLogRecordFactory(previous)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Watch a whole engine build: vLLM's log lines here and, through a temporary sink, in
        a forked engine-core process; GPU memory on the progress display. What was seen is
        kept in `seconds` for `split`."""
        fd, name = tempfile.mkstemp(prefix="vllm-phases-", suffix=".jsonl")
        os.close(fd)
        self.sink = Path(name)
        gpu = self.progress.watch_gpu_memory() if self.progress else contextlib.nullcontext()
        try:
            with self.watch(), gpu:
                yield
        finally:
            self.seconds = self.collect()
            with contextlib.suppress(OSError):
                self.sink.unlink()
            self.sink = None

    def feed(self, message: str) -> None:
        for key, pattern in _VLLM_LINES:
            m = pattern.search(message)
            if m is None:
                continue
            value = float(m.group(1)) if m.groups() else 0.0
            self._record(key, value)
            if self.sink is not None:
                with contextlib.suppress(OSError), self.sink.open("a") as f:
                    f.write(json.dumps({key: value}) + "\n")

    def _record(self, key: str, value: float) -> None:
        self.seconds[key] = value
        p = self.progress
        if p is None:
            return
        if key == "load_start":
            p.stage = "weights"
            p.line("[weight load] ...")
        elif key in ("weight_read", "weight_load"):
            p.stage = "compile / CUDA graphs / KV cache"
            what = "weights read" if key == "weight_read" else "done"
            p.line(f"[weight load] {what} in {value:.1f}s")
        elif key in ("compile", "graph_capture"):
            p.line(f"[{key.replace('_', ' ')}] done in {value:.1f}s")
        elif key == "engine_init":
            p.line(f"[engine init] profile, KV cache, compile, graphs: {value:.1f}s")

    def collect(self) -> dict[str, float]:
        """Seconds per vLLM phase seen here or, through `sink`, in an engine-core process."""
        out = dict(self.seconds)
        if self.sink is not None and self.sink.is_file():
            for raw in self.sink.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.update(json.loads(raw))
        return out

    def split(self, build_seconds: float) -> dict[str, float]:
        """The engine build as timeline phases that add up to `build_seconds`."""
        seen = self.collect()
        parts = {"weight_load": seen.get("weight_load") or seen.get("weight_read", 0.0),
                 "compile": seen.get("compile", 0.0),
                 "graph_capture": seen.get("graph_capture", 0.0)}
        out = {k: round(v, 3) for k, v in parts.items() if v > 0}
        out["engine_init_other"] = round(max(0.0, build_seconds - sum(out.values())), 3)
        return out


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None where unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
