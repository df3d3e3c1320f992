"""How a RunPod job's stream is yielded: SSE text, and groups of events per yield.

Each yield costs the worker an HTTP POST to RunPod, so a stream goes out in
groups. Two policies:

- by time (the default): whatever arrived while the last group was being sent,
  at most one group per `flush_interval`; a slow stream goes out token by token,
  a fast one in bundles.
- by count, worker-vllm's batching knobs (`max_batch_size`, `min_batch_size`,
  `batch_size_growth_factor` in the job input, or the `DEFAULT_BATCH_SIZE`,
  `DEFAULT_MIN_BATCH_SIZE`, `DEFAULT_BATCH_SIZE_GROWTH_FACTOR` variables): each
  group holds `size` events (the last one what is left); `size` starts at the
  minimum and is multiplied by the growth factor after every group, up to the
  maximum. With a growth factor of 1 (or a minimum not below the maximum) every
  group holds the maximum. Any knob set, in the job or the environment, picks
  this policy; an unset one takes worker-vllm's default (50, 1, 3).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from worker.openai import wire
from worker.openai.errors import InvalidRequest, openai_error

T = TypeVar("T")

SSE_DONE = "data: [DONE]\n\n"
FLUSH_INTERVAL = 0.05  # seconds between two stream POSTs of one job, at most
MAX_GROUP = 512  # events per stream POST, at most (RunPod caps a streamed chunk at 1 MB)
MAX_YIELD_BYTES = 512 * 1024  # a batch's output lines are yielded in groups of about this size
# worker-vllm's defaults for a knob left unset once another one is set
DEFAULT_MAX, DEFAULT_MIN, DEFAULT_GROWTH = 50, 1, 3.0
MAX_GROWTH = 100.0
KNOBS = ("max_batch_size", "min_batch_size", "batch_size_growth_factor")


@dataclass(frozen=True)
class BatchKnobs:
    """worker-vllm's stream batching; all None = group by time (see the module doc)."""

    max_batch_size: int | None = None
    min_batch_size: int | None = None
    batch_size_growth_factor: float | None = None

    @property
    def by_count(self) -> bool:
        return any(v is not None for v in (self.max_batch_size, self.min_batch_size,
                                           self.batch_size_growth_factor))

    def over(self, defaults: BatchKnobs) -> BatchKnobs:
        """These knobs, each unset one taken from `defaults` (the environment's)."""
        return BatchKnobs(
            self.max_batch_size if self.max_batch_size is not None else defaults.max_batch_size,
            self.min_batch_size if self.min_batch_size is not None else defaults.min_batch_size,
            self.batch_size_growth_factor if self.batch_size_growth_factor is not None
            else defaults.batch_size_growth_factor)

    def sizes(self) -> Iterator[int]:
        """The number of events in each group, in order (worker-vllm's rule)."""
        top = self.max_batch_size or DEFAULT_MAX
        low = self.min_batch_size or DEFAULT_MIN
        growth = self.batch_size_growth_factor or DEFAULT_GROWTH
        dynamic = growth > 1 and top > low
        size = float(low if dynamic else top)
        while True:
            yield max(1, int(size))
            if dynamic:
                size = min(size * growth, top)


BY_TIME = BatchKnobs()  # no knob set: group by time


def knobs_of(job_input: Mapping[str, Any]) -> BatchKnobs:
    """The batching knobs a job input sets; a bad value fails the job naming its key."""
    values: list[Any] = []
    for key in KNOBS:
        v = job_input.get(key)
        growth = key == "batch_size_growth_factor"
        ok = v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                           and (1 <= v <= MAX_GROWTH if growth
                                else isinstance(v, int) and 1 <= v <= MAX_GROUP))
        if not ok:
            limits = f"a number from 1 to {MAX_GROWTH:g}" if growth \
                else f"an integer from 1 to {MAX_GROUP}"
            raise InvalidRequest(f"{key} must be {limits}", param=key)
        values.append(float(v) if growth and v is not None else v)
    return BatchKnobs(*values)


# ----------------------------------------------------------------------------- encoders


def dump(model: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True) if isinstance(model, BaseModel) \
        else model


def sse_event(payload: BaseModel | dict[str, Any]) -> str:
    text = (payload.model_dump_json(exclude_none=True) if isinstance(payload, BaseModel)
            else wire.encode(payload).decode())
    return f"data: {text}\n\n"


async def sse_events(chunks: AsyncIterator[Any]) -> AsyncIterator[str]:
    """One SSE event per chunk, then [DONE]; an error becomes an error event first."""
    try:
        async for chunk in chunks:
            yield sse_event(chunk)
    except Exception as exc:  # the stream has started: report in-band, as OpenAI does
        yield sse_event({"error": openai_error(exc)[1]})
    yield SSE_DONE


def by_size(items: list[Any], limit: int) -> list[list[Any]]:
    """Consecutive groups of items whose JSON stays under `limit` bytes (one item at least)."""
    groups: list[list[Any]] = [[]]
    size = 0
    for item in items:
        n = len(json.dumps(item))
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += n
    return groups


# ----------------------------------------------------------------------------- grouping


async def coalesce(source: AsyncIterator[T], *, interval: float = FLUSH_INTERVAL,
                   max_items: int = MAX_GROUP,
                   knobs: BatchKnobs | None = None) -> AsyncGenerator[list[T], None]:
    """Group items: by time (at most one flush per `interval` seconds; the first item goes
    out at once), or by count when `knobs` sets any (see the module doc).

    The source runs in its own task, so it keeps producing while a group is sent.
    Closing this generator cancels the source (and so its engine requests) and waits
    for its clean-up.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    sizes = knobs.sizes() if knobs is not None and knobs.by_count else None

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait((True, item))
        except Exception as exc:
            queue.put_nowait((False, exc))
        else:
            queue.put_nowait((False, None))

    task = asyncio.create_task(pump())
    last_flush = float("-inf")
    try:
        end: tuple[bool, Any] | None = None
        while end is None:
            group: list[T] = []
            if sizes is not None:  # by count: wait for the group to fill (or the end)
                want = min(next(sizes), max_items)
                while end is None and len(group) < want:
                    ok, item = await queue.get()
                    if ok:
                        group.append(item)
                    else:
                        end = (ok, item)
            else:
                ok, item = await queue.get()
                if ok:
                    group.append(item)
                    wait = last_flush + interval - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    end = (ok, item)
                while end is None and len(group) < max_items and not queue.empty():
                    ok, item = queue.get_nowait()
                    if ok:
                        group.append(item)
                    else:
                        end = (ok, item)
            if group:
                yield group
                last_flush = loop.time()
        if end[1] is not None:
            raise end[1]
    finally:
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
