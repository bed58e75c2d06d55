"""Work on a server connection that its caller's cancellation cannot cut short.

The PostgreSQL and MySQL adapters run each call shielded: a caller cancelled while its ack is
on the wire gets CancelledError at once, and the ack still runs to its end (the client
libraries, cancelled mid-statement, would cancel on the server and wait for it, which a silent
server never answers; conveyor.drivers.sql.deadline bounds the work instead).

`shielded` is `await asyncio.shield(asyncio.ensure_future(work))` in fewer steps. The work runs
in its caller for as long as it waits only on `SocketWait` futures: those of a connection
whose own wait never gives up on a cancelled future but waits on (postgres/socket.py). The
caller's task then awaits the socket itself, as it would with the bare client: no task, no
loop turn more than the client's own. Only when the caller is cancelled does the work move to
a task of its own, from where it stopped, and the caller gets CancelledError at once.

Work that waits on anything else (MySQL's streams, a pool's queue of callers when every
connection is busy) goes on in a task from where it stopped, as soon as it waits: the task then
hands its outcome straight to the one future its caller awaits (where `asyncio.shield` would
chain the task's own future to an outer one through done callbacks, another loop turn later).
A single push pays this hop once, so each turn matters (docs/drivers.md#speed).

What runs in the caller must not start a timeout: `asyncio.timeout`, and from Python 3.12 on
`asyncio.wait_for` (a timeout itself now), belong to the task they start in, and one started
in the caller and then moved to a task would cancel the caller when it fires, not the work:
the caller got CancelledError and the work waited on. Work about to start one (psycopg_pool's
wait for a free connection, asyncmy's connect) first awaits `to_task`.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["SocketWait", "resumed", "shielded", "to_task"]

T = TypeVar("T")

#: The tasks under way: the event loop holds its tasks only weakly.
_running: set[asyncio.Task[None]] = set()


class SocketWait(asyncio.Future[None]):
    """A future that a connection's socket wait awaits, and that it waits again on if it is
    cancelled (the wait ends only with the socket's readiness or its loss). So `shielded` lets
    its caller's task await it directly: a cancellation that hits it cuts nothing short."""


async def shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` and return its outcome: in the caller while it waits on SocketWait futures
    only, else (from where it stopped) in a task of its own. Cancelling the caller cancels only
    its wait: `work` runs on, in a task, and its outcome (an error too) is then dropped."""
    return await _inline(work)


async def to_task() -> None:
    """Go on in a task of the work's own now, where a timeout then started belongs (see the
    module docstring): one loop turn."""
    await asyncio.sleep(0)  # a bare yield, no SocketWait: `_inline` hands the rest to a task


@types.coroutine
def _inline(work: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    sent: Any = None
    while True:
        try:
            waiting_on = work.send(sent)
        except StopIteration as finished:
            result: T = finished.value
            return result
        if not isinstance(waiting_on, SocketWait):
            return (yield from _in_task(work, waiting_on).__await__())
        try:
            sent = yield waiting_on
        except BaseException:
            # Cancelled (the loop's Task.cancel() has cancelled `waiting_on` too, which the
            # socket wait shrugs off): the work goes on alone, waiting on `waiting_on` again.
            waiting_on._asyncio_future_blocking = True  # as when the work first yielded it
            _start(_dropped(resumed(work, waiting_on)))
            raise


async def _in_task(work: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    """The rest of `work`, suspended on `waiting_on`, in a task; its outcome handed over."""
    waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    _start(_hand_over(resumed(work, waiting_on), waiter))
    return await waiter


def _start(step: Coroutine[Any, Any, None]) -> None:
    _running.add(asyncio.get_running_loop().create_task(step))


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


async def _dropped(work: Awaitable[Any]) -> None:
    """Run the rest of work whose caller was cancelled; its outcome, an error too, is dropped
    (the caller was told CancelledError)."""
    try:
        await work
    except (Exception, asyncio.CancelledError):
        pass
    finally:
        _running.discard(asyncio.current_task())
