"""Talking to the Hub for `worker.setup.weights`: list a revision, repair and fetch its files.

`list_snapshot` asks for the repo's files with sizes (one API call) and keeps what vLLM
loads; `download` deletes files and blobs of the wrong size, resumes abandoned partial
blobs (`worker.setup.resume`), fetches the rest with `huggingface_hub` while a poller draws the
byte progress from the disk, and `explain` turns any failure into a `WeightsError` naming
the variable to fix, never the token nor the Hub's own text. The caller holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worker.setup.progress import Progress, fmt_bytes
from worker.setup.resume import resume_partials, stale_partials
from worker.setup.snapshot import Snapshot, WeightFile, WeightsError, check, needed

log = logging.getLogger("worker.setup.weights")

# httpx/httpx2 (huggingface_hub 1.x/2.x) and requests (0.36) transport errors, by class name
# so that none of these libraries has to be imported to recognise them.
NETWORK_ERRORS = frozenset({"ConnectError", "ConnectTimeout", "ReadTimeout", "ReadError",
                            "RemoteProtocolError", "ProxyError", "ConnectionError", "Timeout"})


def list_snapshot(model: str, revision: str | None, token: str | None,
                  endpoint: str | None) -> Snapshot:
    """The files vLLM loads at `revision`, with their sizes and blob names (one API call)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(
            model, revision=revision, files_metadata=True)
    except Exception as exc:
        raise explain(exc, model, revision, token) from None
    files = []
    for s in info.siblings or []:
        if not needed(s.rfilename):
            continue
        size = s.lfs.size if s.lfs is not None else s.size
        blob = s.lfs.sha256 if s.lfs is not None else s.blob_id
        if size is None or blob is None:
            raise WeightsError(f"the Hub listed {model} without file sizes")
        files.append(WeightFile(s.rfilename, int(size), str(blob)))
    if info.sha is None or not files:
        raise WeightsError(f"{model}: the Hub listing has no commit or no loadable files")
    return Snapshot(model, str(info.sha), tuple(sorted(files, key=lambda f: f.path)))


def download(snap: Snapshot, repo_dir: Path, cache: Path, token: str | None,
             endpoint: str | None, progress: Progress | None) -> None:
    """Repair, resume and fetch until every file of `snap` is in the snapshot folder."""
    from huggingface_hub import hf_hub_download

    snapshot_dir = repo_dir / "snapshots" / snap.commit
    with contextlib.suppress(WeightsError):
        for path in check(snapshot_dir, snap):
            _forget(snapshot_dir, repo_dir, next(f for f in snap.files if f.path == path))
    for f in snap.files:  # a blob of the wrong size would be linked again without a download
        blob = repo_dir / "blobs" / f.blob
        if blob.is_file() and blob.stat().st_size != f.size:
            log.warning("%s: cached blob has the wrong size, fetching it again", f.path)
            blob.unlink()
    todo = [f for f in snap.files if not (snapshot_dir / f.path).is_file()]
    if not todo:
        return
    log.info("downloading %d file(s) of %s@%s (%s)", len(todo), snap.repo, snap.commit[:12],
             fmt_bytes(sum(f.size for f in todo)))
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(snap, repo_dir, progress, stop), daemon=True)
    poller.start()
    try:
        resume_partials(snap.repo, snap.commit, todo, repo_dir / "blobs", token, endpoint)

        def one(f: WeightFile) -> None:
            hf_hub_download(snap.repo, f.path, revision=snap.commit, cache_dir=cache,
                            token=token, endpoint=endpoint)

        with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
            for fut in [pool.submit(one, f) for f in todo]:
                fut.result()
    except WeightsError:
        raise
    except Exception as exc:
        raise explain(exc, snap.repo, snap.commit, token) from None
    finally:
        stop.set()
        poller.join(timeout=5)


def _forget(snapshot_dir: Path, repo_dir: Path, f: WeightFile) -> None:
    """Drop a bad file: its snapshot link and the blob behind it."""
    link = snapshot_dir / f.path
    with contextlib.suppress(OSError):
        target = link.resolve()
        if target.is_file() and target.is_relative_to(repo_dir):
            target.unlink()
    with contextlib.suppress(FileNotFoundError):
        link.unlink()


def _poll(snap: Snapshot, repo_dir: Path, progress: Progress | None,
          stop: threading.Event) -> None:
    bar = progress.download(snap.total_bytes) if progress is not None else None
    while bar is not None:
        finished = stop.wait(0.5)
        done = 0
        for f in snap.files:
            p = repo_dir / "blobs" / f.blob
            with contextlib.suppress(OSError):  # a partial may vanish while we look
                done += f.size if p.is_file() else max(
                    (q.stat().st_size for q in p.parent.glob(f"{f.blob}*.incomplete")),
                    default=0)
        bar(min(done, snap.total_bytes))
        if finished:
            return


def drop_orphans(repo_dir: Path) -> None:
    """Partial downloads left by killed processes, once everything is complete."""
    freed = 0
    for p in stale_partials(repo_dir / "blobs", "*.incomplete"):
        with contextlib.suppress(OSError):
            freed += p.stat().st_size
            p.unlink()
    if freed:
        log.info("removed orphan partial downloads (%s)", fmt_bytes(freed))


def explain(exc: BaseException, model: str, revision: str | None,
            token: str | None) -> WeightsError:
    """A message that names the variable to fix; never the token, never the Hub's text."""
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    rev = revision or "main"
    if isinstance(exc, errors.GatedRepoError):
        if token is None:
            return WeightsError(f"MODEL={model} is gated: accept its licence on the Hub, then "
                                "set HF_TOKEN to a token of that account")
        return WeightsError(f"HF_TOKEN was rejected for the gated MODEL={model} (HTTP {status}):"
                            " the token's account has no access; accept the licence with it")
    if isinstance(exc, errors.RevisionNotFoundError):
        return WeightsError(f"MODEL_REVISION={rev} does not exist in {model}")
    if isinstance(exc, errors.RepositoryNotFoundError) or status in (401, 403):
        if token is None:
            return WeightsError(f"MODEL={model} was not found on the Hub: check the name, or set "
                                "HF_TOKEN if it is private or gated")
        return WeightsError(f"MODEL={model} was not found with the given HF_TOKEN (HTTP "
                            f"{status}): check the name, and that HF_TOKEN is valid and has access")
    if isinstance(exc, errors.OfflineModeIsEnabled | errors.LocalEntryNotFoundError):
        return WeightsError(f"no complete copy of {model}@{rev} in the cache and the Hub is off "
                            "limits (HF_HUB_OFFLINE=1)", unreachable=True)
    unreachable = (isinstance(exc, OSError) or type(exc).__name__ in NETWORK_ERRORS
                   or (status or 0) >= 500)
    return WeightsError(f"could not download {model}@{rev}: {type(exc).__name__}"
                        + (f" (HTTP {status})" if status else ""), unreachable=unreachable)
