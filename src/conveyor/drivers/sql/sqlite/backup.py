"""A copy of a live SQLite database, taken while workers and pushers write to it; and putting
such a copy back.

A copy of the .db file alone leaves out what is still in its -wal file: pushes that returned
are missing from it (280 of 15,000 in one try here, with a worker and a pusher running). A
copy of the three files (.db, -wal, -shm) can be torn by a checkpoint between the copies.
SQLite's online backup API copies the database as one read transaction sees it: every commit
made before it began, the write-ahead log's included, and nothing half written. Writers go
on meanwhile (WAL mode: a reader never blocks them).

Putting a copy back by copying it over the .db file is unsafe too: a -wal file left beside it
by a process that was killed belongs to the old database, and SQLite replays it into the copy
("database disk image is malformed", seen here). The same API run the other way writes the
copy into the database through SQLite, in one transaction: the old log is dealt with, and a
failure leaves the database as it was.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing, suppress

from conveyor.errors import ConfigError, DriverError

__all__ = ["copy_database", "put_back"]


def copy_database(source: str, target: str, busy_timeout: float) -> None:
    """Copy the SQLite database at `source` to the new file `target`, in one step (one read
    transaction, so one consistent view). The copy is written beside `target` and renamed to
    it once complete, so `target` never holds half a backup; an existing `target` is refused,
    never overwritten."""
    if os.path.lexists(target):
        raise ConfigError(
            f"backup {target!r} exists: a backup never overwrites a file; give a new path,"
            " or remove that file first"
        )
    partial = f"{target}.partial"
    try:
        with (
            closing(sqlite3.connect(source, timeout=busy_timeout)) as database,
            closing(sqlite3.connect(partial)) as copy,
        ):
            database.backup(copy)
    except sqlite3.Error as error:
        _remove(partial)
        raise DriverError(
            f"could not back up {source} to {target}: {error} (does the folder exist, and may"
            " this user write there?)"
        ) from error
    os.replace(partial, target)


def put_back(backup: str, database: str, jobs_table: str, busy_timeout: float) -> None:
    """Replace the content of `database` with the backup at `backup`, in one transaction;
    a backup that is not a sound conveyor database with `jobs_table` is refused first."""
    if not os.path.isfile(backup):
        raise ConfigError(
            f"no backup at {backup!r}: give the path of a file `conveyor backup` made"
        )
    if os.path.exists(database) and os.path.samefile(backup, database):
        raise ConfigError(f"{backup!r} is the database itself: give the path of a backup")
    # urllib.request brings http.client and email (~8 ms): imported by a restore only.
    from urllib.request import pathname2url

    try:
        with (
            closing(sqlite3.connect(f"file:{pathname2url(backup)}?mode=ro", uri=True)) as copy,
            closing(sqlite3.connect(database, timeout=busy_timeout)) as target,
        ):
            _check_backup(copy, backup, jobs_table)
            copy.backup(target)
    except sqlite3.Error as error:
        raise DriverError(f"could not restore {backup} into {database}: {error}") from error


def _check_backup(copy: sqlite3.Connection, backup: str, jobs_table: str) -> None:
    """ConfigError unless `copy` is a whole SQLite database holding `jobs_table`."""
    try:
        sound = copy.execute("PRAGMA quick_check").fetchone() == ("ok",)
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as error:  # not a database at all
        raise ConfigError(
            f"{backup!r} is not an SQLite database ({error}): nothing restored"
        ) from error
    if not sound:
        raise ConfigError(f"{backup!r} is damaged (PRAGMA quick_check fails): nothing restored")
    if jobs_table not in tables:
        raise ConfigError(
            f"{backup!r} holds no table {jobs_table!r}: not a backup of these queues (check the"
            " path, and the URL's prefix); nothing restored"
        )


def _remove(path: str) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            os.remove(path + suffix)
