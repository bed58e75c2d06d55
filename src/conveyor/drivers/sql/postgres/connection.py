"""The psycopg 3 side of the PostgreSQL dialect: the pooled connection adapter the SQL driver
runs its statements on (the server's address and the translation of psycopg's errors are in
target.py).

Every statement runs on a connection from a `psycopg_pool.AsyncConnectionPool` in autocommit
mode: a single statement is its own transaction, and `transaction` wraps several in
BEGIN ... COMMIT. A connection the server dropped is thrown away by the pool when it comes
back broken, and the pool connects anew, so the driver recovers by itself once the server is
back; callers meanwhile get BackendUnavailableError (workers retry with backoff).

A connection that goes silent (no answer, no error) is found out by its deadline: a call waits
at most `timeout` seconds for a pooled connection and `timeout` more for its statements; past
that the connection's socket is shut down, the call fails with BackendUnavailableError, and the
idle connections, likely as silent, are replaced (see conveyor.drivers.sql.deadline). TCP
keepalives and libpq's tcp_user_timeout find a silent idle connection within seconds, a
connection idle for IDLE_CHECK seconds is checked before it is handed out (one the server
ended, however briefly idle, is replaced without a round trip), and the server ends a
transaction left idle past `timeout` (idle_in_transaction_session_timeout), so one cut off
half-way never holds its row locks for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from conveyor.drivers.lent import LentConnection, Runner
from conveyor.drivers.sql.adapter import Params, Row, SqlTransaction
from conveyor.drivers.sql.deadline import (
    IDLE_CHECK,
    MIGRATION_TIMEOUT,
    Deadline,
)
from conveyor.drivers.sql.postgres import prepared
from conveyor.drivers.sql.postgres.borrowed import JOBS_TABLE, check_state, on_callers
from conveyor.drivers.sql.postgres.pool import Pool
from conveyor.drivers.sql.postgres.socket import PooledConnection, ended_by_server, wait_on_socket
from conveyor.drivers.sql.postgres.target import Target, on_standby
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.shielded import shielded, to_task
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = ["RECONNECT_TIMEOUT", "PostgresConnection", "Target", "watched"]

T = TypeVar("T")


#: Seconds the pool retries (with backoff) one lost connection before giving that attempt up
#: (the next call connects afresh): short, never sleeping through a backoff once it is back.
RECONNECT_TIMEOUT = 10.0

#: The database a connection uses (the server's name, whatever a pooler's): a borrowed one's.
_CURRENT_DATABASE = Query("current_database", "", "SELECT current_database() AS name")


class PostgresConnection:
    """`SqlConnection` and `SqlBorrowing` over a psycopg connection pool.

    Every call is shielded: once a method is called its statements run to the end even if the
    caller is cancelled meanwhile (the connection goes back to the pool afterwards), as with
    the memory driver, whose methods never yield. A caller cancelled while its ack was on the
    wire could otherwise not tell whether the ack happened. The end comes at the latest at
    the call's deadline (see the module docstring).
    """

    def __init__(self, target: Target, *, pool_size: int, jobs: str) -> None:
        self.target = target
        self.pool_size = pool_size
        self._jobs = jobs  # the jobs table's name
        self._jobs_found: Row | None = None  # where the driver's own connections find it
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._draining: asyncio.Future[None] | None = None
        #: The database the jobs are in, once opened: a borrowed connection must be using it
        #: (and one found using it always will: a connection never changes database).
        self._database: str | None = None
        self._lent_checked: weakref.WeakSet[object] = weakref.WeakSet()
        #: When each pooled connection was last used (time.monotonic()).
        self._used: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def open(self) -> None:
        """Connect once to check the settings, then start the pool."""
        if self._pool is not None:
            return
        # One direct connection first: a wrong URL, or a server that is down, then fails here
        # with libpq's own reason, where the pool would only time out.
        probe = await self.target.connect()
        try:
            with self.target.translated("open"):
                cursor = await probe.execute(_CURRENT_DATABASE.sql)
                self._database = str((await cursor.fetchall())[0][0])
        finally:
            await probe.close()
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = Pool(
            self.target.conninfo,
            connection_class=PooledConnection,
            kwargs=self.target.kwargs,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.target.timeout,
            reconnect_timeout=RECONNECT_TIMEOUT,
            configure=self._configure,
            check=self._check,
            name="conveyor",
        )
        # Waiting for the first connection: the first statements find it free, where they
        # would grow the pool, and a loop that ended while that second connection was on its
        # way (a script that pushed once under asyncio.run) hung: psycopg_pool's task making
        # it swallows the cancellation. Cancelled meanwhile, the pool is closed, not left.
        with self.target.translated("open"):
            try:
                await pool.open(wait=True, timeout=self.target.timeout)
            except BaseException:
                await asyncio.shield(pool.close())
                raise
        self._pool = pool

    async def close(self) -> None:
        """Close every pooled connection; `open` may be called again afterwards."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with self.target.translated("close"):
                await pool.close()

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        """Run one statement on its own and return its rows."""
        return await self._pooled(query.name, lambda tx: tx.fetch(query, params))

    async def execute(self, query: Query, params: Params) -> int:
        """Run one statement on its own and return how many rows it changed."""
        return await self._pooled(query.name, lambda tx: tx.execute(query, params))

    async def script(self, sql: str) -> None:
        """Run several statements in one simple-protocol call."""
        await self._pooled("migration", lambda tx: tx.script(sql))

    async def transaction(
        self, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]], *, durable: bool = True
    ) -> T:
        """Run `work` on one pooled connection inside BEGIN ... COMMIT (ROLLBACK if it raises).
        Always durable (the server's synchronous_commit decides)."""
        return await self._pooled("transaction", work, in_transaction=True)

    async def copy_in(
        self, stage: Query, copy: Query, rows: Sequence[Sequence[object]], then: Query
    ) -> None:
        """In one transaction on a pooled connection: `stage` (which makes the table), COPY
        `rows` into it with `copy`, then `then`."""

        async def work(tx: _Transaction) -> None:
            await tx.execute(stage, {})
            await tx.copy(copy, rows)
            await tx.execute(then, {})

        await self._pooled("push_many", work, in_transaction=True)  # type: ignore[arg-type]

    async def copy_text(
        self,
        before: Query,
        params: Params,
        copy: Query,
        texts: Callable[[Row], AsyncIterator[str]],
    ) -> None:
        """In one transaction on a pooled connection: `before`, then COPY with `copy` each
        piece of text that `texts` makes of `before`'s one row, sent as it comes. An error
        `texts` raises aborts the COPY and rolls back, and reaches the caller as it is."""

        async def work(tx: _Transaction) -> None:
            [row] = await tx.fetch(before, params)
            await tx.copy_text(copy, texts(row))

        await self._pooled("push_many", work, in_transaction=True)  # type: ignore[arg-type]

    async def borrow(
        self, connection: object, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]]
    ) -> T:
        """Run `work` on the caller's psycopg connection, in the caller's transaction, without
        committing. A sync `psycopg.Connection` works too: its statements run in the thread
        that lent it (the blocking facade's caller), else in a thread of asyncio's.
        No deadline: the connection, and how long its transaction may wait, are the caller's."""
        run: Runner = asyncio.to_thread
        if isinstance(connection, LentConnection):  # from the blocking facade
            run = connection.run
            connection = connection.connection
            if isinstance(connection, psycopg.AsyncConnection):
                raise ConfigError(
                    "connection= is a psycopg.AsyncConnection, which belongs to its event loop,"
                    " given to registry.blocking.push: push on it with `await registry.push(...,"
                    " connection=conn)` on that loop, or give the blocking facade a"
                    " psycopg.Connection"
                )
        if isinstance(connection, psycopg.AsyncConnection):
            return await self._on_lent(connection, _Transaction(connection, self.target), work)
        if isinstance(connection, psycopg.Connection):
            lent = _ThreadTransaction(connection, self.target, run)
            return await self._on_lent(connection, lent, work)
        kind = type(connection)
        raise ConfigError(
            "connection= takes your own open psycopg 3 connection (psycopg.AsyncConnection or"
            f" psycopg.Connection), not {kind.__module__}.{kind.__qualname__}: pass the"
            " connection your transaction runs on"
        )

    async def _on_lent(
        self,
        connection: psycopg.AsyncConnection[Any] | psycopg.Connection[Any],
        tx: SqlTransaction,
        work: Callable[[SqlTransaction], Coroutine[Any, Any, T]],
    ) -> T:
        """`work` on the caller's connection, once it is found usable (`check_state`), using
        the driver's database and finding its jobs table: the SQL names its tables without
        either, so on another database or schema that has them too (a staging one beside
        production) the job would be stored where no worker of this driver looks. ConfigError
        otherwise."""
        check_state(connection)
        if connection not in self._lent_checked:  # a round trip on each connection's first
            if self._jobs_found is None:
                [self._jobs_found] = await self.fetch(JOBS_TABLE, {"jobs": self._jobs})
            [row] = await on_callers(tx.fetch(JOBS_TABLE, {"jobs": self._jobs}))
            if row["name"] != self._database:
                raise ConfigError(
                    f"connection= is using database {row['name']!r}, but this driver's jobs are"
                    f" in {self._database!r} ({self.target.shown}): push on a connection to"
                    " that database"
                )
            if row["jobs"] != self._jobs_found["jobs"]:
                raise ConfigError(
                    f"connection= finds no table {self._jobs!r}, or another than this driver's:"
                    f" it is to another server than {self.target.shown}, or its search_path"
                    f" {row['search_path']!r} is not the driver's"
                    f" {self._jobs_found['search_path']!r}: push on a connection to the driver's"
                    " server, with its search_path (or set the URL's options= to yours)"
                )
            self._lent_checked.add(connection)
        return await on_callers(work(tx))

    async def _pooled(
        self,
        what: str,
        work: Callable[[SqlTransaction], Coroutine[Any, Any, T]],
        *,
        in_transaction: bool = False,
    ) -> T:
        """Run `work` on a pooled connection, shielded from the caller's cancellation."""
        pool = self._pool
        if pool is None:
            raise DriverError(
                f"the PostgreSQL driver for {self.target.shown} is closed: call open() first"
            )
        return await shielded(self._on_pool(pool, what, work, in_transaction))

    async def _on_pool(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        what: str,
        work: Callable[[SqlTransaction], Coroutine[Any, Any, T]],
        in_transaction: bool,
    ) -> T:
        # try/except rather than `with self.target.translated(...)`, here and in _Transaction:
        # a generator-based context manager costs a dozen Python calls per single push.
        try:
            # getconn and putconn, not pool.connection(): that also enters the connection's
            # own context, whose commit or rollback on the way out is a no-op here
            # (autocommit; `_on` ends its transactions itself) that still takes its lock.
            # putconn rolls back or discards a connection left in any other state.
            if not pool._pool:  # no idle connection: getconn waits, under wait_for (to_task)
                await to_task()
            conn = await pool.getconn()
            try:
                return await self._on(conn, what, work, in_transaction)
            finally:
                await pool.putconn(conn)
        except psycopg.Error as error:
            failure = self.target.error(error, what)
            if isinstance(error, PoolTimeout) and isinstance(pool, Pool) and pool.refused:
                # No pooled connection came free while the pool's attempts to add one were
                # refused: the server's connection limit, which the error names.
                failure = self.target.limit(pool.refused, waited=self.target.timeout)
            if isinstance(failure, BackendUnavailableError) and not isinstance(error, PoolTimeout):
                self._drain(pool)  # waiting in vain for a free connection says nothing of idle ones
            raise failure from error
        except BackendUnavailableError:
            self._drain(pool)
            raise

    async def _on(
        self,
        conn: psycopg.AsyncConnection[Any],
        what: str,
        work: Callable[[SqlTransaction], Coroutine[Any, Any, T]],
        in_transaction: bool,
    ) -> T:
        """`work` on `conn` under the call's deadline; a connection that did not answer in
        time is broken, and so discarded by the pool when it comes back."""
        deadline = Deadline(self.target.timeout, functools.partial(_kill, conn))
        try:
            with deadline:
                if not in_transaction:
                    return await work(_Transaction(conn, self.target, deadline))
                async with conn.transaction():
                    return await work(_Transaction(conn, self.target, deadline))
        except (psycopg.Error, DriverError) as error:
            if deadline.expired:
                raise self.target.silent(what, deadline) from error
            if on_standby(error):  # the old primary, by a name moved at failover: replaced
                await conn.close()  # by the pool with one that follows the name
            raise
        finally:
            self._used[conn] = time.monotonic()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Set a new pooled connection up (`Target.setup`)."""
        await watched(conn, self.target, "set-up", conn.execute(self.target.setup()))
        self._used[conn] = time.monotonic()

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Before a connection is handed out: one the server ended while it was idle is closed
        (without a round trip: `ended_by_server`), and one idle for IDLE_CHECK seconds gets
        a round trip under half the timeout; the pool replaces it if either fails. Before, a
        connection ended within IDLE_CHECK of its last use (pg_terminate_backend, a role's
        idle_session_timeout) failed the call that got it."""
        if ended_by_server(conn):
            await conn.close()
            if self._pool is not None:
                self._drain(self._pool)  # ended by a restart, say: likely not alone
            raise BackendUnavailableError(f"PostgreSQL at {self.target.shown} ended a connection")
        if time.monotonic() - self._used.get(conn, 0.0) < IDLE_CHECK:
            return
        try:
            await watched(conn, self.target, "check", conn.execute(""), self.target.timeout / 2)
        except BackendUnavailableError:
            if self._pool is not None:
                self._drain(self._pool)
            raise
        self._used[conn] = time.monotonic()

    def _drain(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        """After a connection was lost or went silent, replace the idle ones in the background:
        a server restart breaks them all, a silent network path silences them all, and each
        would otherwise cost one more failed call (a silent one, a whole timeout). Closing
        them needs no round trip, unlike `pool.check()`, which would wait on a silent one
        forever."""
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(pool.drain())
            self._draining.add_done_callback(_consume_error)


async def watched(
    conn: psycopg.AsyncConnection[Any],
    target: Target,
    what: str,
    work: Awaitable[T],
    seconds: float | None = None,
) -> T:
    """Await `work` on `conn` (not in the pool) under a deadline of `seconds` (default: the
    target's timeout), and never cancel it half-way: when the deadline passes, or the caller
    is cancelled, the connection's socket is shut down so that `work` fails at once. (psycopg,
    cancelled mid-statement, would send a cancel request and wait for it: on a dead server, for
    long.) BackendUnavailableError when the deadline passed; `conn` is then broken."""
    deadline = Deadline(target.timeout if seconds is None else seconds, lambda: _kill(conn))
    task = asyncio.ensure_future(work)
    try:
        with deadline:
            await asyncio.shield(task)
    except asyncio.CancelledError:
        _kill(conn)
        await asyncio.gather(task, return_exceptions=True)
        raise
    except psycopg.Error as error:
        if deadline.expired:
            raise target.silent(what, deadline) from error
        raise target.error(error, what) from error
    return task.result()


def _kill(conn: psycopg.AsyncConnection[Any]) -> None:
    """Break `conn` now: shut its socket down, so whatever waits on it fails at once (with a
    "connection closed" error) and psycopg marks it broken. The socket stays libpq's to close."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # already closed
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


class _Transaction:
    """`SqlTransaction` on one async connection: a pooled one, or a caller's own."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        target: Target,
        deadline: Deadline | None = None,
    ) -> None:
        self._conn = conn
        self._target = target
        self._deadline = deadline

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        try:
            # AsyncCursor whatever the connection's cursor_factory (a caller's may be a raw
            # one, whose $1 placeholders the %(name)s of queries.sql are not).
            async with psycopg.AsyncCursor(self._conn, row_factory=dict_row) as cursor:
                await cursor.execute(query.sql, params)
                return [*await cursor.fetchall()] if cursor.description else []
        except psycopg.Error as error:
            raise self._target.error(error, query.name) from error

    async def execute(self, query: Query, params: Params) -> int:
        try:
            short = self._target.positional(query)
            if short is not None and isinstance(self._conn, PooledConnection):
                run = prepared.run(self._conn.pgconn, self._conn.prepared, short, params)
                return await wait_on_socket(run, self._conn.pgconn.socket)
            async with psycopg.AsyncCursor(self._conn) as cursor:
                await cursor.execute(query.sql, params)
                return cursor.rowcount
        except psycopg.Error as error:
            raise self._target.error(error, query.name) from error

    async def copy(self, query: Query, rows: Sequence[Sequence[object]]) -> None:
        """COPY ... FROM STDIN: `rows` streamed to the server, formatted by psycopg."""
        with self._target.translated(query.name):
            async with self._conn.cursor() as cursor, cursor.copy(query.sql) as copy:
                for row in rows:
                    await copy.write_row(row)

    async def copy_text(self, query: Query, texts: AsyncIterable[str]) -> None:
        """COPY ... FROM STDIN: each of `texts`, already in COPY's text format, sent as it is
        made (the server stores its rows meanwhile)."""
        with self._target.translated(query.name):
            async with self._conn.cursor() as cursor, cursor.copy(query.sql) as copy:
                async for text in texts:
                    await copy.write(text)

    async def script(self, sql: str) -> None:
        """Without parameters psycopg uses the simple protocol, which takes many statements.
        A migration may run far longer than a call's deadline allows."""
        if self._deadline is not None:
            self._deadline.extend(MIGRATION_TIMEOUT)
        with self._target.translated("migration"):
            await self._conn.execute(sql)


