"""The sqlite backend: a database file in the test's tmp_path; each connection a new driver."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from conveyor.drivers.sql.sqlite import SqliteDriver
from tests.backends import NOT_UTF8, PICKLED, Blob, Damage, Storage

#: SQLite keeps any value in any column (but the CHECK on state and NOT NULL).
DAMAGES = [
    Damage("meta", "{not json"),
    Damage("meta", "[1, 2]"),
    Damage("meta", NOT_UTF8),
    Damage("error", "{broken"),
    Damage("payload", Blob(PICKLED)),
    Damage("payload", NOT_UTF8),
    Damage("name", NOT_UTF8),
    Damage("max_attempts", "many"),
    Damage("priority", "high"),
    Damage("timeout", "long"),
    Damage("created_at", "yesterday"),
    Damage("retry_delay", NOT_UTF8),
    Damage("unique_key", NOT_UTF8),
    Damage("attempt", "x", "tolerate"),  # reserve's `attempt + 1` reads text as 0
    Damage("worker", NOT_UTF8, "tolerate"),  # reserve writes its own
    Damage("retry_delay", "{broken", "tolerate"),  # read as a 1-second retry delay
    Damage("error", NOT_UTF8),
]


async def damage(path: Path, job_id: str, field: str, raw: object) -> None:
    """Write `raw` into `field` of the job, with a plain sqlite3 connection."""
    if isinstance(raw, Blob):
        value, placeholder = bytes(raw), "?"
    elif isinstance(raw, bytes):
        value, placeholder = raw, "CAST(? AS TEXT)"  # text whose bytes are not UTF-8
    else:
        value, placeholder = raw, "?"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            f"UPDATE conveyor_jobs SET {field} = {placeholder} WHERE id = ?", (value, job_id)
        )
    db.close()


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    path = tmp_path / "conveyor.db"
    yield Storage(lambda: SqliteDriver(path), partial(damage, path), DAMAGES)
