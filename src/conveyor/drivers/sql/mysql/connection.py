"""The asyncmy side of the MySQL dialect: the server's address, the pooled connection adapter
the SQL driver runs its statements on, and the translation of asyncmy's errors.

Statements run on connections from an `asyncmy` pool, in autocommit mode and READ COMMITTED:
a single statement is its own transaction, and a block of several statements (see
queries.sql) or a `transaction` runs inside BEGIN ... COMMIT; a block goes as one text, BEGIN
and COMMIT with it, in one round trip (`in_one_trip`). READ COMMITTED because InnoDB's
REPEATABLE READ would keep next-key (gap) locks on every index range a locking read scans, so
concurrent reserves and settles would deadlock far more often. A `transaction` or a block may
ask for another level for itself: the driver's reserves behind a backlog (see MysqlDriver).

A transaction the server chose as a deadlock victim (1213) was rolled back whole: it is run
again, after a short random pause, up to `ATTEMPTS` times, and only then does DriverError reach
the caller. A statement waits for a row lock for most of the call's timeout
(`Target.lock_wait`, set on each connection by checkout.py), then fails with a
BackendUnavailableError saying so (1205): another transaction holds the row for long, a
caller's left open, say; running again at once would not help, and the deadline would call
the server silent and discard the connection.
A connection the server dropped is thrown away; the first call to meet one (the server
restarted while it sat in the pool) is tried once more on a new connection, so after a
restart the driver carries on by itself. While the server is down callers get
BackendUnavailableError (workers retry with backoff).

A connection that goes silent (no answer, no error) is found out by its deadline: a call waits
at most `timeout` seconds for a connection (see checkout.py) and `timeout` more for its
statements; past that the connection is aborted, the call fails with BackendUnavailableError
(it is not tried again: it may have been done), and the connections idle meanwhile are not
trusted again (see conveyor.drivers.sql.deadline).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncmy
from asyncmy.connection import Connection
from asyncmy.errors import MySQLError
from asyncmy.pool import Pool

from conveyor.drivers.lent import LentConnection
from conveyor.drivers.sql.adapter import Params, Row, SqlTransaction
from conveyor.drivers.sql.deadline import Deadline
from conveyor.drivers.sql.mysql.checkout import Checkout, abort
from conveyor.drivers.sql.mysql.session import (
    Failed,
    LentSession,
    QuietCursor,
    Session,
    failing,
    is_mariadb,
    roll_back,
    statements,
    sync_client,
)
from conveyor.drivers.sql.mysql.target import (
    ATTEMPTS,
    RETRIED,
    SESSION_ISOLATION,
    Isolation,
    Target,
    error_code,
    is_lost,
    on_replica,
)
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.shielded import shielded
from conveyor.errors import ConfigError, DriverError

__all__ = ["ATTEMPTS", "MysqlConnection", "Target"]

log = logging.getLogger("conveyor.mysql")

T = TypeVar("T")
Work = Callable[[SqlTransaction], Coroutine[Any, Any, T]]

#: The first pause before running a deadlocked transaction again, in seconds; it doubles with
#: each attempt and is randomized, so two victims of one deadlock do not collide again.
BACKOFF = 0.005

#: The oldest servers with everything the SQL needs: JSON_TABLE, SKIP LOCKED, descending
#: indexes (MariaDB 10.8; an older one would sort, and lock, a queue's whole backlog), and
#: JSON_VALUE, which reserve calls (MySQL 8.0.21).
MINIMUM = {"MariaDB": (10, 8, 0), "MySQL": (8, 0, 21)}

#: The caller's current database: a borrowed connection must be using the driver's, since the
#: SQL names its tables without one.
_CURRENT_DATABASE = Query("current_database", "", "SELECT DATABASE() AS name")


class MysqlConnection:
    """`SqlConnection` and `SqlBorrowing` over an asyncmy connection pool.

    Every call is shielded: once a method is called its statements run to the end even if the
    caller is cancelled meanwhile, as with the memory driver, whose methods never yield. A
    caller cancelled while its ack was on the wire could otherwise not tell whether the ack
    happened, and the connection would be left halfway through a reply. The end comes at
    the latest at the call's deadline (see the module docstring).
    """

    def __init__(self, target: Target, *, pool_size: int) -> None:
        self.target = target
        self.pool_size = pool_size
        self._pool: Pool | None = None
        self._checkout = Checkout(target)

    async def open(self) -> None:
        """Start the pool, and check the server is recent enough on its first connection."""
        if self._pool is not None:
            return
        with self.target.translated("connect"):
            # minsize=0: create_pool would make its first connection with no deadline on the
            # handshake, and a port that accepts but never answers held `open` forever. The
            # check's checkout makes it, within the timeout.
            pool = await asyncmy.create_pool(
                minsize=0, maxsize=self.pool_size, **self.target.pool_kwargs()
            )
        try:
            await self._check_server(pool)
        except BaseException:
            await _close_pool(pool)
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close every pooled connection, once calls under way are done with theirs."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await _close_pool(pool)

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        """Run one block and return the rows of its last statement that returns rows."""
        if _several(query):
            return (await self.in_one_trip(query, params))[0]
        work = functools.partial(_fetch, query=query, params=params)
        return await self._pooled(query.name, work, None)

    async def execute(self, query: Query, params: Params) -> int:
        """Run one block and return how many rows its last statement changed."""
        if _several(query):
            return (await self.in_one_trip(query, params))[1]
        work = functools.partial(_execute, query=query, params=params)
        return await self._pooled(query.name, work, None)

    async def in_one_trip(
        self, query: Query, params: Params, isolation: Isolation = SESSION_ISOLATION
    ) -> tuple[list[Row], int]:
        """Run a block of several statements as one transaction at `isolation`, in one round
        trip (Session.in_one_trip); its rows and row count, as fetch and execute."""
        level = None if isolation == SESSION_ISOLATION else isolation
        work = functools.partial(_in_one_trip, query=query, params=params, isolation=level)
        return await self._pooled(query.name, work, None)

    async def script(self, sql: str) -> None:
        """Run several parameterless statements, such as a migration file."""
        await self._pooled("migration", functools.partial(_script, sql=sql), None)

    async def transaction(
        self, work: Work[T], *, durable: bool = True, isolation: Isolation | None = None
    ) -> T:
        """Run `work` on one pooled connection inside BEGIN ... COMMIT (ROLLBACK if it raises),
        again from the start if the server rolled it back for a deadlock; at `isolation` rather
        than the session's READ COMMITTED if given. Always durable (the server's
        innodb_flush_log_at_trx_commit decides)."""
        return await self._pooled("transaction", work, isolation or SESSION_ISOLATION)

    async def borrow(self, connection: object, work: Work[T]) -> T:
        """Run `work` on the caller's connection, inside whatever transaction the caller has
        open there, and neither commit nor roll back: an asyncmy connection from async code,
        or a PyMySQL or mysqlclient one lent by the blocking facade, whose statements then run
        in the caller's thread. Nothing is retried: a deadlock there has rolled the caller's
        whole transaction back, which only the caller can run again."""
        session = _borrowed(connection)
        try:
            [row] = await session.fetch(_CURRENT_DATABASE, {})
            if row["name"] != self.target.database:
                raise ConfigError(
                    f"connection= is using database {row['name']!r}, but this driver's jobs are"
                    f" in {self.target.database!r} ({self.target.shown}): push on a connection"
                    " to that database"
                )
            return await work(session)
        except Failed as failed:
            error = self.target.error(failed.error, failed.what or "push", borrowed=True)
            raise error from failed.error

    async def _check_server(self, pool: Pool) -> None:
        """ConfigError for a server too old for the SQL (no JSON_TABLE, SKIP LOCKED...)."""
        connection = await self._checkout.acquire(pool)
        try:
            found = str(connection.get_server_info())
        finally:
            pool.release(connection)
        product, version = _server_version(found)
        if version < MINIMUM[product]:
            need = ".".join(map(str, MINIMUM[product]))
            raise ConfigError(
                f"{self.target.shown} runs {product} {found!r}: conveyor needs {product} {need}"
                " or later (MariaDB 10.8+, MySQL 8.0.21+)"
            )

    async def _pooled(self, what: str, work: Work[T], isolation: Isolation | None) -> T:
        """Run `work` on a pooled connection, shielded from the caller's cancellation: each
        statement its own transaction with `isolation` None, else all in one at that level."""
        pool = self._pool
        if pool is None:
            raise DriverError(f"the MySQL driver for {self.target.shown} is closed: call open()")
        return await shielded(self._attempts(pool, what, work, isolation))

    async def _attempts(
        self, pool: Pool, what: str, work: Work[T], isolation: Isolation | None
    ) -> T:
        """Run `work`, again after a deadlock or lock wait timeout (the server rolled the whole
        transaction back, so running it again is safe), and once more on a new connection when
        the first one turns out to be dead."""
        attempt = 1
        while True:
            try:
                return await self._attempt(pool, what, work, isolation)
            except Failed as failed:
                code = error_code(failed.error)
                if code in RETRIED and attempt < ATTEMPTS:
                    log.debug("MySQL %s met error %s; running it again", what, code)
                    await asyncio.sleep(random.uniform(0, BACKOFF * 2**attempt))
                elif not (is_lost(failed.error) and attempt == 1):
                    raise self.target.error(failed.error, failed.what or what) from failed.error
            attempt += 1

    async def _attempt(
        self, pool: Pool, what: str, work: Work[T], isolation: Isolation | None
    ) -> T:
        """One run of `work` on one connection, under the call's deadline; the connection is
        closed, not pooled again, if it may be broken or halfway through something."""
        connection = await self._checkout.acquire(pool)
        deadline = Deadline(self.target.timeout, functools.partial(abort, connection))
        session = Session(connection, deadline)
        healthy = False
        try:
            with deadline:
                result = await (
                    work(session)
                    if isolation is None
                    else _in_transaction(connection, session, work, isolation)
                )
            healthy = not deadline.expired
            return result
        except Failed as failed:
            if deadline.expired:
                self._checkout.suspect_idle()
                step = what if failed.what in (None, what) else f"{what} ({failed.what})"
                raise self.target.silent(step, deadline) from failed.error
            healthy = not is_lost(failed.error)
            if on_replica(failed.error):
                # The old primary, say, through a name that has moved since: this connection
                # and the idle ones (most likely there too) are closed, and the next call
                # connects afresh.
                healthy = False
                self._checkout.suspect_idle()
            raise
        finally:
            if healthy and session.holds_named_lock:
                healthy = await _release_named_locks(connection, self.target.timeout)
            healthy = healthy and not session.waits_long
            if not healthy:
                connection.close()
            pool.release(connection)


async def _in_transaction(
    connection: Connection, session: Session, work: Work[T], isolation: Isolation
) -> T:
    """`work` inside BEGIN ... COMMIT, rolled back if anything in it raises, at `isolation`:
    set for this one transaction if not the session's (the server takes it only before BEGIN)."""
    with failing("BEGIN"):
        if isolation != SESSION_ISOLATION:
            async with connection.cursor(QuietCursor) as cursor:
                await cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        await connection.begin()
    try:
        result = await work(session)
        with failing("COMMIT"):
            await connection.commit()
    except BaseException:
        await roll_back(connection)
        raise
    return result


