"""PostgreSQL's connections for statements from plain threads (drivers/sql/threads.py):
synchronous psycopg connections, set up as the pooled ones are, whose waits on their socket
give up at the call's deadline (poll(2): not on Windows, where the loop takes every push)."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.abc import RV, PQGen
from psycopg.pq.abc import PGconn
from psycopg.rows import RowFactory, tuple_row
from psycopg.sql import Composed
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W

from conveyor.drivers.sql.adapter import Params
from conveyor.drivers.sql.deadline import no_answer
from conveyor.drivers.sql.postgres import prepared
from conveyor.drivers.sql.postgres.socket import ended_by_server
from conveyor.drivers.sql.postgres.target import Target, log
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.threads import ThreadConnections
from conveyor.errors import BackendUnavailableError, DriverError

__all__ = ["PostgresThreadConnections"]

#: poll's events that mean the socket has something to read: data, or its end.
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP if hasattr(select, "poll") else 0


class _Silent(Exception):
    """The server gave no answer before the call's deadline."""


class _ThreadConnection(psycopg.Connection[Any]):
    """psycopg's synchronous connection, whose waits on its socket end at `deadline`."""

    #: time.monotonic() past which a wait gives up (set before each call).
    deadline = 0.0

    def __init__(self, pgconn: PGconn, row_factory: RowFactory[Any] = tuple_row) -> None:
        super().__init__(pgconn, row_factory)
        self.prepared: set[bytes] = set()  # see conveyor.drivers.sql.postgres.prepared

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


class PostgresThreadConnections(ThreadConnections[_ThreadConnection]):
    """Up to `size` synchronous connections to `target` for calls from plain threads."""

    def __init__(self, target: Target, size: int) -> None:
        super().__init__(size)
        self._target = target

    @staticmethod
    def able() -> bool:
        """Whether this platform can (poll(2): not on Windows)."""
        return hasattr(select, "poll")

    def _connect(self) -> _ThreadConnection:
        try:
            conn = _ThreadConnection.connect(self._target.conninfo, **self._target.kwargs)
        except psycopg.Error as error:
            raise self._target.error(error, "connect") from None
        try:
            self._statement(conn, "set-up", self._target.setup(), None, self._target.timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, conn: _ThreadConnection, query: Query, params: Params) -> None:
        short = self._target.positional(query)
        if short is None:
            self._statement(conn, query.name, query.sql, params, self._target.timeout)
            return
        pgconn = conn.pgconn

        def work() -> int:
            run = prepared.run(pgconn, conn.prepared, short, params)
            return _wait_until(run, pgconn.socket, conn.deadline)

        self._within(conn, query.name, self._target.timeout, work)

    def _dropped(self, error: DriverError) -> bool:
        """The server ended or lost the connection: BackendUnavailableError from psycopg's
        error (a silent server's has none)."""
        return isinstance(error, BackendUnavailableError) and error.__cause__ is not None

    def _check(self, conn: _ThreadConnection) -> None:
        self._statement(conn, "check", "", None, self._target.timeout / 2)

    def _ended(self, conn: _ThreadConnection) -> bool:
        return ended_by_server(conn)

    def _close(self, conn: _ThreadConnection) -> None:
        conn.close()

    def _statement(
        self,
        conn: _ThreadConnection,
        what: str,
        sql: str | Composed,
        params: Params | None,
        seconds: float,
    ) -> None:
        """One statement under the deadline; on silence the connection is closed."""
        self._within(conn, what, seconds, lambda: conn.execute(sql, params))

    def _within(
        self, conn: _ThreadConnection, what: str, seconds: float, work: Callable[[], object]
    ) -> None:
        """`work` on `conn` under a deadline of `seconds`; on silence the connection is closed."""
        conn.deadline = time.monotonic() + seconds
        try:
            work()
        except _Silent:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()  # no goodbye on a connection that does not answer
            raise no_answer(f"PostgreSQL at {self._target.shown}", what, seconds, log) from None
        except psycopg.Error as error:
            raise self._target.error(error, what) from error
