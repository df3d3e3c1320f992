"""`POST /v1/files` with `purpose=batch`: the JSONL validated line by line as it is stored.

Every line must be a batch request line (`custom_id`, `method` POST, `url`, `body`), with
unique custom_ids and a url that a batch can run; the first bad line fails the upload
with a 400 naming `file` and the line number, and nothing is stored. What the body asks
is checked when the line runs (a bad body lands in the batch's error file, answered as the
endpoint itself would answer it). Limits are OpenAI's: 50,000 lines, 200 MB.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection
from typing import IO, Any

from worker.openai.errors import InvalidRequest, PayloadTooLarge
from worker.openai.files.store import FileStore

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
MAX_CUSTOM_ID = 512
LINE_KEYS = {"custom_id", "method", "url", "body"}
EXPIRES_MIN, EXPIRES_MAX = 3600, 30 * 86_400


def expires_after(anchor: str | None, seconds: str | int | None) -> int | None:
    """OpenAI's `expires_after` (`anchor` created_at, `seconds` 3600..2592000), or None."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest("expires_after.anchor must be created_at",
                             param="expires_after.anchor")
    text = str(seconds) if seconds is not None else ""
    if not text.isdigit() or not EXPIRES_MIN <= int(text) <= EXPIRES_MAX:
        raise InvalidRequest(f"expires_after.seconds must be a whole number from {EXPIRES_MIN} "
                             f"to {EXPIRES_MAX}", param="expires_after.seconds")
    return int(text)


def store_batch_file(store: FileStore, src: IO[bytes], *, filename: str, purpose: str,
                     endpoints: Collection[str], expires: int | None = None,
                     max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Validate `src` line by line into a temporary file, then store it; the file object."""
    if purpose != "batch":
        raise InvalidRequest(f"purpose must be batch (the only purpose this server stores), "
                             f"not {purpose!r}", param="purpose")
    temp = store.temp_path()
    try:
        with temp.open("wb") as out:
            count, size, seen, urls = 0, 0, set[str](), set[str]()
            for n, raw in enumerate(src, 1):
                size += len(raw)
                if size > max_bytes:
                    raise PayloadTooLarge(f"file exceeds {max_bytes} bytes", param="file")
                if not raw.strip():
                    continue
                urls.add(check_line(raw, n, seen, endpoints))
                count += 1
                if count > max_lines:
                    raise PayloadTooLarge(f"file holds more than {max_lines} requests "
                                          f"(line {n})", param="file")
                out.write(raw.rstrip(b"\r\n") + b"\n")
            if count == 0:
                raise InvalidRequest("file is empty: one JSON request per line", param="file")
            out.flush()
            os.fsync(out.fileno())
        return store.adopt(temp, filename=filename, purpose=purpose, expires_after=expires,
                           info={"lines": count, "urls": sorted(urls)})
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def check_line(raw: bytes, n: int, seen: set[str], endpoints: Collection[str]) -> str:
    """One batch input line's shape; returns its url. Raises a 400 naming the line."""
    def bad(message: str) -> InvalidRequest:
        return InvalidRequest(f"file line {n}: {message}", param="file", code="invalid_batch_line")

    try:
        line = json.loads(raw)
    except UnicodeDecodeError:
        raise bad("not valid UTF-8") from None
    except RecursionError:
        raise bad("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(line, dict):
        raise bad("not a JSON object")
    unknown = sorted(set(line) - LINE_KEYS)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (a line has custom_id, method, url, body)")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise bad(f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID} characters")
    if custom_id in seen:
        raise bad(f"custom_id {custom_id!r} is used twice; each line needs its own")
    seen.add(custom_id)
    if line.get("method") != "POST":
        raise bad(f"method must be POST, not {line.get('method')!r}")
    url = line.get("url")
    if url not in endpoints:
        raise bad(f"url {url!r} is not one a batch can run here: {sorted(endpoints)}")
    body = line.get("body")
    if not isinstance(body, dict):
        raise bad("body must be the request object")
    if body.get("stream"):
        raise bad("body.stream must be false: a batch line is answered whole")
    return str(url)
