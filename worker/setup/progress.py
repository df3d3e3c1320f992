"""Loading progress for SHOW_LOADING_PROGRESS=true: download bar, GPU memory, phases, READY.

`Progress(enabled, stream)` draws redrawn bars on a terminal and plain, log-friendly lines
otherwise (a bar line every 10 % or every `interval` seconds, whichever comes first).
Disabled, every method is a no-op. GPU memory is sampled through NVML (`pynvml`, imported
inside the function) in a background thread; without a GPU the memory bar is simply absent.
`VllmStartupLog` turns vLLM's own start-up log lines into phase timings and progress lines.
Nothing happens at import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

GiB = 1024**3
MiB = 1024**2
BAR_WIDTH = 30


def fmt_bytes(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n / 1024:.0f} KiB"


def render_bar(label: str, done: float, total: float, *, rate: float | None = None,
               width: int = BAR_WIDTH) -> str:
    """`label [#####.....]  45%  1.20 GiB/2.60 GiB  85.0 MiB/s  ETA 16s` (ASCII only)."""
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    filled = round(frac * width)
    text = f"{label} [{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}%  " \
           f"{fmt_bytes(done)}/{fmt_bytes(total)}"
    if rate is not None and rate > 0:
        text += f"  {fmt_bytes(rate)}/s"
        if done < total:
            text += f"  ETA {(total - done) / rate:.0f}s"
    return text


class Progress:
    """Start-up progress on `stream` (default stdout); every method is a no-op when disabled."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self._out = stream if stream is not None else sys.stdout
        self.tty = _isatty(self._out) if tty is None else tty
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False  # a terminal bar is being redrawn on the current line
        self.stage = "loading"  # label of the GPU memory bar; VllmStartupLog moves it on

    def line(self, text: str) -> None:
        if self.enabled:
            with self._lock:
                self._write(("\n" if self._open else "") + text + "\n")
                self._open = False

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self._clock()
        self.line(f"[{name}] ...")
        try:
            yield
        except BaseException:
            self.line(f"[{name}] failed after {self._clock() - t0:.1f}s")
            raise
        self.line(f"[{name}] done in {self._clock() - t0:.1f}s")

    def download(self, total_bytes: int, label: str = "download") -> Bar:
        """A callback taking the bytes done so far (absolute); draws a byte progress bar."""
        return Bar(self, label, total_bytes, rate=True)

    def _redraw(self, text: str, *, final: bool) -> None:
        with self._lock:
            self._write("\r" + text.ljust(100) + ("\n" if final else ""))
            self._open = not final

    @contextlib.contextmanager
    def watch_gpu_memory(self, interval: float = 0.5) -> Iterator[None]:
        """Draw used/total GPU memory while the body runs (vLLM loading weights, graphs)."""
        reader = nvml_memory_reader() if self.enabled else None
        if reader is None:
            yield
            return
        stop = threading.Event()
        bars: dict[str, Bar] = {}

        def sample() -> None:
            while True:
                used, total = reader()
                stage = self.stage
                if stage not in bars:
                    bars[stage] = Bar(self, f"GPU memory ({stage})", total)
                bars[stage](used, total)
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=sample, name="gpu-memory-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            used, total = reader()
            self.line(f"GPU memory: {fmt_bytes(used)} of {fmt_bytes(total)} in use")
            reader.close()  # type: ignore[attr-defined]

    def ready(self, url: str, *, model: str | None = None, seconds: float | None = None) -> None:
        what = f"{model} at {url}" if model else url
        took = f" (cold start {seconds:.1f}s)" if seconds is not None else ""
        rule = "=" * min(100, max(40, len(what) + len(took) + 10))
        self.line(f"{rule}\n  READY  {what}{took}\n{rule}")

    def _write(self, text: str) -> None:
        with contextlib.suppress(ValueError, OSError):  # a closed stream must not kill start-up
            self._out.write(text)
            self._out.flush()


class Bar:
    """One progress bar: call it with the amount done so far (and a new total if it moved)."""

    def __init__(self, progress: Progress, label: str, total: float, *, rate: bool = False
                 ) -> None:
        self._p = progress
        self.label = label
        self.total = total
        self._rate = rate
        self._t0 = progress._clock()
        self._last = -1e9
        self._step = -1

    def __call__(self, done: float, total: float | None = None) -> None:
        p = self._p
        if not p.enabled:
            return
        if total is not None:
            self.total = total
        now = p._clock()
        finished = self.total > 0 and done >= self.total
        per_s = done / (now - self._t0) if self._rate and now - self._t0 >= 2.0 else None
        text = render_bar(self.label, done, self.total, rate=per_s)
        if p.tty:
            if finished or now - self._last >= 0.1:
                self._last = now
                p._redraw(text, final=finished)
            return
        step = int(10 * done / self.total) if self.total > 0 else 0
        if step > self._step or now - self._last >= p.interval:
            self._step, self._last = step, now
            p.line(text)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _NvmlReader:
    """Summed used/total memory over every NVML device."""

    def __init__(self, nvml: object, handles: list[object]) -> None:
        self._nvml = nvml
        self._handles = handles

    def __call__(self) -> tuple[float, float]:
        used = total = 0.0
        for h in self._handles:
            info = self._nvml.nvmlDeviceGetMemoryInfo(h)  # type: ignore[attr-defined]
            used += float(info.used)
            total += float(info.total)
        return used, total

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()  # type: ignore[attr-defined]


def nvml_memory_reader() -> _NvmlReader | None:
    """A callable returning (used, total) GPU bytes, or None without NVML or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        reader = _NvmlReader(pynvml, handles)
        reader()
    except Exception:
        count = 0
    if count == 0:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
        return None
    return reader


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
        import os

        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
