"""Durable writes on a plain directory (a local disk or a network volume).

A file is written whole or not at all: to a temporary name beside it, fsynced,
renamed over the final name, and the directory fsynced, so a worker killed at
any moment leaves either the old content or the new one, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename or a new name in `path` durable (a no-op where the OS refuses)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, separators=(",", ":")).encode())


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when it is missing or unreadable (a write in progress
    elsewhere shows the old content, never a torn one, see `write_atomic`)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def append_line(path: Path, line: bytes) -> None:
    """Append one line and fsync it before returning: it survives a crash from now on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line if line.endswith(b"\n") else line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[bytes]:
    """Every complete line of `path`; a torn last line (a crash mid-append) is left out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    return [line for line in lines[:-1] if line.strip()]  # the last piece has no newline


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline: a crash mid-append) so the next append starts a
    line of its own; returns the bytes cut."""
    try:
        with path.open("rb+") as f:
            data = f.read()
            keep = data.rfind(b"\n") + 1
            if keep == len(data):
                return 0
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return len(data) - keep
    except FileNotFoundError:
        return 0
