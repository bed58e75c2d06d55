"""LISTEN/NOTIFY for the PostgreSQL dialect: wake an idle worker as soon as a job is pushed.

Pushes, releases and retries call pg_notify('<prefix>jobs', queue) in their own transaction
(see queries.sql), so a notification arrives only once the job is committed and visible. One
dedicated connection per driver LISTENs on that channel and remembers which queues were
notified since a reserve last looked at them; `wait` returns as soon as one of its queues is.

Polling stays the fallback: `wait` never sleeps longer than its timeout (the worker's poll
interval), so a notification lost while the listening connection was down costs at most one
interval. The connection is checked every QUIET_CHECK seconds (`SELECT 1`, under the driver's
timeout: a connection that went silent never answers, and is then broken and replaced) and
reconnected with backoff when lost.

Behind a pooler in transaction mode (the URL's pool_mode=transaction) nothing LISTENs: a LISTEN
holds for a session, and there the server connection that ran it moves on to another client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg import sql

from conveyor.drivers.sql.postgres.connection import watched
from conveyor.drivers.sql.postgres.target import Target
from conveyor.errors import DriverError

__all__ = ["QUIET_CHECK", "Listener"]

log = logging.getLogger("conveyor.postgres")

#: Seconds between checks of the listening connection. A silent one gives no sign, and
#: notifications stop: until the check finds it out (within this plus the driver's timeout),
#: idle workers poll at their poll interval.
QUIET_CHECK = 5.0

#: First and longest pause between attempts to listen again after the connection was lost.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


class Listener:
    """One connection LISTENing on a channel; the queues notified since each was cleared.

    `start` before the first reserve, `clear(queues)` at the start of every reserve, then
    `wait(queues)` under a timeout: a job committed after `clear` either is seen by that reserve or
    notifies in time to end the following wait, so no push between the two is lost.
    """

    def __init__(self, target: Target, channel: str) -> None:
        self.target = target
        self.channel = channel
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._notified: set[str] = set()
        self._waiters: list[tuple[Collection[str], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._failing = False
        #: After a failed start, the next is tried no sooner than this (time.monotonic()), the
        #: pause doubling from RETRY_FIRST to RETRY_MAX: reserves call `start` each time, and
        #: behind a backlog, on a server at its connection limit, each made an attempt that
        #: the server refused, hundreds a second.
        self._retry_at = 0.0
        self._pause = 0.0

    @property
    def listening(self) -> bool:
        """True while the listening task runs (it may be reconnecting)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> bool:
        """Connect and LISTEN, unless already done; True once listening, so that every later
        commit that notifies the channel is heard. False (with a warning, once) when it cannot
        connect: the caller then polls, and a call after the pause (`_retry_at`) tries again.
        Always False behind a pooler in transaction mode (said once, at info)."""
        if self.listening:
            return True
        if self.target.transaction_pool:
            if not self._failing:
                log.info(
                    "not listening through %s (pool_mode=transaction): idle workers poll at"
                    " their poll interval; a worker connected to the server, or to a session"
                    " pool, is woken at once",
                    self.target.shown,
                )
            self._failing = True
            return False
        if self._failing and time.monotonic() < self._retry_at:
            return False
        async with self._starting:
            if self.listening:
                return True
            try:
                conn = await self._connect()
            except DriverError as error:
                if not self._failing:
                    log.warning("cannot LISTEN, polling instead until it can: %s", error)
                self._failing = True
                self._pause = min(max(self._pause * 2, RETRY_FIRST), RETRY_MAX)
                self._retry_at = time.monotonic() + self._pause
                return False
            self._failing = False
            self._pause = 0.0
            name = f"conveyor-listen-{self.channel}"
            self._task = asyncio.create_task(self._run(conn), name=name)
            return True

    async def stop(self) -> None:
        """Stop listening and close the connection; `start` may be called again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._notified.clear()

    def clear(self, queues: Sequence[str]) -> None:
        """Forget notifications for `queues`: a reserve is about to look at them."""
        self._notified.difference_update(queues)

    async def wait(self, queues: Sequence[str]) -> None:
        """Return when one of `queues` is notified (at once if it already was since its last
        `clear`); the caller bounds it with a timeout."""
        if not self._notified.isdisjoint(queues):
            return
        entry = (frozenset(queues), asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        finally:
            self._waiters.remove(entry)

    # -- the listening task ----------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await self.target.connect()
        try:
            await watched(conn, self.target, "LISTEN", conn.execute(self._listen))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hear notifications until stopped; when the connection is lost, listen again."""
        try:
            while True:
                try:
                    await self._hear(conn)
                except (psycopg.Error, DriverError) as error:
                    if isinstance(error, psycopg.Error):
                        error = self.target.error(error, "LISTEN")
                    log.warning(
                        "lost the LISTEN connection to %s (%s); listening again, polling meanwhile",
                        self.target.shown,
                        error,
                    )
                await conn.close()
                conn = await self._reconnect()
                # Notifications sent while it was down are gone: wake every waiter to look.
                self._wake(None)
        finally:
            await conn.close()

    async def _hear(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=QUIET_CHECK):
                self._notified.add(notify.payload)
                self._wake(notify.payload)
            # A connection that died without a word is found out here.
            await watched(conn, self.target, "the LISTEN check", conn.execute("SELECT 1"))

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        delay = RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                conn = await self._connect()
            except DriverError as error:
                log.debug("cannot listen again yet: %s", error)
                delay = min(delay * 2, RETRY_MAX)
                continue
            log.info("listening on %s again", self.target.shown)
            return conn

    def _wake(self, queue: str | None) -> None:
        """Resolve the waiters for `queue` (every waiter when None)."""
        for queues, future in self._waiters:
            if (queue is None or queue in queues) and not future.done():
                future.set_result(None)
