"""The psycopg 3 side of the PostgreSQL dialect: the server's address, the pooled connection
adapter the SQL driver runs its statements on, and the translation of psycopg's errors.

Every statement runs on a connection from a `psycopg_pool.AsyncConnectionPool` in autocommit
mode: a single statement is its own transaction, and `transaction` wraps several in
BEGIN ... COMMIT. A connection the server dropped is thrown away by the pool when it comes
back broken, and the pool connects anew, so the driver recovers by itself once the server is
back; callers meanwhile get BackendUnavailableError (workers retry with backoff).

A connection that goes silent (no answer, no error) is found out by its deadline: a call waits
at most `timeout` seconds for a pooled connection and `timeout` more for its statements; past
that the connection's socket is shut down, the call fails with BackendUnavailableError, and
the idle connections, likely as silent, are replaced (see conveyor.drivers.sql.deadline). TCP
keepalives and libpq's tcp_user_timeout find a silent idle connection within seconds, a
connection idle for IDLE_CHECK seconds is checked before it is handed out, and the server
ends a transaction left idle past `timeout` (idle_in_transaction_session_timeout), so one cut
off half-way never holds its row locks for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from conveyor.drivers import keepalive
from conveyor.drivers.location import Location
from conveyor.drivers.sql.adapter import Params, Row, SqlTransaction
from conveyor.drivers.sql.deadline import (
    IDLE_CHECK,
    MIGRATION_TIMEOUT,
    TIMEOUT,
    Deadline,
    whole_seconds,
)
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.shielded import shielded
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

__all__ = ["CONNECT_TIMEOUT", "RECONNECT_TIMEOUT", "PostgresConnection", "Target", "watched"]

T = TypeVar("T")

log = logging.getLogger("conveyor.postgres")

#: Most seconds to connect before giving up, unless the URL's connect_timeout says otherwise;
#: a shorter `timeout` shortens it too (libpq's least is 2): a connection attempt lost in a
#: silent network holds one of the pool's few connecting tasks while it lasts.
CONNECT_TIMEOUT = 10

#: Seconds the pool keeps retrying (with backoff) one lost connection before it gives that
#: attempt up; the next call then connects afresh. Short, so that after an outage the pool is
#: never left sleeping through a long backoff while the server is already back.
RECONNECT_TIMEOUT = 10.0

_URL_HELP = "write postgresql://user:password@host:5432/database"


class Target:
    """Where the server is: the conninfo handed to libpq, as checked and as fit to show, and
    how long a call may wait for it (`timeout`, seconds).

    `conninfo` is a postgresql:// URL or a libpq "key=value" string; empty means libpq's
    defaults (the PGHOST, PGUSER, PGPASSWORD, ... environment variables, else the local
    socket). Messages show it with any password replaced by ***.
    """

    def __init__(self, conninfo: str, *, timeout: float = TIMEOUT) -> None:
        self.conninfo = conninfo
        #: The conninfo's passwords, found once; every message is shown through it.
        self.location = Location.parse(conninfo)
        self.timeout = timeout
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as error:
            raise ConfigError(
                f"bad PostgreSQL connection settings {self.shown!r}"
                f" ({self.location.scrub(str(error))}): {_URL_HELP}, with only libpq's"
                " parameters after '?' (sslmode=..., connect_timeout=..., application_name=...)"
            ) from None
        password = params.get("password")
        self.location = self.location.with_secret(str(password) if password else None)
        self.kwargs: dict[str, Any] = {"autocommit": True}
        # Named in pg_stat_activity, and never stuck for minutes connecting to a host that does
        # not answer, unless the settings (or libpq's environment variables) say otherwise.
        if "application_name" not in params:
            self.kwargs["application_name"] = "conveyor"
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            self.kwargs["connect_timeout"] = max(2, min(CONNECT_TIMEOUT, whole_seconds(timeout)))
        # A silent idle connection found within seconds, not the system's two hours, and
        # unacknowledged writes given up after the call's timeout; the URL's own settings win.
        liveness = {
            "keepalives": 1,
            "keepalives_idle": keepalive.IDLE,
            "keepalives_interval": keepalive.INTERVAL,
            "keepalives_count": keepalive.COUNT,
            "tcp_user_timeout": max(1, round(timeout * 1000)),
        }
        if psycopg.pq.version() < 120000:  # older libpq has no tcp_user_timeout
            del liveness["tcp_user_timeout"]
        self.kwargs |= {key: value for key, value in liveness.items() if key not in params}

    @property
    def shown(self) -> str:
        """The conninfo without its password, for messages and logs."""
        if not self.conninfo.strip():
            return "libpq defaults (PG* environment variables)"
        return self.location.shown

    def mask(self, text: str) -> str:
        """`text` with the password, wherever it appears, replaced by ***."""
        return self.location.mask(text)

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection, outside the pool; BackendUnavailableError naming the
        server and libpq's reason when it cannot be made."""
        try:
            return await psycopg.AsyncConnection.connect(self.conninfo, **self.kwargs)
        except psycopg.Error as error:
            raise BackendUnavailableError(
                f"cannot connect to PostgreSQL at {self.shown} ({self._detail(error)}): check"
                " that the server is running and the URL's host, port, user, password and"
                " database"
            ) from None

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Turn psycopg's errors into conveyor's, naming the server and the operation."""
        try:
            yield
        except psycopg.Error as error:
            raise self.error(error, what) from error

    def silent(self, what: str, deadline: Deadline) -> BackendUnavailableError:
        """The error for a call whose deadline passed, logged as a warning."""
        return deadline.error(f"PostgreSQL at {self.shown}", what, log)

    def error(self, error: psycopg.Error, what: str) -> DriverError:
        """The DriverError for a psycopg error met during `what` (a query block's name...)."""
        if _lost(error):
            return BackendUnavailableError(
                f"PostgreSQL at {self.shown} is unreachable during {what}"
                f" ({self._detail(error)}): check that the server is running; workers retry"
                " with backoff and the pool reconnects by itself"
            )
        detail = self._detail(error, connecting=False)
        return DriverError(f"PostgreSQL {what} failed on {self.shown}: {detail}")

    def _detail(self, error: psycopg.Error, *, connecting: bool = True) -> str:
        """libpq's message, masked; about connecting, withheld for an ambiguous URL (libpq
        may quote the piece of a password it misread as a host or port)."""
        text = " ".join(str(error).split()) or type(error).__name__
        return self.location.scrub(text) if connecting else self.location.mask(text)


def _lost(error: psycopg.Error) -> bool:
    """True for errors that mean the server cannot be reached or dropped the connection:
    connection exceptions (SQLSTATE 08...), shutdowns (57P..), and client-side failures that
    carry no SQLSTATE (refused, reset, pool timeout, connection closed)."""
    if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = error.sqlstate
    return state is None or state.startswith(("08", "57P"))


class PostgresConnection:
    """`SqlConnection` and `SqlBorrowing` over a psycopg connection pool.

    Every call is shielded: once a method is called its statements run to the end even if the
    caller is cancelled meanwhile (the connection goes back to the pool afterwards), as with
    the memory driver, whose methods never yield. A caller cancelled while its ack was on the
    wire could otherwise not tell whether the ack happened. The end comes at the latest at
    the call's deadline (see the module docstring).
    """

    def __init__(self, target: Target, *, pool_size: int) -> None:
        self.target = target
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._draining: asyncio.Future[None] | None = None
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
        await probe.close()
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.target.conninfo,
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
        with self.target.translated("open"):
            await pool.open()
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
        self, before: Query, params: Params, copy: Query, text: Callable[[Row], str]
    ) -> None:
        """In one transaction on a pooled connection: `before`, then COPY with `copy` the
        text that `text` makes of `before`'s one row."""

        async def work(tx: _Transaction) -> None:
            [row] = await tx.fetch(before, params)
            await tx.copy_text(copy, text(row))

        await self._pooled("push_many", work, in_transaction=True)  # type: ignore[arg-type]

    async def borrow(
        self, connection: object, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]]
    ) -> T:
        """Run `work` on the caller's psycopg connection, in the caller's transaction, without
        committing. A sync `psycopg.Connection` works too: its statements run in a thread.
        No deadline: the connection, and how long its transaction may wait, are the caller's."""
        if isinstance(connection, psycopg.AsyncConnection):
            return await work(_Transaction(connection, self.target))
        if isinstance(connection, psycopg.Connection):
            return await work(_ThreadTransaction(connection, self.target))
        kind = type(connection)
        raise ConfigError(
            "connection= takes your own open psycopg 3 connection (psycopg.AsyncConnection or"
            f" psycopg.Connection), not {kind.__module__}.{kind.__qualname__}: pass the"
            " connection your transaction runs on"
        )

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
        try:
            with self.target.translated(what):
                # getconn and putconn, not pool.connection(): that also enters the connection's
                # own context, whose commit or rollback on the way out is a no-op here
                # (autocommit; `_on` ends its transactions itself) that still takes its lock.
                # putconn rolls back or discards a connection left in any other state.
                conn = await pool.getconn()
                try:
                    return await self._on(conn, what, work, in_transaction)
                finally:
                    await pool.putconn(conn)
        except BackendUnavailableError as error:
            # Waiting in vain for a free connection says nothing about the idle ones.
            if not isinstance(error.__cause__, PoolTimeout):
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
            raise
        finally:
            self._used[conn] = time.monotonic()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Set a new pooled connection up. JIT off: conveyor's statements are short, but the
        planner's guesses for their JSON batches (100 rows per batch, 100 queues) can push their
        estimated cost past jit_above_cost, and compiling then takes a hundred times longer than
        running (seen: 270 ms of JIT for a 2 ms reserve). A transaction left idle past the
        timeout is ended by the server: its client was cut off and will never finish it."""
        idle = sql.Literal(f"{whole_seconds(self.target.timeout)}s")
        setup = sql.SQL("SET jit = off; SET idle_in_transaction_session_timeout = {}")
        await watched(conn, self.target, "set-up", conn.execute(setup.format(idle)))
        self._used[conn] = time.monotonic()

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Before a connection idle for IDLE_CHECK seconds is handed out, one round trip under
        half the timeout: the pool replaces it if that fails."""
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
        with self._target.translated(query.name):
            async with self._conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(query.sql, params)
                return [*await cursor.fetchall()] if cursor.description else []

    async def execute(self, query: Query, params: Params) -> int:
        with self._target.translated(query.name):
            async with self._conn.cursor() as cursor:
                await cursor.execute(query.sql, params)
                return cursor.rowcount

    async def copy(self, query: Query, rows: Sequence[Sequence[object]]) -> None:
        """COPY ... FROM STDIN: `rows` streamed to the server, formatted by psycopg."""
        with self._target.translated(query.name):
            async with self._conn.cursor() as cursor, cursor.copy(query.sql) as copy:
                for row in rows:
                    await copy.write_row(row)

    async def copy_text(self, query: Query, text: str) -> None:
        """COPY ... FROM STDIN: `text`, already in COPY's text format, sent as it is."""
        with self._target.translated(query.name):
            async with self._conn.cursor() as cursor, cursor.copy(query.sql) as copy:
                await copy.write(text)

    async def script(self, sql: str) -> None:
        """Without parameters psycopg uses the simple protocol, which takes many statements.
        A migration may run far longer than a call's deadline allows."""
        if self._deadline is not None:
            self._deadline.extend(MIGRATION_TIMEOUT)
        with self._target.translated("migration"):
            await self._conn.execute(sql)


class _ThreadTransaction:
    """`SqlTransaction` on a caller's sync connection: each statement in a worker thread, so
    the event loop never blocks on it."""

    def __init__(self, conn: psycopg.Connection[Any], target: Target) -> None:
        self._conn = conn
        self._target = target

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        return await asyncio.to_thread(self._fetch, query, params)

    async def execute(self, query: Query, params: Params) -> int:
        return await asyncio.to_thread(self._execute, query, params)

    async def script(self, sql: str) -> None:
        await asyncio.to_thread(self._script, sql)

    def _fetch(self, query: Query, params: Params) -> list[Row]:
        with self._target.translated(query.name), self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query.sql, params)
            return [*cur.fetchall()] if cur.description else []

    def _execute(self, query: Query, params: Params) -> int:
        with self._target.translated(query.name), self._conn.cursor() as cursor:
            cursor.execute(query.sql, params)
            return cursor.rowcount

    def _script(self, sql: str) -> None:
        with self._target.translated("migration"):
            self._conn.execute(sql)


def _consume_error(task: asyncio.Future[Any]) -> None:
    """Mark the error of shielded work as seen when its caller was cancelled and never will."""
    if not task.cancelled():
        task.exception()
