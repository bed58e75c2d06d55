"""Deadlines for the SQL dialects' calls.

A connection can go silent without a word: a NAT gateway or firewall that drops its state, a
server that failed over, a cable pulled. Nothing is then ever read from it, nor does any error
arrive, so a call that waits for its answer would wait forever. Each dialect therefore runs
its work on a connection under a `Deadline`: once it passes, the connection is broken on
purpose (its socket shut down or aborted), so whatever awaits it fails at once and the
connection is thrown away, never pooled again.

Breaking the connection, rather than cancelling the task that waits on it, matters: a call is
shielded from its caller's cancellation so that an ack in flight is never half-done, and the
client libraries do slow things when cancelled mid-statement (psycopg sends the server a
cancel request and waits for its answer; asyncmy sends QUIT and waits for the socket to
drain), which a silent server never gives.

TCP keepalives (conveyor.drivers.keepalive) meanwhile find an idle connection that went silent.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from types import TracebackType

from conveyor.errors import BackendUnavailableError

__all__ = [
    "IDLE_CHECK",
    "LOCK_WAIT",
    "MIGRATION_TIMEOUT",
    "TIMEOUT",
    "Deadline",
    "no_answer",
    "whole_seconds",
]

#: Seconds a call may take on its connection (and, before that, to get one), unless the URL's
#: `timeout=` (or the driver's `timeout` keyword) says otherwise.
TIMEOUT = 10.0

#: Seconds a migration may take: far longer than any call, as adding an index to a large
#: table may take minutes; TCP keepalives still find a server that went silent meanwhile.
MIGRATION_TIMEOUT = 3600.0

#: The share of a call's timeout one statement waits for a row lock before the server gives it
#: up (PostgreSQL's lock_timeout, MySQL's innodb_lock_wait_timeout): less than the whole, so
#: that a wait on another transaction (one that pushed the same unique key with connection=
#: and has not committed) ends in an error saying so, rather than at the deadline, as a server
#: that gave no answer, its connection discarded.
LOCK_WAIT = 0.8

#: A pooled connection left idle this many seconds is checked (one round trip, under half
#: the call's timeout) before a call gets it, so one that died while idle costs no failure.
IDLE_CHECK = 5.0


class Deadline:
    """A limit on one call's work on one connection: when `seconds` have passed, `kill` breaks
    the connection (it must not block), and `expired` says so. Use it as a context manager
    around the work; leaving it disarms it."""

    def __init__(self, seconds: float, kill: Callable[[], None]) -> None:
        self.seconds = seconds
        self.expired = False
        self._kill = kill
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(seconds, self._expire)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()

    def extend(self, seconds: float) -> None:
        """Allow at least `seconds` from now (a migration), unless already expired."""
        if self.expired or self._handle.when() - self._loop.time() >= seconds:
            return
        self._handle.cancel()
        self.seconds = seconds
        self._handle = self._loop.call_later(seconds, self._expire)

    def error(self, server: str, what: str, log: logging.Logger) -> BackendUnavailableError:
        """The error for the call it limited, once expired, logged as a warning. `server` names
        it for the user, as in "PostgreSQL at postgresql://app@db/app"."""
        return no_answer(server, what, self.seconds, log)

    def _expire(self) -> None:
        self.expired = True
        self._kill()


def no_answer(
    server: str, what: str, seconds: float, log: logging.Logger
) -> BackendUnavailableError:
    """The error for a call `server` did not answer within `seconds`, whose connection was
    discarded, logged as a warning."""
    log.warning("%s gave no answer to %s within %gs: connection discarded", server, what, seconds)
    return BackendUnavailableError(
        f"{server} gave no answer to {what} within {seconds:g}s, so its connection was"
        " discarded: check the server and the network; workers retry with backoff (raise"
        " the URL's timeout= if statements are merely slow)"
    )


def whole_seconds(seconds: float) -> int:
    """`seconds` rounded up to a whole number, at least 1: for server settings in seconds."""
    return max(1, math.ceil(seconds))
