"""The postgres backend: the local server's `test` database, with a table prefix of its own
per test, whose tables are dropped afterwards; each connection a new driver.

CONVEYOR_TEST_POSTGRES_URL points the suites at another address of that database (a PgBouncer
in front of it, say: docs/drivers.md, "Behind PgBouncer"; 127.0.0.1 only, as every test's),
and CONVEYOR_TEST_POSTGRES_POOL_MODE=transaction gives the drivers pool_mode=transaction.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from tests.backends import Damage, Storage, driver_class, require_service

#: The server every postgres test uses: the one on this machine, never another.
URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"
PORT = urlsplit(URL).port or 5432
POOL_MODE = os.environ.get("CONVEYOR_TEST_POSTGRES_POOL_MODE") or "session"
START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

#: PostgreSQL checks every column's type and keeps text UTF-8: only JSON text can be damaged.
DAMAGES = [
    Damage("meta", "{not json"),
    Damage("meta", "[1, 2]"),
    Damage("meta", '"just text"'),
    Damage("error", "{broken"),
    Damage("payload", "not json", error="conveyor.errors.PayloadError"),
    Damage("retry_delay", "{broken", "tolerate"),  # read as a 1-second retry delay
]


async def damage(prefix: str, job_id: str, field: str, raw: object) -> None:
    """Write `raw` into `field` of the job, on a connection of the test's own."""
    import psycopg
    from psycopg import sql

    query = sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(
        sql.Identifier(f"{prefix}jobs"), sql.Identifier(field)
    )
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(query, (raw, job_id))


def fresh_prefix() -> str:
    """A table prefix no other test (or run) uses."""
    return f"t{uuid.uuid4().hex[:12]}_"


async def drop_tables(prefix: str) -> None:
    """Drop every table whose name starts with `prefix` (what a test's drivers created)."""
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND starts_with(tablename, %s)",
            (prefix,),
        )
        tables = [row[0] for row in await cursor.fetchall()]
        if tables:
            names = sql.SQL(", ").join(sql.Identifier(table) for table in tables)
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(names))
        cursor = await conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace"
            " AND starts_with(proname, %s)",
            (prefix,),
        )
        for (function,) in await cursor.fetchall():  # the trigger functions of 0004
            await conn.execute(
                sql.SQL("DROP FUNCTION IF EXISTS {}").format(sql.Identifier(function))
            )


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    require_service("postgres", PORT, START)
    driver = driver_class("conveyor.drivers.sql.postgres", "PostgresDriver")
    prefix = fresh_prefix()
    try:
        yield Storage(
            lambda: driver(URL, prefix=prefix, pool_mode=POOL_MODE),
            partial(damage, prefix),
            DAMAGES,
        )
    finally:
        await drop_tables(prefix)
