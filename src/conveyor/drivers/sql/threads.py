"""Statements run from plain threads (the blocking facade's push, as Flask and Django call it)
on synchronous connections of the driver's own, so that the calling thread waits on its socket
instead of hopping to the event loop's thread and back: two thread wake-ups, which on a loaded
machine cost more than the statement's round trip.

`ThreadConnections` keeps at most `size` such connections, between calls (most recently used
first); a call that finds them all busy, or whose new connection the server refuses for its
connection limit, is declined, and the caller takes the event loop instead. A connection left
idle IDLE_CHECK seconds is checked before it is used, as the pooled ones are, one the server
ended while idle (where the dialect can tell: `_ended`) is replaced, and one whose call failed
is closed; a call on one the server dropped meanwhile (a restart) runs once more on a new one,
where the dialect can tell (`_dropped`). Each dialect says how to connect, run and check
(postgres/threads.py, mysql/threads.py), each call under the driver's timeout.
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Generic, TypeVar

from conveyor.drivers.limit import refused_for_limit
from conveyor.drivers.sql.adapter import Params
from conveyor.drivers.sql.deadline import IDLE_CHECK
from conveyor.drivers.sql.queries import Query
from conveyor.errors import DriverError

__all__ = ["ThreadConnections"]

C = TypeVar("C")


class ThreadConnections(abc.ABC, Generic[C]):
    """Up to `size` synchronous connections (of type C) for calls from plain threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._idle: list[tuple[C, float]] = []  # with when each was last used
        self._busy = 0
        self._lock = threading.Lock()
        self._opening = 0  # moved on by `close`: a connection from before is not kept

    def execute(self, query: Query, params: Params) -> bool:
        """Run `query` in this thread; False, running nothing, when `size` connections are
        busy already, or a new one is refused for the server's connection limit. DriverError
        (BackendUnavailableError for a lost or silent server) when it fails; its connection is
        then closed."""
        with self._lock:
            if self._busy >= self._size:
                return False
            self._busy += 1
            opening = self._opening
            taken = self._idle.pop() if self._idle else None
        conn: C | None = None
        kept = False
        try:
            try:
                conn = self._usable(taken)
            except DriverError as error:
                if refused_for_limit(str(error)):
                    # The server's connection limit: declined, so the call takes the event
                    # loop's pool, which waits for one of its connections to come free
                    # (before, the push failed though the driver held connections).
                    return False
                raise
            try:
                self._run(conn, query, params)
            except DriverError as error:
                if taken is None or not self._dropped(error):
                    raise
                # Dropped while idle (a server restart, a KILL): once more on a new one, as
                # the pooled connections' calls are; a push is stored once however often run.
                self._close(conn)
                conn = None
                conn = self._connect()
                self._run(conn, query, params)
            kept = True
        finally:
            with self._lock:
                self._busy -= 1
                if kept and conn is not None and opening == self._opening:
                    self._idle.append((conn, time.monotonic()))
                    conn = None
            if conn is not None:
                self._close(conn)
        return True

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their call ends."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._opening += 1
        for conn, _ in idle:
            self._close(conn)

    def _usable(self, taken: tuple[C, float] | None) -> C:
        """`taken`, unless the server ended it, checked first if it was idle a while; else a
        new connection."""
        if taken is not None:
            conn, used = taken
            if self._ended(conn):
                self._close(conn)
            elif time.monotonic() - used < IDLE_CHECK:
                return conn
            else:
                try:
                    self._check(conn)
                    return conn
                except DriverError:  # a new connection instead
                    self._close(conn)
        return self._connect()

    def _ended(self, conn: C) -> bool:
        """Whether the server ended idle `conn`, told without a round trip; a dialect that
        cannot tell so says False, and its connection is checked when idle IDLE_CHECK."""
        return False

    @abc.abstractmethod
    def _connect(self) -> C:
        """A new connection, set up; DriverError when it cannot be made."""

    @abc.abstractmethod
    def _run(self, conn: C, query: Query, params: Params) -> None:
        """`query` on `conn` under the timeout; DriverError when it fails."""

    def _dropped(self, error: DriverError) -> bool:
        """Whether `error`, from `_run` on a connection used before, says the server dropped
        it (not that it went silent), so the call may run again on a new one."""
        return False

    @abc.abstractmethod
    def _check(self, conn: C) -> None:
        """One round trip under half the timeout; DriverError when it fails."""

    @abc.abstractmethod
    def _close(self, conn: C) -> None:
        """Close `conn`, without waiting on a server that may be silent."""
