"""The SQLite dialect: jobs in one file, shared by every process on this machine that opens it.

    from conveyor.drivers.sql.sqlite import SqliteDriver

    driver = SqliteDriver("jobs.db")                      # or
    driver = SqliteDriver.from_url("sqlite:///jobs.db")   # sqlite:////abs/path/jobs.db

The file runs in WAL mode, so readers never wait for the one writer; writers queue for up to
`BUSY_TIMEOUT` seconds. Each driver keeps one sqlite3 connection and uses it from one dedicated
thread, so the event loop never blocks on the disk, and every driver method is one hop to that
thread.

SQLite cannot notify other processes, but it can tell cheaply that one has written:
`PRAGMA data_version` changes when another connection commits. A watcher thread with a
connection of its own looks (a read of shared memory, not of the file) every WATCH_BUSY
seconds right after a reserve that found jobs, less often as the quiet lasts, up to every
WATCH_IDLE seconds, and wakes `wait` when it changes: an idle worker starts a job pushed by
another process within milliseconds, for a fraction of a percent of a core. A push through
the same driver instance wakes it at once.

Durability follows postgres's line. Writes run with `PRAGMA synchronous = FULL` (the commit
returns once the WAL is synced, so a job whose push returned survives a power cut), except
RELAXED_STATEMENTS (reserve, settles, stats) at NORMAL, where a power cut may roll back the
last commits: that only makes a job run again, and the next FULL commit syncs them too. The
level cannot change inside a transaction, so it is set before each statement or BEGIN.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from conveyor.drivers.base import Capabilities
from conveyor.drivers.record import decode_text
from conveyor.drivers.sql.adapter import Params, Row, SqlTransaction
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.sqlite.thread import DatabaseThread
from conveyor.drivers.sql.sqlite.watcher import Watcher
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError

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

T = TypeVar("T")

#: Seconds a statement waits for another process's write transaction before giving up.
BUSY_TIMEOUT = 30.0

#: Seconds between two looks at whether another connection has written, right after a
#: reserve that found jobs; the interval widens with the quiet (a tenth of it) up to WATCH_IDLE.
WATCH_BUSY = 0.002
WATCH_IDLE = 0.025

#: The synchronous level of everything a caller must find again after a power cut: pushes.
DURABLE = "FULL"

#: The level of the statements whose loss only makes a job run again (see the module docstring).
RELAXED = "NORMAL"

#: The statements run at RELAXED; every other write runs at DURABLE.
RELAXED_STATEMENTS = frozenset(
    {"reserve", "renew", "ack", "release", "fail", "record_stats", "beat", "beat_stopping"}
)

#: Statements that write nothing: they run at whatever level is set.
_READS = frozenset(
    {
        "schema_version",
        "counts",
        "list_jobs",
        "get",
        "worker_stats",
        "alive",
        "cancelling",
        "paused",
        "ticks",
    }
)

_URL_HELP = "write sqlite:///relative/path.db or sqlite:////absolute/path.db"


class SqliteDriver(SqlDriver):
    """Jobs in an SQLite file: durable, and shared by the processes of one machine.

    `path` is created on first use, with its tables; the folder must exist. `prefix` starts
    every table name, so several sets of queues can share one file.
    """

    kind = "sqlite"
    capabilities = Capabilities(
        notify=True, durable=True, shared=True, control=True, schedules=True
    )

    def __init__(
        self, path: str | os.PathLike[str] = "conveyor.db", *, prefix: str = "conveyor_"
    ) -> None:
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file:"):
            raise ConfigError(
                f"SQLite path {text!r} is not a file: give a file path, or use the memory"
                " driver (memory://, MemoryDriver) for jobs kept in memory"
            )
        # Absolute now, so a later chdir cannot move the database under a lazy open.
        self.path = os.path.abspath(text)
        super().__init__(SqliteConnection(self.path), __name__, prefix=prefix)
        self._watcher = Watcher(self.path, BUSY_TIMEOUT, self._watch_interval)
        self._last_work = -math.inf  # time.monotonic() of the last reserve that found jobs
        # The watcher's count of commits seen as the last reserve began: a count that has
        # moved on since means someone (another process, perhaps) wrote after it.
        self._seen = 0

    @classmethod
    def from_url(cls, url: str) -> SqliteDriver:
        """A driver for `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`;
        `?prefix=name_` sets the table prefix."""
        path, prefix = _parse_url(url)
        return cls(path, prefix=prefix)

    def _location(self) -> str:
        return self.path

    async def _reserve_rows(self, params: Params) -> list[Row]:
        # Noted before the statement runs: a job another process commits after this is
        # either reserved by it, or moves the count on and so ends the next `wait`.
        await self._ready()  # our own migrations are not news to the watcher
        self._watcher.start(self._pushed.notify)
        self._seen = self._watcher.commits
        rows = await super()._reserve_rows(params)
        if rows:
            self._last_work = time.monotonic()
        return rows

    def _watch_interval(self) -> float:
        """A tenth of the quiet since the last reserve that found jobs, between the bounds."""
        return min(WATCH_IDLE, max(WATCH_BUSY, (time.monotonic() - self._last_work) / 10))

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when this instance pushed, when another connection has committed since the
        last reserve began (a push from another process, perhaps), or after `timeout`."""
        self._watcher.start(self._pushed.notify)
        if self._watcher.commits != self._seen:
            return
        await self._pushed.wait(timeout)

    async def durability(self) -> str:
        """The level pushes commit at: `synchronous=FULL`."""
        return f"synchronous={DURABLE}"

    async def close(self) -> None:
        """Stop watching and close the connection; jobs stay stored."""
        self._watcher.stop()
        await super().close()