def _borrowed(connection: object) -> SqlTransaction:
    """The session a push runs on in the caller's `connection`; ConfigError naming the fix for
    a connection of a kind, or of a loop, it cannot use."""
    if isinstance(connection, LentConnection):  # from the blocking facade
        if (client := sync_client(connection.connection)) is not None:
            if not getattr(connection.connection, "open", True):  # both clients have `open`
                raise ConfigError(
                    f"connection= is a closed {client} connection: push on the open connection"
                    " your transaction runs on"
                )
            return LentSession(connection)
        if isinstance(connection.connection, Connection):
            raise ConfigError(
                "connection= is an asyncmy connection, which belongs to its event loop, given"
                " to registry.blocking.push: push on it with `await registry.push(...,"
                " connection=conn)` on that loop, or give the blocking facade a PyMySQL or"
                " mysqlclient connection"
            )
        connection = connection.connection
    elif isinstance(connection, Connection):
        if getattr(connection, "_loop", None) not in (None, asyncio.get_running_loop()):
            raise ConfigError(
                "connection= is an asyncmy connection of another event loop than the one this"
                " push runs on: push with `await registry.push(..., connection=conn)` on the"
                " connection's loop"
            )
        if not connection.connected:
            raise ConfigError(
                "connection= is a closed asyncmy connection: push on the open connection your"
                " transaction runs on"
            )
        return Session(connection, borrowed=True)
    elif (client := sync_client(connection)) is not None:
        raise ConfigError(
            f"connection= is a {client} connection, which is synchronous, given to the async"
            " push: push on it with `registry.blocking.push(..., connection=conn)` (its"
            " statements then run in your thread), or await the push on an asyncmy connection"
        )
    kind = type(connection)
    raise ConfigError(
        "connection= takes your own open MySQL connection: asyncmy's with `await"
        " registry.push(...)`, PyMySQL's or mysqlclient's (Django's:"
        " `django.db.connection.connection`) with `registry.blocking.push(...)`; not"
        f" {kind.__module__}.{kind.__qualname__}: pass the connection your transaction runs on"
    )


