"""The MySQL dialect (MariaDB too): jobs in a MySQL or MariaDB database, shared by every process
that reaches it.

    from conveyor.drivers.sql.mysql import MysqlDriver

    driver = MysqlDriver("mysql://app:secret@db.internal:3306/app")          # or
    driver = MysqlDriver.from_url("mariadb://app@db/app?prefix=mail_&pool_size=20")

Needs `pip install "conveyor[mysql]"` (the asyncmy client) and MySQL 8.0.21+ or MariaDB 10.8+.
Statements run on a pool of up to `pool_size` connections. Tables are created on first use
(`migrate=False` refuses to run on an out-of-date schema instead; `conveyor migrate` brings it
up to date), every name starting with `prefix`.

Workers reserve with SELECT ... FOR UPDATE SKIP LOCKED, so any number of them, in any number of
processes, share a queue without waiting for each other and never take the same job. MySQL
has no LISTEN/NOTIFY, so an idle worker looks for due jobs with a cheap probe (two index
dives per queue, no lock), on the server where MariaDB allows, every millisecond after recent
work and every 40 ms when idle (see `wakeup`): it starts a job pushed from another process
within a few milliseconds while work flows and within tens of milliseconds when idle, for
under 1% of a core. A push through the same driver instance wakes it at once, and so does
one from another process on the same machine, which rings the waiting drivers' doorbells
after its commit (drivers/doorbell.py: a Unix datagram socket each). Deadlocks
are retried inside the driver, a row lock waited for past 0.8 of `timeout` is a
BackendUnavailableError saying so, and a lost connection is replaced, so after a server
restart the driver carries on.

URL options, after `?`: `prefix` (default conveyor_), `migrate` (true or false), `pool_size`
(default 10), `timeout` (seconds, default 10: how long a call may wait for a connection, and
then for its statements, before its connection counts as gone silent and is discarded),
`connect_timeout` (seconds, default 10, for the TCP connect), `unix_socket` (a socket path
to connect through instead of TCP), and TLS's `ssl_mode`, `ssl_ca`, `ssl_cert`, `ssl_key`
(mysql/tls.py). Without a user the URL means the current login name, as
the mysql client does; without a port, 3306. TCP keepalives find a silent idle connection
within 11 s, and on MariaDB the server ends a transaction left idle past `timeout` (its client
was cut off), so its row locks are not held for hours; see docs/reliability.md.

Transactional push: give `connection=` your own asyncmy connection (to the driver's
database), and the job is written in your transaction. It exists if and only if you commit:

    conn = await asyncmy.connect(host="db.internal", user="app", password=..., db="app")
    await conn.begin()
    async with conn.cursor() as cursor:
        await cursor.execute("INSERT INTO orders (id, total) VALUES (%s, %s)", (order, total))
    await registry.push("mail", "receipt", Receipt(order), connection=conn)
    await conn.commit()  # the order and its receipt job together; rollback() drops both

Code without an event loop (Django, Flask) passes its PyMySQL or mysqlclient connection to
`registry.blocking.push` or `push_many` instead: each statement runs in the calling thread, on
that connection, in its transaction (Django: `django.db.connection.connection`, inside
`transaction.atomic()`).

Until you commit, a push of the same unique key from elsewhere waits for your transaction, and
so does the worker settling the job your push found holding that key: keep such transactions
short. Without a transaction open (autocommit), the push commits at once, as any statement
would (a push_many of more than one statement, a statement at a time). With SQLAlchemy
(`mysql+asyncmy://`), pass the asyncmy connection underneath yours:
`(await sa_connection.get_raw_connection()).driver_connection`.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from conveyor.drivers import Location, safe_url
from conveyor.drivers.base import Capabilities
from conveyor.drivers.doorbell import Doorbell, Ringer, RingingWakeup, private_folder
from conveyor.drivers.sql.adapter import Params, Row
from conveyor.drivers.sql.deadline import TIMEOUT
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.mysql import tls
from conveyor.drivers.sql.mysql.connection import MysqlConnection
from conveyor.drivers.sql.mysql.target import DUPLICATE_KEY, NO_SUCH_TABLE, Target, error_code
from conveyor.drivers.sql.mysql.threads import MysqlThreadConnections
from conveyor.drivers.sql.mysql.wakeup import Wakeup
from conveyor.drivers.sql.rows import json_text
from conveyor.drivers.sql.single import push_params
from conveyor.drivers.sql.url import (
    OPTIONS,
    SqlOptions,
    check_pool_size,
    check_timeout,
    sql_options,
)
from conveyor.errors import ConfigError, DriverError
from conveyor.job import JobInfo, NewJob

#: How many of the queues reserves took jobs from lately a driver keeps, to put them first.
BUSY_KEPT = 64
#: The queues the reserve statement gives a subquery (an index scan) of their own each.
OWN_SCANS = 8

__all__ = ["CONNECT_TIMEOUT", "POOL_SIZE", "MysqlDriver"]

#: Most connections one driver's pool opens.
POOL_SIZE = 10

#: Seconds to wait for a new connection before BackendUnavailableError.
CONNECT_TIMEOUT = 10.0

_SCHEMES = ("mysql", "mariadb")
_URL_HELP = "write mysql://user:password@host:3306/database"
_CONNECTION_OPTIONS = ("connect_timeout", "unix_socket", *tls.OPTIONS)
#: The longest connect_timeout asyncmy and PyMySQL take (past it, a ValueError as they connect).
_MOST_SECONDS = 31_536_000


class MysqlDriver(SqlDriver):
    """Jobs in MySQL or MariaDB: durable, shared by any number of processes and machines, and
    able to push inside the caller's own transaction.

    `url` is a mysql:// (or mariadb://) URL naming the server, the login and the database,
    with only connection options after `?` (`connect_timeout`, `unix_socket`, `ssl_*`); use
    `from_url` for a URL that carries conveyor's own options too. `prefix` starts every table
    name, so several sets of queues can share one database. `migrate=False` never changes the
    schema: opening checks that it is up to date and raises ConfigError if not. `timeout` is
    the deadline, in seconds, of every call (to get a connection, then to run): past it the
    connection is discarded and the call fails with BackendUnavailableError.
    """

    kind = "mysql"
    capabilities = Capabilities(
        notify=True,
        durable=True,
        shared=True,
        transactional=True,
        control=True,
        schedules=True,
        thread_push=True,
    )
    #: 2 Mi characters of items (payloads, ids, names, keys, metas), 8 MiB at most as UTF-8
    #: within the batch's JSON, half of MariaDB's default max_allowed_packet (16 MiB; MySQL's
    #: is 64 MiB): a statement past it is refused.
    push_budget = 2 * 1024 * 1024

    def __init__(
        self,
        url: str = "mysql://localhost:3306/conveyor",
        *,
        prefix: str = "conveyor_",
        migrate: bool = True,
        pool_size: int = POOL_SIZE,
        timeout: float = TIMEOUT,
    ) -> None:
        check_pool_size(pool_size)
        check_timeout(timeout)
        target, options = _parse_url(url, _CONNECTION_OPTIONS + OPTIONS)
        if options:
            raise ConfigError(
                f"{safe_url(url)!r}: {', '.join(options)} is read by MysqlDriver.from_url();"
                " pass it to MysqlDriver() as a keyword instead"
            )
        target = dataclasses.replace(target, timeout=timeout, pool_size=pool_size)
        super().__init__(
            MysqlConnection(target, pool_size=pool_size), __name__, prefix=prefix, migrate=migrate
        )
        self.target = target
        place = target.unix_socket or f"{target.host.lower()}:{target.port}"
        folder = private_folder(f"mysql://{place}/{target.database}?prefix={prefix}")
        self._doorbell = Doorbell(folder)
        self._ringer = Ringer(folder)
        self._pushed = self._rung = RingingWakeup(self._ringer)
        self._wakeup = Wakeup(self._fetch, self._pushed)
        self._threads = MysqlThreadConnections(target, pool_size)
        #: Whether this instance's last reserve took as many jobs as it asked for.
        self._backlog = False
        #: The queues its reserves took jobs from lately, the latest first (see `reserve`).
        self._busy: dict[str, None] = {}

    def _location(self) -> str:
        return self.target.shown

    @classmethod
    def from_url(cls, url: str) -> MysqlDriver:
        """A driver for `mysql://user:password@host:port/database?options` (or mariadb://);
        see the module docstring for the options."""
        _, options = _parse_url(url, _CONNECTION_OPTIONS + OPTIONS)
        connection_url = _without(url, OPTIONS)
        return cls(connection_url, **options)

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        """As every SQL dialect's, but the queues its reserves took jobs from lately go
        first: the reserve block has a subquery of its own for each of the first eight
        queues, an index scan that stops after `limit` jobs, and one for the rest together,
        which sorts all their due jobs (see queries.sql). So a backlog in at most eight of many
        queues costs what it would on eight; the order of the jobs taken is the same."""
        wanted = set(queues)  # a list of 300, searched for each of 64 busy queues: 150 µs
        busy = [queue for queue in self._busy if queue in wanted]
        jobs = await super().reserve(
            [*busy, *(q for q in queues if q not in self._busy)], limit, lease, worker
        )
        self._wakeup.reserved(queues, bool(jobs))
        self._backlog = len(jobs) >= limit
        taken = dict.fromkeys(job.queue for job in jobs)
        self._busy = dict.fromkeys([*taken, *(q for q in self._busy if q not in taken)][:BUSY_KEPT])
        return jobs

    async def _reserve_rows(self, params: Params) -> list[Row]:
        """The reserve block, at REPEATABLE READ while a backlog lasts (the last reserve took
        as many jobs as it asked for), else at the session's READ COMMITTED.

        At READ COMMITTED, the block's locking read of the jobs_ready index costs MariaDB's
        server three times the CPU, 31-38 µs a job against 8-12: it steps over the index
        entries earlier reserves left for purge (docs/benchmarks.md). But its next-key locks
        block inserts into the gaps it scanned: with a queue kept near empty, reserves that
        reach its end lock the gap every push and every other reserve inserts into, and four
        workers met 200 deadlocks in 20 s. Behind a backlog a reserve stops well before the
        end, so the first short batch switches back."""
        params = _spread(params)
        if not self._backlog:
            return await super()._reserve_rows(params)
        connection, query = await self._ready(), self._queries["reserve"]
        assert isinstance(connection, MysqlConnection)
        return (await connection.in_one_trip(query, params, "REPEATABLE READ"))[0]

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when this instance pushed, when a job may be due in `queues` (pushed by
        another process, say: see `wakeup`), or after `timeout` seconds. A push from another
        process on this machine rings the doorbell (drivers/doorbell.py) and ends it at once."""
        self._doorbell.open(self._rung.heard)
        self._rung.waiting(queues)
        await self._wakeup.wait(queues, timeout)

    def push_in_thread(self, job: NewJob) -> str | None:
        """`push` from a plain thread (the blocking facade's): the same statement, on a PyMySQL
        connection of the driver's own (threads.py), without the hops to the event loop's
        thread and back; then the same wake-ups. None for a job with a unique key (that takes
        a transaction), before the driver was opened, or with every such connection busy."""
        query = self._thread_push(job)
        if query is None or not self._threads.execute(query, push_params(job)):
            return None
        self._rung.pushed_in_thread((job.queue,))
        return job.id

    def raced_on_unique(self, error: DriverError) -> bool:
        return error.__cause__ is not None and error_code(error.__cause__) == DUPLICATE_KEY

    def no_such_table(self, error: DriverError) -> bool:
        return error.__cause__ is not None and error_code(error.__cause__) == NO_SUCH_TABLE

    async def close(self) -> None:
        """Stop listening for the doorbell and close the pools; jobs stay stored."""
        self._doorbell.close()
        self._ringer.close()
        self._threads.close()
        await super().close()

    async def durability(self) -> str:
        """`innodb_flush_log_at_trx_commit=<n>`, and at 1 whether the binary log is off or
        synced (`, binlog off`, `, sync_binlog=<n>`): the server's settings, which pushes
        commit under unchanged."""
        [row] = await self._fetch("durability", {})
        flush = f"innodb_flush_log_at_trx_commit={row['flush_log_at_trx_commit']}"
        if row["flush_log_at_trx_commit"] != 1:
            return flush
        if not row["log_bin"]:
            return f"{flush}, binlog off"
        return f"{flush}, sync_binlog={row['sync_binlog']}"


def _parse_url(url: str, allowed: tuple[str, ...]) -> tuple[Target, SqlOptions]:
    """The server from a mysql:// URL, and conveyor's options found in it; ConfigError naming
    the fix for anything else."""
    location = Location.parse(url)
    shown = location.shown
    scheme, separator, _ = url.partition("://")
    if scheme.lower() not in _SCHEMES or not separator:
        raise ConfigError(f"{shown!r} is not a MySQL URL: {_URL_HELP}")
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as error:
        detail = location.scrub(str(error))
        raise ConfigError(f"{shown!r} is not a valid URL ({detail}): {_URL_HELP}") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError(f"{shown!r} names no database (or more than one): {_URL_HELP}")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    location.check_options(sorted({key for key, _ in pairs}), allowed, ", ".join(allowed))
    query = dict(pairs)
    unix_socket = query.get("unix_socket") or None
    context, mode = tls.tls_context(location, query, unix_socket)
    target = Target(
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username) if parts.username else getpass.getuser(),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=unix_socket,
        connect_timeout=_seconds(location, query, "connect_timeout", CONNECT_TIMEOUT),
        location=location,
        ssl=context,
        ssl_mode=mode,
    )
    return target, sql_options(url, pairs)


