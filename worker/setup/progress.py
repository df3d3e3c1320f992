"""Loading progress for SHOW_LOADING_PROGRESS=true: download bar, GPU memory, phases, READY.

`Progress(enabled, stream)` draws redrawn bars on a terminal and plain, log-friendly lines
otherwise (a bar line every 10 % or every `interval` seconds, whichever comes first).
Disabled, every method is a no-op. GPU memory is sampled through NVML (`pynvml`, imported
inside the function) in a background thread; without a GPU the memory bar is simply absent.
`setup/startup_log.py` turns vLLM's own start-up log lines into phase timings for it.
Nothing happens at import.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

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
