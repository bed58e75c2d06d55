"""Work on a server connection that its caller's cancellation cannot cut short.

The PostgreSQL and MySQL adapters run each call in a task of its own: a caller cancelled while
its ack is on the wire gets CancelledError at once, and the ack still runs to its end (the
client libraries, cancelled mid-statement, would cancel on the server and wait for it, which a
silent server never answers; conveyor.drivers.sql.deadline bounds the work instead).

`shielded` is `await asyncio.shield(asyncio.ensure_future(work))` in fewer steps: the task
hands its outcome straight to the one future its caller awaits, where the shield chains the
task's own future to an outer one through done callbacks, a loop turn later. A single push
pays this hop once, so the turn matters (docs/drivers.md#speed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["shielded"]

T = TypeVar("T")

#: The tasks under way: the event loop holds its tasks only weakly.
_running: set[asyncio.Task[None]] = set()


async def shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in a task of its own and return its outcome. Cancelling the caller cancels
    only its wait: `work` runs on, and its outcome (an error too) is then dropped."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    _running.add(loop.create_task(_hand_over(work, waiter)))
    return await waiter


async def _hand_over(work: Coroutine[Any, Any, T], waiter: asyncio.Future[T]) -> None:
    try:
        result = await work
    except BaseException as error:
        if not waiter.done():
            if isinstance(error, asyncio.CancelledError):  # the task itself (loop shut down)
                waiter.cancel()
            else:
                waiter.set_exception(error)
        if not isinstance(error, Exception | asyncio.CancelledError):
            raise  # KeyboardInterrupt, SystemExit
    else:
        if not waiter.done():
            waiter.set_result(result)
    finally:
        _running.discard(asyncio.current_task())