def _parse_url(url: str) -> tuple[str, str]:
    """(path, prefix) from a sqlite URL; ConfigError naming the fix for anything else."""
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
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(options.keys() - {"prefix"})
    if unknown:
        raise ConfigError(f"{url!r}: unknown option {unknown[0]!r}; the only one is 'prefix'")
    return path, options.get("prefix", "conveyor_")


class SqliteConnection:
    """`SqlConnection` over the stdlib sqlite3 module.

    One connection, opened and used on one dedicated thread (`DatabaseThread`), so calls from
    the event loop are serialized without a lock and never block it. Autocommit mode
    (isolation_level=None): a single statement is its own transaction; `transaction` wraps
    several in BEGIN IMMEDIATE ... COMMIT.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: _Database | None = None
        self._thread: DatabaseThread | None = None

    async def open(self) -> None:
        """Open (creating) the file and set WAL mode, the busy timeout and synchronous."""
        if self._thread is not None:
            return
        self._thread = DatabaseThread("conveyor-sqlite")
        try:
            self._db = await self._hop(_connect, self.path)
        except BaseException:
            self._thread.stop()
            self._thread = None
            raise

    async def close(self) -> None:
        """Close the connection and let its thread end."""
        thread, db = self._thread, self._db
        self._thread = self._db = None
        if thread is None:
            return
        try:
            if db is not None:
                await thread.call(_close, db, self.path)
        finally:
            thread.stop()

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        """Run one statement on its own and return its rows."""
        return await self._hop(_alone, _fetch, self._connection(), self.path, query, params)

    async def execute(self, query: Query, params: Params) -> int:
        """Run one statement on its own and return how many rows it changed."""
        return await self._hop(_alone, _execute, self._connection(), self.path, query, params)

    async def script(self, sql: str) -> None:
        """Run several statements, each on its own, at the DURABLE level."""
        await self._hop(_script_alone, self._connection(), self.path, sql)

    async def transaction(
        self, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]], *, durable: bool = True
    ) -> T:
        """Run `work` whole on the database thread inside BEGIN IMMEDIATE ... COMMIT, at the
        DURABLE level: a transaction stores what its caller was promised (a unique push, a
        migration), and the level cannot change once it has begun. `durable=False`: at the
        RELAXED level, for work whose loss only makes jobs run again."""
        level = DURABLE if durable else RELAXED
        return await self._hop(_transaction, self._connection(), self.path, work, level)

    def _connection(self) -> _Database:
        if self._db is None:
            raise DriverError(f"the SQLite database {self.path!r} is closed: call open() first")
        return self._db

    async def _hop(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the database thread: the one place that blocks.

        Shielded: once a method is called its statements run to the end even if the caller is
        cancelled meanwhile, as they would with the memory driver, whose methods never yield.
        Otherwise a cancel would drop the work only if the thread had not started it yet, and
        the caller could not tell whether an ack it sent had happened.
        """
        if self._thread is None:
            raise DriverError(f"the SQLite database {self.path!r} is closed: call open() first")
        return await self._thread.call(function, *args)