def _seconds(location: Location, query: dict[str, str], key: str, default: float) -> float:
    """A positive number of seconds up to a year (the most the clients take), or `default`
    when absent."""
    if key not in query:
        return default
    try:
        value = float(query[key])
    except ValueError:
        value = 0
    if not 0 < value <= _MOST_SECONDS:  # nan too
        raise ConfigError(
            f"{location.shown!r}: {key}={location.mask(query[key])!r} is not a positive number"
            f" of seconds up to {_MOST_SECONDS} (a year); write {key}={default:g}"
        )
    return value


def _without(url: str, keys: tuple[str, ...]) -> str:
    """`url` with the query options named in `keys` taken out, the rest kept as written."""
    base, _, query = url.partition("?")
    kept = [pair for pair in query.split("&") if pair and pair.split("=", 1)[0] not in keys]
    return base + ("?" + "&".join(kept) if kept else "")


def _spread(params: Params) -> Params:
    """The reserve's parameters as the MySQL statement takes them: the first OWN_SCANS queues
    one by one (None past the last), the rest as a JSON array, so that each name is sent
    once (see queries.sql)."""
    queues = json.loads(str(params["queues"]))
    spread = {key: value for key, value in params.items() if key != "queues"}
    spread.update((f"queue{n}", queues[n] if n < len(queues) else None) for n in range(OWN_SCANS))
    spread.update(rest=json_text(queues[OWN_SCANS:]), more=int(len(queues) > OWN_SCANS))
    return spread
