"""Resume blobs that a killed download left half-written in the Hugging Face cache.

huggingface_hub 1.x/2.x write each download to `blobs/<etag>.<random>.incomplete` and start
from zero in a new process, so a worker killed at 30 of 61 GiB would leave 30 GiB behind and
fetch everything again. Before the regular download, `resume_partials` takes the largest
partial of each missing blob, fetches only the rest with an HTTP `Range` request and moves
the finished blob into place; `huggingface_hub` then only links it into the snapshot.
(0.36 names its partial `<etag>.incomplete` and resumes by itself; this handles it too.)
The caller holds the download lock, so no other worker should write these files; as a guard
for volumes whose file locks are not honoured across hosts, a partial written to in the last
`STALE_AFTER` seconds is left alone (it may be another worker's live download). The blob's name
is its content hash (LFS sha256), so the prefix on disk and the remote bytes are the same
file; sizes are checked, contents are not re-hashed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024
STALE_AFTER = 30.0  # seconds without a write before a partial counts as abandoned


def stale_partials(blobs: Path, pattern: str) -> list[Path]:
    """Partial downloads matching `pattern` not written to lately, largest first."""
    now = time.time()
    out = []
    for p in blobs.glob(pattern):
        with contextlib.suppress(OSError):
            st = p.stat()
            if now - st.st_mtime >= STALE_AFTER:
                out.append((st.st_size, p))
    return [p for _, p in sorted(out, reverse=True)]


class _File(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def blob(self) -> str: ...


def resume_partials(repo: str, commit: str, files: Sequence[_File], blobs: Path,
                    token: str | None, endpoint: str | None) -> int:
    """Complete the partial blobs of `files`; return the bytes that did not need fetching."""
    saved = 0
    for f in files:
        final = blobs / f.blob
        partials = stale_partials(blobs, f"{f.blob}*.incomplete")
        if final.exists() or not partials:
            continue
        best, rest = partials[0], partials[1:]
        for p in rest:
            with contextlib.suppress(OSError):
                p.unlink()
        have = best.stat().st_size
        if have == 0 or have > f.size:
            best.unlink()
            continue
        log.info("resuming %s at %.1f of %.1f MiB", f.path, have / 2**20, f.size / 2**20)
        try:
            if have < f.size:
                _fetch_rest(_url(repo, commit, f.path, endpoint), best, have, token)
        except (OSError, urllib.error.URLError) as exc:  # leave it; the regular download runs
            log.warning("could not resume %s (%s): downloading it again", f.path,
                        type(exc).__name__)
            continue
        if best.stat().st_size == f.size:
            best.chmod(0o644)
            os.replace(best, final)
            saved += have
        else:
            best.unlink()
    return saved


def _url(repo: str, commit: str, path: str, endpoint: str | None) -> str:
    from huggingface_hub import hf_hub_url

    return str(hf_hub_url(repo, path, revision=commit, endpoint=endpoint))


def _fetch_rest(url: str, partial: Path, have: int, token: str | None) -> None:
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-",
                                               "User-Agent": "gpt-oss-worker"})
    if token:
        # Unredirected: the Hub redirects to a CDN, which must not receive the token.
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        if resp.status == 206:
            mode = "ab"
        elif resp.status == 200:  # the server ignored Range: start over
            mode = "wb"
        else:
            raise OSError(f"HTTP {resp.status}")
        with partial.open(mode) as out:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