class _ThreadTransaction:
    """The `SqlTransaction` given to transaction work. Its coroutines never suspend: each runs
    its statement right away, on the database thread that is driving the work."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self._path = path

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        return _fetch(self._db, self._path, query, params)

    async def execute(self, query: Query, params: Params) -> int:
        return _execute(self._db, self._path, query, params)

    async def script(self, sql: str) -> None:
        _script(self._db, self._path, sql)


# -- on the database thread -------------------------------------------------------------------


class _Database(sqlite3.Connection):
    """A sqlite3 connection that remembers the synchronous level it last set."""

    synchronous = ""


def _connect(path: str) -> _Database:
    with _translated(path, "open"):
        db = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            factory=_Database,
        )
        # Text that is not UTF-8 (written by another program) reads back with its bad bytes kept
        # as lone surrogates instead of failing the whole statement: a reserve that raised here
        # would already have reserved its batch. The driver reports such fields (record.py).
        db.text_factory = decode_text
        try:
            _use_wal(db)
            _set_synchronous(db, DURABLE)
        except BaseException:
            db.close()
            raise
    return db


def _set_synchronous(db: _Database, level: str) -> None:
    """Set `PRAGMA synchronous` for the statements that follow, unless already at `level`.
    Outside a transaction only: SQLite refuses to change it inside one."""
    if db.synchronous != level:
        db.execute(f"PRAGMA synchronous = {level}")
        db.synchronous = level


def _level_of(name: str) -> str | None:
    """The level a statement runs at on its own; None for a read, which leaves it as it is."""
    if name in _READS:
        return None
    return RELAXED if name in RELAXED_STATEMENTS else DURABLE


def _alone(run: Callable[..., T], db: _Database, path: str, query: Query, params: Params) -> T:
    """`run` one statement as its own transaction, at the level its name calls for."""
    level = _level_of(query.name)
    if level is not None:
        with _translated(path, query.name):
            _set_synchronous(db, level)
    return run(db, path, query, params)


def _script_alone(db: _Database, path: str, sql: str) -> None:
    with _translated(path, "migration"):
        _set_synchronous(db, DURABLE)
    _script(db, path, sql)


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode, where readers see the last commit while one writer works.

    The mode is stored in the file, so only its first opener changes it. That change needs
    the file to itself, and when another process is opening the new file at the same moment
    SQLite answers "database is locked" at once instead of waiting: so wait here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while db.execute("PRAGMA journal_mode").fetchone() != ("wal",):
        try:
            db.execute("PRAGMA journal_mode = WAL").fetchall()
        except sqlite3.OperationalError as error:
            if _error_code(error) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _close(db: sqlite3.Connection, path: str) -> None:
    with _translated(path, "close"):
        db.close()


def _fetch(db: sqlite3.Connection, path: str, query: Query, params: Params) -> list[Row]:
    with _translated(path, query.name):
        cursor = db.execute(query.sql, params)
        rows = cursor.fetchall()
    if not rows:
        return []
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _execute(db: sqlite3.Connection, path: str, query: Query, params: Params) -> int:
    with _translated(path, query.name):
        return db.execute(query.sql, params).rowcount


def _script(db: sqlite3.Connection, path: str, sql: str) -> None:
    """Run each statement of `sql` in turn. Not executescript(): it would COMMIT first and so
    end the caller's transaction."""
    with _translated(path, "migration"):
        for statement in _statements(sql):
            db.execute(statement)


def _statements(sql: str) -> Iterator[str]:
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""


def _transaction(
    db: _Database,
    path: str,
    work: Callable[[SqlTransaction], Coroutine[Any, Any, T]],
    level: str = DURABLE,
) -> T:
    """BEGIN IMMEDIATE takes the write lock at once (waiting up to BUSY_TIMEOUT for it), so
    what the work reads cannot change before it writes, in this process or another."""
    with _translated(path, "BEGIN"):
        _set_synchronous(db, level)
        db.execute("BEGIN IMMEDIATE")
    try:
        result = _run_to_end(work(_ThreadTransaction(db, path)))
        with _translated(path, "COMMIT"):
            db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return result


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, as transaction work on `_ThreadTransaction` is."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coroutine.close()
    raise RuntimeError("SQLite transaction work awaited something other than its transaction")


@contextlib.contextmanager
def _translated(path: str, what: str) -> Iterator[None]:
    """Turn sqlite3's errors into conveyor's, naming the file, the operation and the fix."""
    try:
        yield
    except sqlite3.Error as error:
        raise _driver_error(error, path, what) from error


def _driver_error(error: sqlite3.Error, path: str, what: str) -> DriverError:
    if what == "open":
        return BackendUnavailableError(
            f"cannot open the SQLite database {path!r} ({error}): check that its folder exists,"
            " that this process may create and write files there (SQLite adds -wal and -shm"
            " files beside it), and that the file is an SQLite database"
        )
    if _error_code(error) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BackendUnavailableError(
            f"the SQLite database {path!r} stayed locked for {BUSY_TIMEOUT:g}s during {what}:"
            " another process holds a long write transaction; retry later"
        )
    return DriverError(f"SQLite {what} failed on {path!r}: {error}")


def _error_code(error: sqlite3.Error) -> int:
    """The primary result code (SQLITE_BUSY, ...) without its extended bits."""
    return int(getattr(error, "sqlite_errorcode", 0)) & 0xFF
