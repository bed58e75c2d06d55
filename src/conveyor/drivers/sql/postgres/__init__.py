"""The PostgreSQL dialect: jobs in a PostgreSQL database, shared by every process that reaches it.

    from conveyor.drivers.sql.postgres import PostgresDriver

    driver = PostgresDriver("postgresql://app:secret@db.internal:5432/app")        # or
    driver = PostgresDriver.from_url("postgresql://app@db/app?prefix=mail_&migrate=false")

Needs `pip install "conveyor[postgres]"` (psycopg 3 and psycopg-pool). Statements run on a
pool of up to `pool_size` connections; a worker also holds one more, LISTENing, so it wakes
within milliseconds of a push from any process (polling at its poll interval stays the
fallback). Tables are created on first use (`migrate=False` refuses to run on an out-of-date
schema instead; `conveyor migrate` brings it up to date), every name starting with `prefix`.

URL options, after `?`: `prefix` (default conveyor_), `migrate` (true or false), `pool_size`
(default 10) and `timeout` (seconds, default 10: how long a call may wait for a connection, and
then for its statements, before its connection counts as gone silent and is discarded); `pool_mode`
(session, the default, or transaction: behind a pooler in transaction mode, see below); any
other is libpq's own (sslmode, connect_timeout, application_name, options, ...). With no host,
user or password in the URL, libpq takes them from PGHOST, PGUSER, PGPASSWORD, ... as usual.
Unless the URL sets them, TCP keepalives find a silent idle connection within 11 s
(keepalives_idle=5, keepalives_interval=2, keepalives_count=3), tcp_user_timeout drops one
whose writes go unacknowledged for `timeout`, and connect_timeout is `timeout` (2 to 10 s);
see docs/reliability.md.

Behind PgBouncer (or another pooler) in session mode nothing changes. In transaction mode,
where each transaction may run on another server connection shared with other clients, add
`pool_mode=transaction`: the driver then prepares no statement and sets no session setting,
and a worker does not LISTEN (a session's) but polls at its poll interval; a worker connected
to the server itself (or a session pool) is still woken by pushes made through the pooler.
docs/drivers.md, "Behind PgBouncer".

Transactional push: give `connection=` your own psycopg connection, and the job is written in
your transaction. It exists, and a worker is notified, if and only if you commit:

    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders (id, total) VALUES (%s, %s)", (order, total))
            await registry.push("mail", "receipt", Receipt(order), connection=conn)
        # committed here: the order and its receipt job together, or neither

A sync `psycopg.Connection` works too (Django, Flask; each statement runs in a thread). In
autocommit mode with no transaction open, the push commits at once, as any statement would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from urllib.parse import parse_qsl, unquote_plus

import psycopg

from conveyor.drivers import safe_url
from conveyor.drivers.base import Capabilities
from conveyor.drivers.sql.adapter import Row
from conveyor.drivers.sql.deadline import TIMEOUT
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.postgres.connection import PostgresConnection
from conveyor.drivers.sql.postgres.copy import copy_heads, copy_text
from conveyor.drivers.sql.postgres.listener import Listener
from conveyor.drivers.sql.postgres.statistics import Statistics
from conveyor.drivers.sql.postgres.target import POOL_MODE, Target, pool_mode
from conveyor.drivers.sql.postgres.threads import PostgresThreadConnections
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.rows import any_unique, job_ids, job_queues, json_text, push_item
from conveyor.drivers.sql.single import push_params
from conveyor.drivers.sql.url import (
    OPTIONS,
    SqlOptions,
    check_pool_size,
    check_timeout,
    sql_options,
)
from conveyor.errors import ConfigError, DriverError
from conveyor.job import JobInfo, NewJob, joined

__all__ = ["COPY_FROM", "POOL_SIZE", "PostgresDriver"]

#: Most connections one driver's pool opens (the LISTEN connection comes on top).
POOL_SIZE = 10

#: Jobs in a push_many (without unique keys), or in a streamed push's first part, from which
#: they are COPYed (see _push_plain): fewer cost less in push_many's one statement.
COPY_FROM = 100

_SCHEMES = ("postgresql", "postgres")

_DURABILITY = Query(
    "durability",
    "The settings a push commits with.",
    "SELECT current_setting('fsync') AS fsync,"
    " current_setting('synchronous_commit') AS synchronous_commit",
)


class _Unlike(Exception):
    """A later part of a streamed push that its COPY cannot take as it comes: one with a
    unique key (a unique push reads before it writes), or with a queue the first part has not
    (push_many_clock notified the first part's)."""


class PostgresDriver(SqlDriver):
    """Jobs in PostgreSQL: durable, shared by any number of processes and machines, woken by
    LISTEN/NOTIFY, and able to push inside the caller's own transaction.

    `conninfo` is a postgresql:// URL or a libpq "key=value" string, as psycopg takes it (use
    `from_url` for a URL that carries conveyor's own options). `prefix` starts every table
    name, so several sets of queues can share one database. `migrate=False` never changes the
    schema: opening checks that it is up to date and raises ConfigError if not. `timeout` is
    the deadline, in seconds, of every call (to get a connection, then to run): past it the
    connection is discarded and the call fails with BackendUnavailableError. `pool_mode` is
    "transaction" behind a pooler in transaction mode (see the module docstring).
    """

    kind = "postgres"
    capabilities = Capabilities(
        notify=True,
        durable=True,
        shared=True,
        transactional=True,
        control=True,
        schedules=True,
        streamed_push=True,
        thread_push=True,
    )

    def __init__(
        self,
        conninfo: str = "",
        *,
        prefix: str = "conveyor_",
        migrate: bool = True,
        pool_size: int = POOL_SIZE,
        timeout: float = TIMEOUT,
        pool_mode: str = "session",
    ) -> None:
        check_pool_size(pool_size)
        check_timeout(timeout)
        target = Target(conninfo, timeout=timeout, pool_size=pool_size, pool_mode=pool_mode)
        connection = PostgresConnection(target, pool_size=pool_size, jobs=f"{prefix}jobs")
        super().__init__(connection, __name__, prefix=prefix, migrate=migrate)
        self.target = target
        # The channel is named after the jobs table, so each prefix has its own.
        self._listener = Listener(target, f"{prefix}jobs")
        self._statistics = Statistics(self._fetch, self._execute)
        self._threads = PostgresThreadConnections(target, pool_size)

    @classmethod
    def from_url(cls, url: str) -> PostgresDriver:
        """A driver for `postgresql://user:password@host:port/database?options`; see the
        module docstring for the options."""
        conninfo, options, pool_mode = _parse_url(url)
        return cls(conninfo, **options, pool_mode=pool_mode)

    def _location(self) -> str:
        return self.target.conninfo or self.target.shown

    def push_in_thread(self, job: NewJob) -> str | None:
        """`push` from a plain thread (the blocking facade's): the same statement, its NOTIFY
        in it, on a synchronous connection of the driver's own (drivers/sql/threads.py),
        without the hops to the event loop's thread and back. None for a job with a unique
        key (that takes a transaction), before the driver was opened, on Windows, or with
        every such connection busy."""
        query = self._thread_push(job)
        if query is None or not PostgresThreadConnections.able():
            return None
        return job.id if self._threads.execute(query, push_params(job)) else None

    async def close(self) -> None:
        """Stop listening and close the pools; jobs stay stored."""
        self._threads.close()
        await self._listener.stop()
        await self._statistics.close()
        await super().close()

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        # Listen before the first reserve, and forget the queues' notifications before the
        # statement runs: a job committed from here on is either taken by this reserve or
        # wakes the next `wait`. A reserve that finds nothing therefore never sleeps through
        # a push. (If it cannot listen, the reserve goes ahead all the same: `wait` polls.)
        await self._listener.start()
        self._listener.clear(queues)
        jobs = await super().reserve(queues, limit, lease, worker)
        self._statistics.reserved(len(jobs), limit)
        return jobs

    async def push_stream(self, parts: AsyncIterable[Sequence[NewJob]]) -> list[str]:
        """Each part COPYed as it comes, all in one transaction (`_copy`): the server stores a
        part's rows while the next one is made. A stream whose first part is under COPY_FROM
        jobs or holds a unique key, or with a later part unlike the first, is gathered and
        pushed as push_many pushes it."""
        stream = aiter(parts)
        first = await anext(stream, None)
        if first is None:
            return []
        if len(first) < COPY_FROM or any_unique(first):
            return await self.push_many(joined([first, *[part async for part in stream]]))
        kept = [first]
        try:
            await self._copy(kept, stream)
        except _Unlike:
            return await self.push_many(joined(kept + [part async for part in stream]))
        self._pushed.notify()
        return [job_id for part in kept for job_id in job_ids(part)]

    async def _push_plain(self, jobs: Sequence[NewJob]) -> None:
        """Jobs without unique keys, on the pool: COPYed straight into the jobs table, in a
        transaction that first reads the server's clock for them and notifies their queues
        (push_many_clock). A batch under COPY_FROM jobs takes push_many's one statement: the
        four round trips here would cost it more than the JSON."""
        if len(jobs) < COPY_FROM:
            return await super()._push_plain(jobs)
        await self._copy([jobs], None)

    async def _copy(
        self, kept: list[Sequence[NewJob]], more: AsyncIterator[Sequence[NewJob]] | None
    ) -> None:
        """COPY the jobs of kept[0], then of each part `more` yields (added to `kept` as it
        comes), in one transaction. A later part unlike the first rolls it back: _Unlike."""
        conn = await self._ready()
        assert isinstance(conn, PostgresConnection)
        queues = job_queues(kept[0])

        async def texts(row: Row) -> AsyncIterator[str]:
            part: Sequence[NewJob] | None = kept[0]
            while part is not None:
                yield copy_text(part, copy_heads(part), row["now"])
                part = None if more is None else await anext(more, None)
                if part is not None:
                    kept.append(part)
                    if any_unique(part) or not set(job_queues(part)) <= set(queues):
                        raise _Unlike

        queries = self._queries
        try:
            await conn.copy_text(
                queries["push_many_clock"],
                {"queues": json_text(queues)},
                queries["push_many_copy_jobs"],
                texts,
            )
        except DriverError as error:
            # An id stored already (the batch pushed again after a lost reply) rolled the COPY
            # back whole; the staged insert skips such ids, as push_many does.
            if not isinstance(error.__cause__, psycopg.errors.UniqueViolation):
                raise
            rest = [] if more is None else [part async for part in more]
            await self._push_staged(conn, joined(kept + rest))

    async def _push_staged(self, conn: PostgresConnection, jobs: Sequence[NewJob]) -> None:
        """COPY into a staging table, then push_many's insert from it (push_many_staged), in
        one transaction: the insert skips ids stored already and notifies each queue once."""
        rows = [push_item(job) for job in jobs]
        queries = self._queries
        await conn.copy_in(
            queries["push_many_stage"], queries["push_many_copy"], rows, queries["push_many_staged"]
        )

    def raced_on_unique(self, error: DriverError) -> bool:
        return isinstance(error.__cause__, psycopg.errors.UniqueViolation)

    def no_such_table(self, error: DriverError) -> bool:
        return isinstance(error.__cause__, psycopg.errors.UndefinedTable)

    async def durability(self) -> str:
        """`synchronous_commit=<value>` as a pooled session has it, which pushes commit with
        (they never change it), or `fsync=off` when the server does not sync at all."""
        [row] = await (await self._ready()).fetch(_DURABILITY, {})
        if row["fsync"] == "off":
            return "fsync=off"
        return f"synchronous_commit={row['synchronous_commit']}"

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return as soon as a job is pushed (released, retried) to one of `queues` by any
        process, or after `timeout` seconds; while it cannot listen, just wait (polling)."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # lands just as what it waits for finishes, and a stopping worker then hangs here.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if await self._listener.start():
                    await self._listener.wait(queues)
                else:
                    await super().wait(queues, timeout)  # this instance's own pushes wake it


def _parse_url(url: str) -> tuple[str, SqlOptions, str]:
    """(conninfo for libpq, conveyor's options, the pool mode) from a postgresql:// URL."""
    scheme, separator, rest = url.partition("://")
    if scheme.lower() not in _SCHEMES or not separator:
        raise ConfigError(
            f"{safe_url(url)!r} is not a PostgreSQL URL: write"
            " postgresql://user:password@host:5432/database"
        )
    base, query = _split_query(rest)
    pairs = parse_qsl(query, keep_blank_values=True)
    # libpq's parameters pass on as written: re-encoding them could move a password's
    # characters into the query and out of the reach of the masking of messages.
    ours = (*OPTIONS, POOL_MODE)
    libpq = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) not in ours]
    conninfo = f"{scheme}://{base}" + (f"?{'&'.join(libpq)}" if libpq else "")
    return conninfo, sql_options(url, pairs), pool_mode(url, pairs)


def _split_query(rest: str) -> tuple[str, str]:
    """(what comes before the query, the query) of a URL after its `scheme://`, the userinfo
    read as libpq reads it (up to the first `@` that comes before any `/`), so that a `?` in
    a password does not start the query."""
    ends = [index for index in (rest.find("@"), rest.find("/")) if index >= 0]
    start = min(ends) + 1 if ends and rest[min(ends)] == "@" else 0
    mark = rest.find("?", start)
    return (rest, "") if mark < 0 else (rest[:mark], rest[mark + 1 :])
