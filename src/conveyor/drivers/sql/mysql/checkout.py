"""Taking a usable connection out of the MySQL pool, within the call's timeout.

asyncmy's pool hands out any idle connection whose socket is still open, and its
connect_timeout covers the TCP connect only: a server (or a network path) that went silent
would hold a call forever, in the handshake of a new connection or on an idle one that no
longer answers. So a connection is checked out here:

- within the target's `timeout`, else BackendUnavailableError;
- when new: its socket gets TCP keepalives and TCP_USER_TIMEOUT (conveyor.drivers.keepalive),
  its session an innodb_lock_wait_timeout within the timeout (`Target.lock_wait`), and on
  MariaDB an idle_transaction_timeout, so that a transaction cut off half way (our side gave
  up on it) gives its row locks back within `timeout`, not hours later;
- when idle for IDLE_CHECK seconds: pinged first, under half the timeout;
- when last used before another connection went silent (`suspect_idle`): discarded, as it
  most likely went silent too, and each would otherwise cost a call a whole timeout.

A connection that fails a check is closed at once, with no goodbye to the server (asyncmy's
`ensure_closed` sends QUIT and waits for the socket to drain, which a dead link never does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import sys
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from asyncmy.connection import Connection
from asyncmy.errors import MySQLError
from asyncmy.pool import Pool

from conveyor.drivers import keepalive
from conveyor.drivers.limit import PAUSE_FIRST, PAUSE_MOST, refused_for_limit
from conveyor.drivers.sql.deadline import IDLE_CHECK, Deadline, whole_seconds
from conveyor.drivers.sql.mysql.socket import wait_on_socket
from conveyor.drivers.sql.shielded import resumed
from conveyor.errors import BackendUnavailableError

if TYPE_CHECKING:
    from conveyor.drivers.sql.mysql.target import Target

__all__ = ["Checkout", "abort"]

log = logging.getLogger("conveyor.mysql")

#: Seconds between cancellations of a checkout given up on (see _cancel_until_done).
CANCEL_AGAIN = 0.5


class Checkout:
    """Connections out of one pool for `target`, checked as the module docstring says."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._prepared: weakref.WeakSet[Connection] = weakref.WeakSet()
        #: Idle connections last used before this (the event loop's clock) are discarded.
        self._suspect_before = float("-inf")

    def suspect_idle(self) -> None:
        """A connection went silent: the ones idle in the pool now are not trusted again."""
        self._suspect_before = asyncio.get_running_loop().time()

    async def acquire(self, pool: Pool) -> Connection:
        """A usable connection within the timeout; BackendUnavailableError naming the server
        when none can be had."""
        # Most checkouts find an idle connection that needs no check, and so never suspend:
        # the first step runs at once, and only a checkout that has to wait goes on in a task
        # (two loop turns, a single push's largest cost after the statement's own). A task
        # rather than a timeout around the await: on Python 3.11, a timeout that fires just as
        # the checkout completes leaves a stray cancellation behind, which would cut short
        # whatever the caller awaits next (its statement).
        refused: list[str] = []  # the server's words, when it refused a new connection
        task = self._begun(self._usable(pool, refused))
        if isinstance(task, Connection):
            return task
        try:
            done, _ = await asyncio.wait({task}, timeout=self.target.timeout)
        except asyncio.CancelledError:
            _abandon(pool, task)
            raise
        if not done:
            _abandon(pool, task)
            if refused:
                raise self.target.limit(refused[-1], waited=self.target.timeout)
            raise BackendUnavailableError(
                f"no connection to MySQL at {self.target.shown} within"
                f" {self.target.timeout:g}s: check that the server is running and reachable;"
                " workers retry with backoff"
            )
        with self.target.translated("connect"):
            return task.result()

    def _begun(
        self, checkout: Coroutine[Any, Any, Connection]
    ) -> Connection | asyncio.Task[Connection]:
        """The connection, when the checkout's first step got one, else the task it goes on in.
        From Python 3.12 on the step runs in that task already (an eager one): asyncmy connects
        under asyncio.wait_for, whose timeout belongs to the task it starts in, and started in
        the caller's it cancelled the caller (CancelledError for a server that never answered
        the TCP connect, instead of BackendUnavailableError). On 3.11 wait_for belongs to no
        task, and the step runs here (a task costs 1.6 µs more)."""
        with self.target.translated("connect"):
            if sys.version_info >= (3, 12):
                task = asyncio.eager_task_factory(asyncio.get_running_loop(), checkout)
                return task.result() if task.done() else task
            try:
                waiting_on = checkout.send(None)
            except StopIteration as finished:
                connection: Connection = finished.value
                return connection
        return asyncio.ensure_future(resumed(checkout, waiting_on))

    async def _usable(self, pool: Pool, refused: list[str]) -> Connection:
        pause = PAUSE_FIRST
        while True:
            try:
                connection: Connection = await pool.acquire()
            except MySQLError as error:
                text = " ".join(str(error).split())
                if not refused_for_limit(text):
                    raise
                # The server's connection limit: wait for one of the pool's connections to
                # come free (or, holding none, a pause) and try again; the caller's timeout
                # ends the wait. Before, the call failed at once, though the driver held
                # connections that would be free within milliseconds.
                refused.append(self.target.mask(text))
                await _released(pool, pause)
                pause = min(pause * 2, PAUSE_MOST)
                continue
            try:
                if await self._ready(connection):
                    return connection
            except BaseException:
                discard(pool, connection)
                raise
            discard(pool, connection)

    async def _ready(self, connection: Connection) -> bool:
        """Prepare a new connection; False for an idle one that is suspect or does not answer."""
        if connection not in self._prepared:
            await self._prepare(connection)
            self._prepared.add(connection)
            return True
        if connection.last_usage < self._suspect_before:
            return False
        if asyncio.get_running_loop().time() - connection.last_usage < IDLE_CHECK:
            return True
        return await self._answers(connection)

    async def _prepare(self, connection: Connection) -> None:
        wait_on_socket(connection)
        sock = _socket(connection)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            for option, value in keepalive.tcp_options(self.target.timeout).items():
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
        setup = "SET @@SESSION.innodb_lock_wait_timeout = %s"
        values: tuple[int, ...] = (self.target.lock_wait,)
        if "mariadb" in str(connection.get_server_info()).lower():  # MySQL has no such thing
            setup += ", @@SESSION.idle_transaction_timeout = %s"
            values += (whole_seconds(self.target.timeout),)
        deadline = Deadline(self.target.timeout, lambda: abort(connection))
        with deadline, self.target.translated("connect"):
            async with connection.cursor() as cursor:
                await cursor.execute(setup, values)

    async def _answers(self, connection: Connection) -> bool:
        deadline = Deadline(self.target.timeout / 2, lambda: abort(connection))
        try:
            with deadline:
                await connection.ping(reconnect=False)
        except (MySQLError, OSError, EOFError) as error:
            if deadline.expired:
                log.warning(
                    "an idle connection to MySQL at %s gave no answer to a ping within %gs:"
                    " connection discarded",
                    self.target.shown,
                    deadline.seconds,
                )
                self.suspect_idle()
            else:
                log.info("an idle connection to %s failed its ping: %s", self.target.shown, error)
            return False
        return True


