"""The thread an SQLite connection lives on: calls from the event loop run there one at a time,
in the order made, and each result comes back to the loop that asked.

It is what `loop.run_in_executor` on a one-worker ThreadPoolExecutor, under `asyncio.shield`,
did, in fewer steps: the caller awaits one future that the thread settles itself (through
`call_soon_threadsafe`), instead of a concurrent Future, an asyncio Future chained to it and
the shield's outer future, each handing the result on in a loop turn of its own. A single
push spends most of its time in this hop and the commit's sync (docs/drivers.md#speed).

Shielded as before: a caller cancelled while its call waits or runs gets CancelledError at
once, and the call still runs to its end on the thread (a push or an ack is never half done;
its outcome is dropped). The thread is a daemon, so a driver never closed cannot hold up the
interpreter's exit; one dropped unclosed ends its thread when collected.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.drivers.lent import hand_back
from conveyor.drivers.sql.sqlite.forking import GUARD

__all__ = ["DatabaseThread"]

T = TypeVar("T")

#: One call: the function, its arguments, the loop that awaits it and the future it awaits.
_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DatabaseThread:
    """A daemon thread running functions handed to it, in order."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        #: No thread could start: each call runs in its caller, on the event loop's thread.
        self._here = False
        try:
            threading.Thread(target=_serve, args=(self._calls,), name=name, daemon=True).start()
        except RuntimeError:  # Python 3.12.0-3.12.1: none starts in atexit (the first
            self._here = True  # push from an atexit handler), and the loop may wait meanwhile
        # Not at interpreter exit: an atexit close (the blocking facade's) may still need it.
        weakref.finalize(self, self._calls.put, None).atexit = False

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the thread, after every call made before it."""
        if self._here:
            with GUARD.statement():
                return function(*args)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._calls.put((function, args, loop, waiter))
        return await waiter

    def stop(self) -> None:
        """End the thread once the calls made so far have run."""
        self._calls.put(None)


def _serve(calls: queue.SimpleQueue[_Call | None]) -> None:
    while (call := calls.get()) is not None:
        _run(*call)
        del call  # nothing of a finished call stays referenced while the next one waits


def _run(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    loop: asyncio.AbstractEventLoop,
    waiter: asyncio.Future[Any],
) -> None:
    try:
        with GUARD.statement():  # no fork in the middle of it (forking.py)
            result, error = function(*args), None
    except BaseException as raised:  # handed to the caller, as an executor would
        result, error = None, raised
    hand_back(loop, waiter, result, error)
