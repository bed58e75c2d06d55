"""The SQLite dialect's connection: one sqlite3 connection on a thread of its own, for calls from
the event loop, and one per calling thread for the blocking facade's push (see SqliteConnection).

Durability: see the package docstring (DURABLE for what a caller must find again after a power
cut, RELAXED for what only makes a job run again).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from conveyor.drivers.record import decode_text
from conveyor.drivers.sql.adapter import Params, Row, SqlTransaction
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.sqlite.forking import GUARD
from conveyor.drivers.sql.sqlite.thread import DatabaseThread
from conveyor.errors import BackendUnavailableError, DriverError

__all__ = ["BUSY_TIMEOUT", "DURABLE", "RELAXED", "RELAXED_STATEMENTS", "SqliteConnection"]

T = TypeVar("T")

#: Seconds a statement waits for another process's write transaction before giving up.
BUSY_TIMEOUT = 30.0

#: Bytes the -wal file is cut back to once SQLite starts writing it from the top again. Without
#: a limit it kept the size of its largest transaction (a push_many of 100,000 jobs of 1 KB:
#: 146 MB) for as long as any process had the file open, which workers always have.
WAL_LIMIT = 64 * 2**20

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


class SqliteConnection:
    """`SqlConnection` over the stdlib sqlite3 module.

    One connection, opened and used on one dedicated thread (`DatabaseThread`), so calls from
    the event loop are serialized without a lock and never block it. Autocommit mode
    (isolation_level=None): a single statement is its own transaction; `transaction` wraps
    several in BEGIN IMMEDIATE ... COMMIT.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: _Handle | None = None
        self._thread: DatabaseThread | None = None
        # The connections `execute_in_thread` opened, one per calling thread, each with the
        # opening's number: a thread's connection from before a close is not used again.
        self._local = threading.local()
        self._opening = 0
        #: Each with the lock its thread holds while it uses it, which close() takes first.
        self._in_threads: list[tuple[_Database, threading.Lock]] = []
        self._in_threads_lock = threading.Lock()
        # (device, inode) of the file as opened: a file deleted or replaced at that path since
        # is one whose writes no other process would see (see `_check_file`).
        self._file: tuple[int, int] | None = None

    async def open(self) -> None:
        """Open (creating) the file and set WAL mode, the busy timeout and synchronous."""
        if self._thread is not None:
            return
        self._thread = DatabaseThread("conveyor-sqlite")
        try:
            self._db = _Handle(await self._hop(_connect, self.path), self.path)
            self._file = _identity(self.path)
        except BaseException:
            self._thread.stop()
            self._thread = None
            raise

    async def close(self) -> None:
        """Close the connection and let its thread end; close those of `execute_in_thread`."""
        thread, db = self._thread, self._db
        self._thread = self._db = None
        self._file = None
        with self._in_threads_lock:
            self._opening += 1
            in_threads, self._in_threads = self._in_threads, []
        for other, in_use in in_threads:
            with in_use:  # never in the middle of a push: closing it there crashed the process
                _close(other, self.path)
        if thread is None:
            return
        try:
            if db is not None:
                await thread.call(db.close)
        finally:
            thread.stop()

    async def fetch(self, query: Query, params: Params) -> list[Row]:
        """Run one statement on its own and return its rows."""
        return await self._hop(self._handle().run, _alone, _fetch, query, params)

    async def execute(self, query: Query, params: Params) -> int:
        """Run one statement on its own and return how many rows it changed."""
        return await self._hop(self._handle().run, _alone, _execute, query, params)

    def execute_in_thread(self, query: Query, params: Params) -> int:
        """`execute` from the calling thread, which it blocks (the blocking facade's push from
        a plain thread): on a connection of this thread's own, opened on first use with the
        same settings, so the call waits for neither the database thread nor an event loop."""
        while True:
            if self._thread is None:
                raise DriverError(f"the SQLite database {self.path!r} is closed: call open() first")
            self._check_file()
            mine = getattr(self._local, "db", None)
            # New, opened again, forked, or refused a write as read-only (see _Handle).
            if mine is None or mine[0] != (self._opening, os.getpid()) or mine[1].refused:
                with GUARD.statement():
                    db, in_use = _connect(self.path), threading.Lock()
                with self._in_threads_lock:
                    self._in_threads.append((db, in_use))
                    opened = (self._opening, os.getpid())
                ends = _ThreadEnd()  # held by this thread's local alone: freed as it ends
                # Outside the lock: the tuple replaced lets go of its _ThreadEnd, which takes it.
                mine = self._local.db = (opened, db, in_use, ends)
                close = weakref.finalize(ends, _thread_ended, weakref.ref(self), db, os.getpid())
                close.atexit = False  # at exit the driver's close (or the process's end) does
            with mine[2], GUARD.statement():  # no fork in the middle of it (forking.py)
                if mine[0] == (self._opening, os.getpid()):  # else closed meanwhile
                    changed: int = _noting_refusal(
                        mine[1], self.path, _alone, _execute, query, params
                    )
                    return changed

    async def script(self, sql: str) -> None:
        """Run several statements, each on its own, at the DURABLE level."""
        await self._hop(self._handle().run, _script_alone, sql)

    async def transaction(
        self, work: Callable[[SqlTransaction], Coroutine[Any, Any, T]], *, durable: bool = True
    ) -> T:
        """Run `work` whole on the database thread inside BEGIN IMMEDIATE ... COMMIT, at the
        DURABLE level: a transaction stores what its caller was promised (a unique push, a
        migration), and the level cannot change once it has begun. `durable=False`: at the
        RELAXED level, for work whose loss only makes jobs run again."""
        level = DURABLE if durable else RELAXED
        return await self._hop(self._handle().run, _transaction, work, level)

    def _forget_thread(self, db: _Database) -> threading.Lock | None:
        """Stop keeping `db`, the connection of a thread that has ended; the lock it is used
        under, or None when `close` has taken it (and closes it) already."""
        with self._in_threads_lock:
            for kept in self._in_threads:
                if kept[0] is db:
                    self._in_threads.remove(kept)
                    return kept[1]
        return None

    def _handle(self) -> _Handle:
        if self._db is None:
            raise DriverError(f"the SQLite database {self.path!r} is closed: call open() first")
        return self._db

    def _connection(self) -> _Database:
        """The connection in use now; on the database thread only."""
        return self._handle().db

    async def _hop(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the database thread: the one place that blocks.

        Shielded: once a method is called its statements run to the end even if the caller is
        cancelled meanwhile, as they would with the memory driver, whose methods never yield.
        Otherwise a cancel would drop the work only if the thread had not started it yet, and
        the caller could not tell whether an ack it sent had happened.
        """
        if self._thread is None:
            raise DriverError(f"the SQLite database {self.path!r} is closed: call open() first")
        self._check_file()
        return await self._thread.call(function, *args)

    def _check_file(self) -> None:
        """BackendUnavailableError when the file at the path is no longer the one opened: a
        deleted or replaced file's writes are seen by no other process, and lost (one `stat`)."""
        opened = self._file  # read once: a close between two reads made it None, "replaced"
        if opened is None or _identity(self.path) in (opened, None):
            return
        raise BackendUnavailableError(
            f"the SQLite database {self.path!r} was deleted or replaced after this process"
            " opened it, so no other process sees what it writes: restart this process (or"
            " close and open the driver) to use the file at that path now"
        )


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


class _ThreadEnd:
    """Kept in a calling thread's `threading.local` beside its connection: collected when the
    thread ends, which closes that connection (`_thread_ended`). Before, each thread's
    connection stayed open until the driver closed: a server starting a thread per request
    (Werkzeug's, Django's runserver) leaked two file descriptors a request, until the process
    ran out of them."""


def _thread_ended(owner: weakref.ref[SqliteConnection], db: _Database, pid: int) -> None:
    connection = owner()
    if connection is None or pid != os.getpid():  # never a parent's connection, in a child
        return
    in_use = connection._forget_thread(db)
    if in_use is not None:
        with in_use, contextlib.suppress(DriverError):
            _close(db, connection.path)


# -- on the database thread -------------------------------------------------------------------


class _Database(sqlite3.Connection):
    """A sqlite3 connection that remembers the synchronous level it last set, and whether
    SQLite refused it a write because it opened the file read-only."""

    synchronous = ""
    refused = False


class _Handle:
    """The driver's connection of one opening, replaced after a write was refused as read-only:
    SQLite opens a file it may not write read-only for as long as it is open, and a worker
    started before the file's permissions were fixed failed every reserve until restarted."""

    def __init__(self, db: _Database, path: str) -> None:
        self.db = db
        self.path = path

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(db, path, *args)` on the connection, opened again first if it was refused."""
        if self.db.refused:
            # Closed first: while any connection of this process has the file, a new one
            # shares its read-only view of the -shm file.
            with contextlib.suppress(DriverError):
                _close(self.db, self.path)
            self.db = _connect(self.path)  # if this fails, the next call tries again
        return _noting_refusal(self.db, self.path, function, *args)

    def close(self) -> None:
        _close(self.db, self.path)


def _noting_refusal(db: _Database, path: str, function: Callable[..., T], *args: Any) -> T:
    """`function(db, path, *args)`, marking `db` refused if SQLite said it is read-only."""
    try:
        return function(db, path, *args)
    except DriverError as error:
        cause = error.__cause__
        if isinstance(cause, sqlite3.Error) and _error_code(cause) == sqlite3.SQLITE_READONLY:
            db.refused = True
        raise


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
            db.execute(f"PRAGMA journal_size_limit = {int(WAL_LIMIT)}").fetchall()
            _set_synchronous(db, DURABLE)
        except BaseException:
            db.close()
            raise
    return db


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; `None` when that cannot be told (a folder made
    unreadable: SQLite says what it finds then), `(-1, -1)` when no file is there."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return (-1, -1)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


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


def _alone(db: _Database, path: str, run: Callable[..., T], query: Query, params: Params) -> T:
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
    """The statements of `sql`, the last one too when no ';' ends it (a named block's SQL, or a
    migration file without one: dropping it would record a migration not wholly applied)."""
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        yield pending


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
    if _error_code(error) == sqlite3.SQLITE_READONLY:
        return BackendUnavailableError(
            f"the SQLite database {path!r} is read-only to this process ({error}) during"
            f" {what}: let the user it runs as write the file, its -wal and -shm files and its"
            " folder; the next call opens the file again"
        )
    if _error_code(error) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BackendUnavailableError(
            f"the SQLite database {path!r} stayed locked for {BUSY_TIMEOUT:g}s during {what}:"
            " another process holds a long write transaction; retry later"
        )
    if _error_code(error) == sqlite3.SQLITE_TOOBIG:  # a batch's payloads, in one string
        return DriverError(f"SQLite {what} failed on {path!r} ({error}): {_TOO_BIG}")
    if _error_code(error) in _DISK_ERRORS:
        return BackendUnavailableError(
            f"SQLite {what} failed on {path!r} ({error}): the disk it is on is full or failing;"
            " free space there (or mend it), and workers carry on"
        )
    return DriverError(f"SQLite {what} failed on {path!r}: {error}")


#: The disk could not take a write (full, an I/O error, a file it could not open): no refusal
#: of the statement, which a worker's settler took it for, writing acked jobs as failed.
_DISK_ERRORS = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN})

_TOO_BIG = "one statement takes 10**9 bytes: push fewer at a time, push_many(..., chunk=1000)"


def _error_code(error: sqlite3.Error) -> int:
    """The primary result code (SQLITE_BUSY, ...) without its extended bits."""
    return int(getattr(error, "sqlite_errorcode", 0)) & 0xFF
