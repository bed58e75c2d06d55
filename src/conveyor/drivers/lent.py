"""The caller's own synchronous database connection, lent to a driver together with the thread
that owns it: what the blocking facade passes as `connection=` when code without an event loop
(a Django or Flask view) pushes inside its own transaction.

The facade runs the push on its event loop, as any other call, while the calling thread waits.
It waits by serving `LentConnection.run` (its `Lender`): each statement a driver sends through
it runs in the calling thread, on the caller's connection, and its result goes back to the
loop. So the caller's connection is only ever used by the thread that owns it, which never
runs two statements at once, and the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from conveyor.errors import BackendUnavailableError

__all__ = ["Lender", "LentConnection", "Runner", "hand_back", "lost"]

T = TypeVar("T")

#: Runs a function in the lending thread and gives back its result (or raises its error).
Runner = Callable[[Callable[[], Any]], Awaitable[Any]]


class LentConnection:
    """A caller's connection (`connection`) and the way to run a function on its thread."""

    __slots__ = ("_runner", "connection")

    def __init__(self, connection: object, runner: Runner) -> None:
        self.connection = connection
        self._runner = runner

    async def run(self, function: Callable[[], T]) -> T:
        """`function()` in the thread that lent the connection, which waits for this call."""
        return cast(T, await self._runner(function))


def lost(detail: str) -> BackendUnavailableError:
    """The error for a caller's own connection (connection=) found lost during a push (killed,
    its server restarted): the caller's to open again, with the transaction that went with it;
    no pool of the driver's, and no retry, is involved. `detail`: the client's words."""
    return BackendUnavailableError(
        f"connection= was lost during the push ({detail}): the server closed it or the network"
        " dropped it, and your transaction on it is gone: open a new connection and run your"
        " transaction again"
    )


def hand_back(
    loop: asyncio.AbstractEventLoop,
    waiter: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    """From the thread that ran a call for `waiter` (a future of `loop`): its outcome, handed
    over on the loop unless the waiter was cancelled meanwhile; nothing once the loop has
    closed (nobody waits any more). Used by the lending thread, and by SQLite's own."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, waiter, result, error)


def _settle(waiter: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if waiter.cancelled():
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(result)


#: A function lent to the waiting thread: it, the loop awaiting it and the future it awaits.
_Lent = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Lender:
    """The calling thread, lent to the call it waits for: the functions the call's coroutine
    hands to `run` (on the loop's thread) run here, one at a time, until the call is done."""

    __slots__ = ("_gone", "_here", "_lock", "_work")

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[_Lent | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._gone = False
        self._here = False

    def here(self) -> None:
        """The call's loop runs in the lending thread itself (no thread could start for it, at
        the interpreter's exit): `run` calls the function at once instead of handing it over."""
        self._here = True

    async def run(self, function: Callable[[], Any]) -> Any:
        """`function()` in the lending thread; its result, or its error raised here."""
        if self._here:
            return function()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._gone:
                raise RuntimeError("the thread that lent its connection stopped waiting")
            self._work.put((function, loop, waiter))
        return await waiter

    def done(self) -> None:
        """The call is done: `serve` returns."""
        self._work.put(None)

    def serve(self) -> None:
        """Run the functions handed to `run` until the call is done. Interrupted (Ctrl-C), it
        fails what waits and what comes later, so the call ends rather than wait for ever."""
        try:
            while (lent := self._work.get()) is not None:
                _run_lent(*lent)
        except BaseException:
            with self._lock:
                self._gone = True
            while not self._work.empty():
                if (lent := self._work.get_nowait()) is not None:
                    lent[1].call_soon_threadsafe(lent[2].cancel)
            raise


def _run_lent(
    function: Callable[[], Any], loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any]
) -> None:
    try:
        result, error = function(), None
    except Exception as raised:  # handed to the call, as an executor would
        result, error = None, raised
    except BaseException:  # Ctrl-C: this thread's to raise; handed over, it would stop the loop
        loop.call_soon_threadsafe(waiter.cancel)
        raise
    hand_back(loop, waiter, result, error)
