"""The servers the GPU benchmarks start: one process group each, timed from spawn to ready.

`Server` spawns a command in a session of its own (so a stop reaches its engine-core child),
polls its ready URL, and stops it with SIGTERM, then SIGKILL. With `pyspy` (a py-spy binary),
the command runs under `py-spy record` (every process of the group, idle stacks too, raw
collapsed stacks into `<log>.pyspy.txt`), which is stopped with SIGINT first so it writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.setup.startup_log import VllmStartupLog  # noqa: E402

PY = sys.executable
START_TIMEOUT = 900.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def cache_env(root: Path) -> dict[str, str]:
    """Compile caches of this server alone (vLLM's, inductor's, Triton's)."""
    for sub in ("vllm", "inductor", "triton"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {"VLLM_CACHE_ROOT": str(root / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
            "TRITON_CACHE_DIR": str(root / "triton")}


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], ready_path: str,
                 port: int, logfile: Path, pyspy: str | None = None):
        self.name, self.env, self.port = name, env, port
        self.pyspy_out = logfile.with_suffix(".pyspy.txt") if pyspy else None
        self.cmd = cmd if not pyspy else [
            pyspy, "record", "--subprocesses", "--idle", "--threads", "--nonblocking",
            "--rate", "50", "--format", "raw", "-o", str(self.pyspy_out), "--", *cmd]
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Spawn, wait for ready; seconds from spawn to the first ready answer."""
        log(f"start {self.name}: {' '.join(self.cmd)}")
        t0 = time.perf_counter()
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - t0 < START_TIMEOUT:
            if self.proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            if http_get(self.ready_url)[0] == 200:
                ready = time.perf_counter() - t0
                log(f"{self.name} ready after {ready:.1f} s")
                return ready
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT} s")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if self.pyspy_out is not None:  # py-spy writes its samples on SIGINT
            os.kill(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):  # an engine-core child would hold GPU
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.perf_counter() + 60  # the next server needs the GPU memory back
        while session_cpu(self.proc.pid) and time.perf_counter() < deadline:
            time.sleep(0.2)
        log(f"{self.name} stopped, exit {self.proc.returncode}")
        return self.proc.returncode


def vllm_timeline(logfile: Path) -> dict[str, float]:
    parser = VllmStartupLog()
    for line in logfile.read_text(errors="replace").splitlines():
        parser.feed(line)
    return parser.collect()


def session_cpu(sid: int) -> dict[str, float]:
    """CPU seconds of every process in session `sid` (the server, its engine core), by
    "pid name" ("server": the process started, the one serving HTTP)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            f = text.rsplit(")", 1)[1].split()
            if int(f[3]) == sid:
                pid = int(stat.parent.name)
                name = "server" if pid == sid else text[text.index("(") + 1:text.rindex(")")]
                out[f"{pid} {name}"] = (int(f[11]) + int(f[12])) / tick
    return out