async def _release_named_locks(connection: Connection, timeout: float) -> bool:
    """Release the session's named locks (the migration lock), so they end with the
    transaction that took them; False if the connection failed meanwhile."""
    try:
        with Deadline(timeout, functools.partial(abort, connection)):
            async with connection.cursor() as cursor:
                await cursor.execute("DO RELEASE_ALL_LOCKS()")
    except (MySQLError, OSError, EOFError):
        return False
    return True


async def _close_pool(pool: Pool) -> None:
    pool.close()
    await pool.wait_closed()


async def _fetch(session: SqlTransaction, *, query: Query, params: Params) -> list[Row]:
    return await session.fetch(query, params)


async def _execute(session: SqlTransaction, *, query: Query, params: Params) -> int:
    return await session.execute(query, params)


async def _script(session: SqlTransaction, *, sql: str) -> None:
    await session.script(sql)


async def _in_one_trip(
    session: SqlTransaction, *, query: Query, params: Params, isolation: Isolation | None
) -> tuple[list[Row], int]:
    assert isinstance(session, Session)  # a pooled connection's (`_attempt`)
    return await session.in_one_trip(query, params, isolation)


def _several(query: Query) -> bool:
    """True for a block of several statements, which need a transaction of their own; a
    single statement is its own."""
    return len(statements(query.sql)) > 1


def _server_version(text: str) -> tuple[str, tuple[int, ...]]:
    """("MariaDB" or "MySQL", (major, minor, patch)) from the server's version string (a patch
    not given is 0). MariaDB prefixes "5.5.5-" for old clients' sake:
    '5.5.5-10.11.6-MariaDB-0+deb12u1'."""
    product = "MariaDB" if is_mariadb(text) else "MySQL"
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.removeprefix("5.5.5-"))
    parts = found.groups(default="0") if found else ("0", "0", "0")
    return product, tuple(int(part) for part in parts)
