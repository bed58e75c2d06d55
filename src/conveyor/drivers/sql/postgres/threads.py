"""Statements run from plain threads (the blocking facade's push, as Flask and Django call it)
on synchronous psycopg connections of their own, so that the calling thread waits on its
socket instead of hopping to the event loop's thread and back: two thread wake-ups, which on
a loaded machine cost more than the statement's round trip.

At most `size` such connections at once, kept between calls (most recently used first); a
call that finds them all busy is declined, and the caller takes the event loop instead. Each
call has the pool's deadline: its wait on the socket gives up at `timeout` and the connection
is discarded, and one left idle IDLE_CHECK seconds is checked first (one round trip, under
half the timeout), as the pooled connections are.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from typing import Any

import psycopg
from psycopg.abc import RV, PQGen
from psycopg.sql import Composed
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W

from conveyor.drivers.sql.adapter import Params
from conveyor.drivers.sql.deadline import IDLE_CHECK, no_answer
from conveyor.drivers.sql.postgres.target import Target, log
from conveyor.drivers.sql.queries import Query
from conveyor.errors import DriverError

__all__ = ["ThreadConnections"]

#: poll's events that mean the socket has something to read: data, or its end.
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP if hasattr(select, "poll") else 0


class _Silent(Exception):
    """The server gave no answer before the call's deadline."""


class _ThreadConnection(psycopg.Connection[Any]):
    """psycopg's synchronous connection, whose waits on its socket end at `deadline`."""

    #: time.monotonic() past which a wait gives up (set before each call).
    deadline = 0.0

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        return _wait_until(gen, self.pgconn.socket, self.deadline)


def _wait_until(gen: PQGen[RV], fileno: int, deadline: float) -> RV:
    """Drive `gen` (psycopg's statement generator) to its end, polling `fileno` whenever it
    asks to; _Silent once `deadline` has passed."""
    try:
        state = next(gen)
        poller = select.poll()
        while True:
            poller.register(fileno, (select.POLLIN if state & WAIT_R else 0) | (
                select.POLLOUT if state & WAIT_W else 0
            ))  # fmt: skip
            left = deadline - time.monotonic()
            events = poller.poll(max(0.0, left) * 1000) if left > 0 else []
            if not events:
                raise _Silent
            ready = 0
            for _, event in events:
                ready |= (READY_R if event & _READABLE else 0) | (
                    READY_W if event & select.POLLOUT else 0
                )
            state = gen.send(ready)
    except StopIteration as finished:
        result: RV = finished.value
        return result


class ThreadConnections:
    """Up to `size` synchronous connections to `target` for calls from plain threads."""

    def __init__(self, target: Target, size: int) -> None:
        self._target = target
        self._size = size
        self._idle: list[tuple[_ThreadConnection, float]] = []  # with when each was last used
        self._busy = 0
        self._lock = threading.Lock()
        self._opening = 0  # moved on by `close`: a connection from before is not kept

    @staticmethod
    def able() -> bool:
        """Whether this platform can (poll(2): not on Windows)."""
        return hasattr(select, "poll")

    def execute(self, query: Query, params: Params) -> bool:
        """Run `query` in this thread; False, running nothing, when `size` connections are
        busy already."""
        with self._lock:
            if self._busy >= self._size:
                return False
            self._busy += 1
            opening = self._opening
            taken = self._idle.pop() if self._idle else None
        kept = False
        conn: _ThreadConnection | None = None
        try:
            conn = self._usable(taken)
            self._run(conn, query.name, query.sql, params)
            kept = True
        finally:
            with self._lock:
                self._busy -= 1
                if kept and conn is not None and opening == self._opening:
                    self._idle.append((conn, time.monotonic()))
                    conn = None
            if conn is not None:
                conn.close()
        return True

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their call ends."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._opening += 1
        for conn, _ in idle:
            conn.close()

    def _usable(self, taken: tuple[_ThreadConnection, float] | None) -> _ThreadConnection:
        """`taken`, checked first if it was idle a while, else a new connection."""
        if taken is not None:
            conn, used = taken
            if time.monotonic() - used < IDLE_CHECK:
                return conn
            try:
                self._run(conn, "check", "", None, self._target.timeout / 2)
                return conn
            except DriverError:  # a new connection instead
                conn.close()
        conn = self._connect()
        try:
            self._run(conn, "set-up", self._target.setup(), None)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> _ThreadConnection:
        try:
            return _ThreadConnection.connect(self._target.conninfo, **self._target.kwargs)
        except psycopg.Error as error:
            raise self._target.error(error, "connect") from None

    def _run(
        self,
        conn: _ThreadConnection,
        what: str,
        sql: str | Composed,
        params: Params | None,
        timeout: float | None = None,
    ) -> None:
        """One statement under the deadline; on silence the connection is closed."""
        seconds = self._target.timeout if timeout is None else timeout
        conn.deadline = time.monotonic() + seconds
        try:
            conn.execute(sql, params)
        except _Silent:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()  # no goodbye on a connection that does not answer
            raise no_answer(f"PostgreSQL at {self._target.shown}", what, seconds, log) from None
        except psycopg.Error as error:
            raise self._target.error(error, what) from error
