"""The caller's own synchronous database connection, lent to a driver together with the thread
that owns it: what the blocking facade passes as `connection=` when code without an event loop
(a Django or Flask view) pushes inside its own transaction.

The facade runs the push on its event loop, as any other call, while the calling thread waits.
It waits by serving `LentConnection.run`: each statement a driver sends through it runs in the
calling thread, on the caller's connection, and its result goes back to the loop. So the
caller's connection is only ever used by the thread that owns it, which never runs two
statements at once, and the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from conveyor.errors import BackendUnavailableError

__all__ = ["LentConnection", "Runner", "hand_back", "lost"]

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
