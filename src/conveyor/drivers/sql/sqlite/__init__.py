"""The SQLite dialect: jobs in one file, shared by every process on this machine that opens it.

    from conveyor.drivers.sql.sqlite import SqliteDriver

    driver = SqliteDriver("jobs.db")                      # or
    driver = SqliteDriver.from_url("sqlite:///jobs.db")   # sqlite:////abs/path/jobs.db

The file runs in WAL mode, so readers never wait for the one writer; writers queue for up to
`BUSY_TIMEOUT` seconds. Each driver keeps one sqlite3 connection and uses it from one dedicated
thread, so the event loop never blocks on the disk, and every driver method is one hop to that
thread.

SQLite cannot notify other processes, so conveyor does: a waiting driver binds a Unix datagram
socket beside the file, and a push, release or retry rings every socket there after its commit
(drivers/doorbell.py), so an idle worker starts a job pushed by another process at once. As the
fallback, SQLite can tell cheaply that another connection has written: `PRAGMA data_version`
changes when one commits. While a `wait` is in progress, a watcher thread with a connection of
its own looks (a read of shared memory, not of the file) at once, then every WATCH_BUSY seconds
right after a reserve that found jobs, less often as the quiet lasts, up to every WATCH_IDLE
seconds, and wakes `wait` when it changes (watcher.py). A push through the same driver
instance wakes it at once.

Durability follows postgres's line. Writes run with `PRAGMA synchronous = FULL` (the commit
returns once the WAL is synced, so a job whose push returned survives a power cut), except
RELAXED_STATEMENTS (reserve, settles, stats) at NORMAL, where a power cut may roll back the
last commits: that only makes a job run again, and the next FULL commit syncs them too. The
level cannot change inside a transaction, so it is set before each statement or BEGIN.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote

from conveyor.drivers import Location
from conveyor.drivers.base import Capabilities
from conveyor.drivers.doorbell import Doorbell, Ringer, RingingWakeup, folder_of
from conveyor.drivers.sql.adapter import Params, Row
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.single import push_params
from conveyor.drivers.sql.sqlite.backup import copy_database, put_back
from conveyor.drivers.sql.sqlite.connection import (
    BUSY_TIMEOUT,
    DURABLE,
    RELAXED,
    RELAXED_STATEMENTS,
    SqliteConnection,
)
from conveyor.drivers.sql.sqlite.watcher import Watcher
from conveyor.drivers.sql.url import SqlOptions, sql_options
from conveyor.errors import ConfigError, DriverError
from conveyor.job import NewJob

__all__ = [
    "BUSY_TIMEOUT",
    "DURABLE",
    "RELAXED",
    "RELAXED_STATEMENTS",
    "WATCH_BUSY",
    "WATCH_IDLE",
    "SqliteConnection",
    "SqliteDriver",
]

#: Seconds between two looks at whether another connection has written, right after a
#: reserve that found jobs; the interval widens with the quiet (a tenth of it) up to WATCH_IDLE.
WATCH_BUSY = 0.002
WATCH_IDLE = 0.025

#: The options of conveyor's own that a sqlite URL takes (pool_size and timeout: it has no pool).
_OPTIONS = ("prefix", "migrate")

_URL_HELP = "write sqlite:///relative/path.db or sqlite:////absolute/path.db"

log = logging.getLogger("conveyor.sql")


class SqliteDriver(SqlDriver):
    """Jobs in an SQLite file: durable, and shared by the processes of one machine.

    `path` is created on first use, with its tables; the folder must exist. `prefix` starts
    every table name, so several sets of queues can share one file. `migrate=False` never
    changes the schema: opening checks it is up to date instead (`conveyor migrate` updates it).
    """

    kind = "sqlite"
    capabilities = Capabilities(
        notify=True,
        durable=True,
        shared=True,
        control=True,
        schedules=True,
        thread_push=True,
        backup=True,
    )
    #: A push waiting for the write lock sleeps up to 100 ms between tries (SQLite's busy
    #: handler): a shorter gap between the batches of prune (or of retry_failed and purge of
    #: a whole queue) would let none of them in.
    batch_pause = 0.1

    def __init__(
        self,
        path: str | os.PathLike[str] = "conveyor.db",
        *,
        prefix: str = "conveyor_",
        migrate: bool = True,
    ) -> None:
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file:"):
            raise ConfigError(
                f"SQLite path {text!r} is not a file: give a file path, or use the memory"
                " driver (memory://, MemoryDriver) for jobs kept in memory"
            )
        # Absolute now, so a later chdir cannot move the database under a lazy open.
        self.path = os.path.abspath(text)
        self._relative = not os.path.isabs(text)
        connection = SqliteConnection(self.path)
        super().__init__(connection, __name__, prefix=prefix, migrate=migrate)
        self._watcher = Watcher(self.path, BUSY_TIMEOUT, self._watch_interval)
        self._doorbell = Doorbell(folder_of(self.path))
        self._ringer = Ringer(folder_of(self.path))
        self._pushed = self._wakeup = RingingWakeup(self._ringer)
        self._last_work = -math.inf  # time.monotonic() of the last reserve that found jobs
        # The watcher's count of commits seen as the last reserve began: a count that has
        # moved on since means someone (another process, perhaps) wrote after it.
        self._seen = 0

    @classmethod
    def from_url(cls, url: str) -> SqliteDriver:
        """A driver for `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`;
        `?prefix=name_` sets the table prefix, `?migrate=false` leaves the schema alone."""
        path, options = _parse_url(url)
        return cls(
            path, prefix=options.get("prefix", "conveyor_"), migrate=options.get("migrate", True)
        )

    def _location(self) -> str:
        return self.path

    def unmade(self) -> str | None:
        if os.path.exists(self.path):
            return None
        return (
            f"no SQLite database at {self.path} yet: nothing was pushed there (a relative"
            " sqlite:/// path starts from the working directory)"
        )

    async def open(self) -> None:
        """As SqlDriver's; with `migrate=False`, a file that does not exist is an error: not
        made empty (beside the -wal, -shm files and the doorbell's folder), which with a
        relative path from another working directory left a stray database behind and said
        only that the schema was at version 0. A relative path that names no file yet is
        logged as its file is made: started from another working directory, a worker (or
        `conveyor list`) made an empty database of its own there without a word, and waited
        for jobs pushed to the other file, or showed every queue empty."""
        new = not os.path.exists(self.path)
        if new and not self.migrate_on_open:
            raise ConfigError(
                f"no SQLite database at {self.path!r}, and migrate=false keeps conveyor from"
                " creating one: check the path (a relative one starts from the working"
                " directory), or run `conveyor migrate` to create it there"
            )
        await super().open()
        if new and self._relative:
            log.info(
                "created the SQLite database %s: its path is relative, so it starts from the"
                " working directory; every process using these jobs must start from the same"
                " one (or give an absolute path: sqlite:////absolute/path.db)",
                self.path,
            )

    async def _reserve_rows(self, params: Params) -> list[Row]:
        # Noted before the statement runs: a job another process commits after this is
        # either reserved by it, or moves the count on and so ends the next `wait`.
        await self._ready()  # our own migrations are not news to the watcher
        self._listen()
        self._seen = self._watcher.commits
        rows = await super()._reserve_rows(params)
        if rows:
            self._last_work = time.monotonic()
        return rows

    def _listen(self) -> None:
        """Hear of commits by other connections: their doorbell at once, the watcher's look at
        the file as the fallback (drivers/doorbell.py)."""
        self._doorbell.open(self._wakeup.heard)
        self._watcher.start(self._wakeup.heard)

    def _watch_interval(self) -> float:
        """A tenth of the quiet since the last reserve that found jobs, between the bounds."""
        return min(WATCH_IDLE, max(WATCH_BUSY, (time.monotonic() - self._last_work) / 10))

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when this instance pushed, when another connection has committed since the
        last reserve began (a push from another process, perhaps), or after `timeout`."""
        self._listen()
        self._wakeup.waiting(queues)
        if self._watcher.commits != self._seen:
            return
        with self._watcher.looking():
            await self._pushed.wait(timeout)

    def push_in_thread(self, job: NewJob) -> str | None:
        """`push` from a plain thread (the blocking facade's), on the thread's own connection:
        the same statement and durability, without the hops to the event loop's thread and to
        the database thread. None for a job with a unique key (that takes a transaction on the
        driver's connection) or before the driver was opened."""
        query = self._thread_push(job)
        if query is None:
            return None
        assert isinstance(self._conn, SqliteConnection)
        self._conn.execute_in_thread(query, push_params(job))
        self._wakeup.pushed_in_thread((job.queue,))
        return job.id

    def no_such_table(self, error: DriverError) -> bool:
        cause = error.__cause__
        return isinstance(cause, sqlite3.OperationalError) and str(cause).startswith(
            "no such table"
        )

    async def durability(self) -> str:
        """The level pushes commit at: `synchronous=FULL`."""
        return f"synchronous={DURABLE}"

    async def backup(self, path: str) -> None:
        """A copy of the database by SQLite's online backup API, in a thread of its own with a
        connection of its own (backup.py); an existing `path` is refused."""
        await asyncio.to_thread(copy_database, self.path, os.path.abspath(path), BUSY_TIMEOUT)

    async def restore(self, path: str) -> None:
        """The backup at `path` written into the database through SQLite, in one transaction
        (backup.py): a -wal file a killed process left is no harm, as it is to a copied file."""
        jobs = f"{self.prefix}jobs"
        await asyncio.to_thread(put_back, os.path.abspath(path), self.path, jobs, BUSY_TIMEOUT)

    async def close(self) -> None:
        """Stop watching and close the connection, the watcher's too, before returning: the
        last connection to close writes the log into the file, so one closing later wrote an
        old log into a backup copied over the file meanwhile. Jobs stay stored."""
        watching = self._watcher.stop()
        self._doorbell.close()
        self._ringer.close()
        await super().close()
        if watching is not None:
            await asyncio.to_thread(watching.join, BUSY_TIMEOUT)


def _parse_url(url: str) -> tuple[str, SqlOptions]:
    """(path, options) from a sqlite URL; ConfigError naming the fix for anything else."""
    scheme, separator, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not separator:
        raise ConfigError(f"{url!r} is not an SQLite URL: {_URL_HELP}")
    rest, _, query = rest.partition("?")
    if rest.strip("/") == ":memory:":
        raise ConfigError(
            f"{url!r}: an in-memory SQLite database would be private to one connection; use"
            " the memory driver (memory://) instead"
        )
    if rest and not rest.startswith("/"):
        host = rest.partition("/")[0]
        raise ConfigError(
            f"{url!r} names a host ({host!r}), but SQLite URLs have none: {_URL_HELP}"
        )
    path = unquote(rest[1:])
    if not path:
        raise ConfigError(f"{url!r} names no file: {_URL_HELP}")
    pairs = parse_qsl(query, keep_blank_values=True)
    Location.parse(url).check_options(
        sorted({key for key, _ in pairs}), _OPTIONS, "prefix, migrate"
    )
    return path, sql_options(url, pairs)
