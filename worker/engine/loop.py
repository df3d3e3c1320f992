"""An event loop on a thread of its own, where the engine is built, used and shut down.

vLLM's AsyncLLM stays bound to the loop it first ran on, while platform SDKs (RunPod's job
loop, Modal's input loop, a test's loop) run their own. Adapters build the engine with
`EngineLoop.run(...)` and hand every engine call to that loop: `call` for one result,
`stream` for an async iterator, `on_loop` for a whole ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    MutableMapping,
)
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


class EngineLoop:
    """An event loop on a thread of its own: the engine is built, used and shut down there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="engine-loop",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the engine loop and wait for it (from outside that loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the engine loop from another loop; cancelling the caller cancels it."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self, timeout: float = 10) -> None:
        """Cancel what still runs there (watchers, a lingering ASGI call), then stop."""
        if self.loop.is_closed():
            return
        self.run(_cancel_others(), timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def stream(self, items: Callable[[], AsyncIterator[T]],
                     on_cancel: Callable[[], Coroutine[Any, Any, None]] | None = None,
                     ) -> AsyncGenerator[T, None]:
        """Iterate `items()` on the engine loop, from the caller's loop.

        Closing or cancelling this iterator cancels the engine-side task (so the
        engine request is aborted) and waits, briefly, for that clean-up. So does the end of
        the task that iterates it, when that task stops without closing it: RunPod's SDK
        cancels a job's task while it posts a chunk, outside this iterator, and leaves the
        iterator suspended until the garbage collector finds it.
        """
        here = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        closed = asyncio.Event()

        def send(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                here.call_soon_threadsafe(queue.put_nowait, (kind, value))

        async def produce() -> None:
            try:
                async for item in items():
                    send("item", item)
                send("end", None)
            except asyncio.CancelledError:
                if on_cancel is not None:
                    await on_cancel()
                raise
            except Exception as exc:
                send("error", exc)
            finally:
                with contextlib.suppress(RuntimeError):
                    here.call_soon_threadsafe(closed.set)

        future = asyncio.run_coroutine_threadsafe(produce(), self.loop)
        owner = asyncio.current_task()

        def abandoned(_: object) -> None:  # the consumer's task ended without closing us
            if not future.done():
                future.cancel()

        if owner is not None:
            owner.add_done_callback(abandoned)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "item":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            if owner is not None:
                owner.remove_done_callback(abandoned)
            if not future.done():
                future.cancel()  # cancels the task on the engine loop
                try:
                    await asyncio.wait_for(closed.wait(), timeout=10)
                except (TimeoutError, asyncio.CancelledError):
                    log.warning("engine-side clean-up of a cancelled job took over 10 s")


async def _cancel_others() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def on_loop(asgi: ASGIApp, engine: EngineLoop) -> ASGIApp:
    """`asgi`, run on the engine loop whichever loop the server calls it from."""
    async def bridged(scope: Message, receive: Receive, send: Send) -> None:
        server = asyncio.get_running_loop()
        if server is engine.loop:
            return await asgi(scope, receive, send)

        async def receive_there() -> Message:
            return await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(_awaited(receive()), server))

        async def send_there(message: Message) -> None:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(_awaited(send(message)), server))

        await engine.call(_awaited(asgi(scope, receive_there, send_there)))
    return bridged
