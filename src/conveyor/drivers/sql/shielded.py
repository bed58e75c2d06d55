"""Work on a server connection that its caller's cancellation cannot cut short.

The PostgreSQL and MySQL adapters run each call in a task of its own: a caller cancelled while
its ack is on the wire gets CancelledError at once, and the ack still runs to its end (the
client libraries, cancelled mid-statement, would cancel on the server and wait for it, which a
silent server never answers; conveyor.drivers.sql.deadline bounds the work instead).

`shielded` is `await asyncio.shield(asyncio.ensure_future(work))` in fewer steps. The work's
first step runs at once in the caller (nothing can cancel it there: it does not yield), so a
call that never waits needs no task at all, and one that does (a statement sent, its answer
awaited) goes on in a task from where it stopped, instead of a task that would first wait a
loop turn to start. The task then hands its outcome straight to the one future its caller
awaits, where the shield chains the task's own future to an outer one through done
callbacks, another loop turn later. A single push pays this hop once, so each turn matters
(docs/drivers.md#speed).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["resumed", "shielded"]

T = TypeVar("T")

#: The tasks under way: the event loop holds its tasks only weakly.
_running: set[asyncio.Task[None]] = set()


async def shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` (its first step here, the rest, if it waits, in a task of its own) and return
    its outcome. Cancelling the caller cancels only its wait: `work` runs on, and its outcome
    (an error too) is then dropped."""
    try:
        waiting_on = work.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    _running.add(loop.create_task(_hand_over(resumed(work, waiting_on), waiter)))
    return await waiter


@types.coroutine
def resumed(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Go on with `coroutine`, started by hand and suspended on `waiting_on` (what it yielded
    to the event loop), as `yield from` would: what the task sends or throws in is passed on.
    So a coroutine's first step can run in its caller and the rest in a task of its own."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as error:
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration as done:
                result: T = done.value
                return result
        else:
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration as done:
                result = done.value
                return result


async def _hand_over(work: Awaitable[T], waiter: asyncio.Future[T]) -> None:
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
