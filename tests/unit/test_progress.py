"""Loading progress: terminal bars vs plain log lines, GPU memory, vLLM phases, READY."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.setup import progress as progress_mod
from worker.setup.progress import Progress, fmt_bytes, render_bar
from worker.setup.startup_log import VllmStartupLog, process_age

MiB = 1024**2


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(tty: bool, enabled: bool = True) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return Progress(enabled, out, tty=tty, interval=10.0, clock=clock), out, clock


def test_render_bar_is_ascii_with_rate_and_eta() -> None:
    text = render_bar("download", 50 * MiB, 100 * MiB, rate=10 * MiB, width=10)
    assert text == ("download [#####.....]  50%  50.0 MiB/100.0 MiB  10.0 MiB/s  ETA 5s")
    assert text.isascii()
    assert fmt_bytes(3 * 1024**3) == "3.00 GiB"


def test_plain_lines_every_ten_percent_or_interval_when_not_a_terminal() -> None:
    p, out, clock = make(tty=False)
    bar = p.download(100 * MiB)
    for i in range(101):  # 1 % per second
        clock.t = float(i)
        bar(i * MiB)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 11  # 0 %, 10 %, ..., 100 %
    assert lines[-1].startswith("download [" + "#" * 30 + "] 100%")

    p, out, clock = make(tty=False)
    bar = p.download(100 * MiB)
    for i in range(60):  # a slow download: one line every 10 s even without a 10 % step
        clock.t = float(i)
        bar(i * MiB // 10)
    assert len(out.getvalue().splitlines()) == 6


def test_terminal_bar_redraws_one_line_then_ends_it() -> None:
    p, out, clock = make(tty=True)
    bar = p.download(10 * MiB)
    for i in range(11):
        clock.t = i * 0.5
        bar(i * MiB)
    text = out.getvalue()
    assert text.count("\r") == 11 and text.count("\n") == 1 and text.endswith("\n")
    p.line("next")
    assert out.getvalue().endswith("\nnext\n")


def test_line_after_an_open_terminal_bar_starts_a_new_line() -> None:
    p, out, _ = make(tty=True)
    p.download(10 * MiB)(MiB)
    p.line("[weight load] ...")
    assert out.getvalue().split("\r")[-1].endswith("\n[weight load] ...\n")


def test_phase_and_ready_banner() -> None:
    p, out, clock = make(tty=False)
    with p.phase("download"):
        clock.t = 2.5
    p.ready("http://0.0.0.0:8000/v1", model="openai/gpt-oss-20b", seconds=42.0)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["[download] ...", "[download] done in 2.5s"]
    assert lines[3] == "  READY  openai/gpt-oss-20b at http://0.0.0.0:8000/v1 (cold start 42.0s)"
    assert lines[2] == lines[4] and set(lines[2]) == {"="}


def test_failed_phase_says_so() -> None:
    p, out, _ = make(tty=False)
    with pytest.raises(RuntimeError), p.phase("download"):
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1] == "[download] failed after 0.0s"


def test_disabled_prints_nothing() -> None:
    p, out, _ = make(tty=True, enabled=False)
    p.download(10)(5)
    with p.phase("x"), p.watch_gpu_memory():
        pass
    p.ready("u")
    assert out.getvalue() == ""


class FakeReader:
    def __init__(self) -> None:
        self.used = 0.0
        self.closed = False

    def __call__(self) -> tuple[float, float]:
        self.used = min(self.used + 8 * 1024**3, 80 * 1024**3)
        return self.used, 80 * 1024**3

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeReader]:
    reader = FakeReader()
    monkeypatch.setattr(progress_mod, "nvml_memory_reader", lambda: reader)
    yield reader


def test_gpu_memory_bar_while_loading(fake_gpu: FakeReader) -> None:
    out = io.StringIO()
    p = Progress(True, out, tty=False)
    with p.watch_gpu_memory(interval=0.01):
        import time

        time.sleep(0.2)
    text = out.getvalue()
    assert "GPU memory (loading) [" in text
    assert text.splitlines()[-1] == "GPU memory: 80.00 GiB of 80.00 GiB in use"
    assert fake_gpu.closed


def test_no_gpu_means_no_memory_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "nvml_memory_reader", lambda: None)
    p, out, _ = make(tty=False)
    with p.phase("engine"), p.watch_gpu_memory():
        pass
    assert "GPU memory" not in out.getvalue()
    assert out.getvalue().splitlines()[0] == "[engine] ..."


def test_nvml_reader_is_none_without_a_gpu() -> None:
    reader = progress_mod.nvml_memory_reader()  # CI has no GPU; a GPU box has one
    if reader is not None:
        used, total = reader()
        assert 0 <= used <= total
        reader.close()


VLLM_LINES = [
    "Starting to load model /models/gpt-oss-20b...",
    "Loading weights took 11.52 seconds",
    "Model loading took 13.72 GiB memory and 12.804071 seconds",
    "torch.compile took 31.40 s in total",
    "Graph capturing finished in 9 secs, took 0.84 GiB",
    "init engine (profile, create kv cache, warmup model) took 48.10 s (compilation: 31.40 s)",
    "some other line",
]


def test_vllm_startup_log_records_phases_and_moves_progress(tmp_path: Path) -> None:
    p, out, _ = make(tty=False)
    sink = tmp_path / "phases.jsonl"
    startup = VllmStartupLog(p, sink)
    logger = logging.getLogger("vllm.test_progress")
    logger.setLevel(logging.INFO)
    with startup.watch():
        for line in VLLM_LINES:
            logger.info("%s", line)
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "loggers": {"vllm": {"handlers": []}}})  # as vLLM does
        logger.info("Graph capturing finished in 9 secs, took 0.84 GiB")
    logger.info("Loading weights took 99.00 seconds")  # not watching any more
    expected = {"load_start": 0.0, "weight_read": 11.52, "weight_load": 12.804071,
                "compile": 31.4, "graph_capture": 9.0, "engine_init": 48.1}
    assert startup.collect() == expected
    assert VllmStartupLog(None, sink).collect() == expected  # what a parent reads back
    text = out.getvalue()
    assert "[weight load] done in 12.8s" in text and "[graph capture] done in 9.0s" in text
    assert p.stage.startswith("compile")
    assert startup.split(60.0) == {"weight_load": 12.804, "compile": 31.4,
                                   "graph_capture": 9.0, "engine_init_other": 6.796}


@pytest.mark.parametrize("line", [
    "torch.compile takes 7.5 s in total",  # vLLM < 0.30
    "[backbone] torch.compile took 7.5 s in total",
    "torch.compile and initial profiling/warmup run together took 7.5 s in total",
])
def test_compile_line_variants(line: str) -> None:
    startup = VllmStartupLog()
    startup.feed(f"(EngineCore pid=1) INFO 11-27 09:54:39 [monitor.py:62] {line}")
    assert startup.collect() == {"compile": 7.5}


def test_split_without_vllm_lines_is_all_other() -> None:
    assert VllmStartupLog().split(12.5) == {"engine_init_other": 12.5}


def test_process_age_is_small_and_positive() -> None:
    age = process_age()
    assert age is None or 0 <= age < 3600
