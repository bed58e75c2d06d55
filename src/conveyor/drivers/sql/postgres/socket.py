"""The pooled connections' own wait on their socket, which a cancellation cannot cut short.

psycopg runs every statement as a generator of socket waits, and its connection's `wait`
drives it: on a cancellation it sends the server a cancel request and waits for that, which
a silent server never answers. A pooled connection here waits itself instead: on the socket
only, on a `SocketWait` future, and on one cancelled it waits again (the statement ends with
its answer or with its connection's loss; the call's Deadline breaks a silent connection). So
the shield around each call (conveyor.drivers.sql.shielded) lets its caller await the socket
directly, with no task and no loop turn more than psycopg's own wait, and moves the work into
a task only when the caller is cancelled. It also sets no timer per wait (psycopg's own wakes
every 0.1 s to let Ctrl-C through; the statement's Deadline already bounds it).

`ended_by_server` tells, without a round trip, an idle connection that the server ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.abc import RV, PQGen
from psycopg.pq.abc import PGconn
from psycopg.rows import AsyncRowFactory, tuple_row
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W

from conveyor.drivers.sql.shielded import SocketWait
from conveyor.drivers.unpatched import unpatched

__all__ = ["PooledConnection", "ended_by_server", "wait_on_socket"]


class PooledConnection(psycopg.AsyncConnection[Any]):
    """The pool's connections: psycopg's, but waiting on their socket with `wait_on_socket`,
    and knowing which statements conveyor.drivers.sql.postgres.prepared prepared on them."""

    def __init__(self, pgconn: PGconn, row_factory: AsyncRowFactory[Any] = tuple_row) -> None:
        super().__init__(pgconn, row_factory)
        self.prepared: set[bytes] = set()

    async def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None:  # psycopg's own timed waits (none of conveyor's statements)
            return await super().wait(gen, interval, timeout)
        return await wait_on_socket(gen, self.pgconn.socket)


async def wait_on_socket(gen: PQGen[RV], fileno: int) -> RV:
    """Drive `gen` (psycopg's statement generator) to its end, waiting on `fileno` whenever it
    asks to, through SocketWait futures that, cancelled, are waited on again."""
    try:
        state = next(gen)
    except StopIteration as finished:
        done: RV = finished.value
        return done
    loop = asyncio.get_running_loop()
    ready = 0
    waiter: SocketWait | None = None

    def wakeup(event: int) -> None:
        nonlocal ready
        ready |= event
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    try:
        while True:
            reading, writing = state & WAIT_R, state & WAIT_W
            ready = 0
            if reading:
                loop.add_reader(fileno, wakeup, READY_R)
            if writing:
                loop.add_writer(fileno, wakeup, READY_W)
            try:
                while not ready:
                    waiter = SocketWait(loop=loop)
                    try:  # noqa: SIM105 (a with-block costs more, at every wait)
                        await waiter
                    except asyncio.CancelledError:
                        pass  # never cut short: wait on (see the module docstring)
                    waiter = None
            finally:
                if reading:
                    loop.remove_reader(fileno)
                if writing:
                    loop.remove_writer(fileno)
            state = gen.send(ready)
    except OSError as error:
        raise psycopg.OperationalError("connection socket closed") from error
    except StopIteration as finished:
        result: RV = finished.value
        return result


def ended_by_server(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether the server ended idle `conn`: its socket has something to read, though no
    statement runs (conveyor's connections never LISTEN in the pool), which is the server's
    last word (pg_terminate_backend's "terminating connection", idle_session_timeout's, a
    shutdown's) and its end. One poll(2) of the socket, no round trip: a connection the server
    ended between calls is then replaced before a call fails on it."""
    try:
        fileno = conn.pgconn.socket
    except psycopg.Error:
        return True  # closed already
    poll = unpatched("select", "poll")  # never gevent's or eventlet's: this must not wait
    if poll is not None:
        poller = poll()
        poller.register(fileno, unpatched("select", "POLLIN"))
        return bool(poller.poll(0))
    readable, _, _ = unpatched("select", "select")([fileno], [], [], 0)  # Windows: sockets only
    return bool(readable)