async def _released(pool: Pool, seconds: float) -> None:
    """Return once a connection comes back to `pool`, or after `seconds`."""
    async with pool.cond:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await pool.cond.wait()


def abort(connection: Connection) -> None:
    """Break `connection` now, with no goodbye: whatever waits on it fails at once."""
    transport = getattr(connection, "_transport", None)  # asyncmy has no public way
    if transport is not None:
        transport.abort()
    connection.close()


def discard(pool: Pool, connection: Connection) -> None:
    """Close `connection` at once and give its place in the pool back."""
    abort(connection)
    pool.release(connection)


def _abandon(pool: Pool, task: asyncio.Future[Connection]) -> None:
    """Give a checkout up; the connection it may still get is closed and its place given back,
    or the pool would count it as in use for ever (and never finish closing)."""
    task.add_done_callback(functools.partial(_give_back, pool))
    _cancel_until_done(task)


def _cancel_until_done(task: asyncio.Future[Connection]) -> None:
    """Cancel `task`, and again every CANCEL_AGAIN seconds until it is done. asyncmy connects
    under asyncio.wait_for, which on Python 3.11 swallows a cancellation that lands just as the
    TCP connect completes: the checkout would then wait for a handshake that a silent server
    never sends, for ever, holding the pool's lock, and no call would get a connection again.
    (Seen in the tests, where one checkout times out as the next takes the lock.)"""
    if not task.done():
        task.cancel()
        asyncio.get_running_loop().call_later(CANCEL_AGAIN, _cancel_until_done, task)


def _give_back(pool: Pool, task: asyncio.Future[Connection]) -> None:
    if not task.cancelled() and task.exception() is None:
        discard(pool, task.result())


def _socket(connection: Connection) -> Any:
    transport = getattr(connection, "_transport", None)
    return None if transport is None else transport.get_extra_info("socket")