class _ThreadTransaction:
    """`SqlTransaction` on a caller's sync connection: each statement in another thread (with
    `run`: the caller's, lent; else one of asyncio's), so the event loop never blocks on it."""

    def __init__(self, conn: psycopg.Connection[Any], target: Target, run: Runner) -> None:
        self._conn = conn
        self._target = target
        self._run = run

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        rows: list[Row] = await self._run(functools.partial(self._fetch, query, params))
        return rows

    async def execute(self, query: Query, params: Params) -> int:
        changed: int = await self._run(functools.partial(self._execute, query, params))
        return changed

    async def script(self, sql: str) -> None:
        await self._run(functools.partial(self._script, sql))

    def _fetch(self, query: Query, params: Params) -> list[Row]:
        with (
            self._target.translated(query.name),
            psycopg.Cursor(self._conn, row_factory=dict_row) as cur,
        ):
            cur.execute(query.sql, params)
            return [*cur.fetchall()] if cur.description else []

    def _execute(self, query: Query, params: Params) -> int:
        with self._target.translated(query.name), psycopg.Cursor(self._conn) as cursor:
            cursor.execute(query.sql, params)
            return cursor.rowcount

    def _script(self, sql: str) -> None:
        with self._target.translated("migration"):
            self._conn.execute(sql)


def _consume_error(task: asyncio.Future[Any]) -> None:
    """Mark the error of shielded work as seen when its caller was cancelled and never will."""
    if not task.cancelled():
        task.exception()
