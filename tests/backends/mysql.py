"""The mysql backend: the local MariaDB's `test` database, with a table prefix of its own per
test, whose tables are dropped afterwards; each connection a new driver."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from tests.backends import NOT_UTF8, Damage, Storage, driver_class, require_service

#: The server every mysql test uses: the one on this machine, never another.
URL = "mysql://root@127.0.0.1:3306/test"
START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"

#: MySQL checks numbers and keeps utf8mb4 text valid, but names, ids and tokens are
#: VARBINARY, which holds any bytes; JSON text can be damaged too.
DAMAGES = [
    Damage("name", NOT_UTF8),
    Damage("meta", "{not json"),
    Damage("meta", "[1, 2]"),
    Damage("error", "{broken"),
    Damage("payload", "not json", error="conveyor.errors.PayloadError"),
    Damage("worker", NOT_UTF8, "tolerate"),  # reserve writes its own
    Damage("retry_delay", "{broken", "tolerate"),  # read as a 1-second retry delay
    Damage("meta", '"just text"'),
]


async def damage(prefix: str, job_id: str, field: str, raw: object) -> None:
    """Write `raw` into `field` of the job, on a connection of the test's own."""
    import asyncmy

    connection = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", db="test", autocommit=True
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(
                f"UPDATE `{prefix}jobs` SET `{field}` = %s WHERE id = %s", (raw, job_id)
            )
    finally:
        connection.close()


def fresh_prefix() -> str:
    """A table prefix no other test (or run) uses."""
    return f"t{uuid.uuid4().hex[:12]}_"


def driver_tables(prefix: str) -> list[str]:
    """The tables the mysql driver creates under `prefix`, read off its migrations and queries
    (a new table is dropped with the rest without a change here)."""
    from conveyor.drivers.sql.queries import load_migrations, load_queries

    package = "conveyor.drivers.sql.mysql"
    texts = [migration.sql for migration in load_migrations(package, prefix)]
    texts += [query.sql for query in load_queries(package, prefix).values()]
    found = rf"CREATE TABLE IF NOT EXISTS ({re.escape(prefix)}\w+)"
    return sorted({table for text in texts for table in re.findall(found, text)})


async def drop_tables(prefix: str) -> None:
    """Drop the tables a test's drivers created under `prefix`, by name: a read of
    information_schema to find them is what crashed the shared MariaDB 10.11.19 once, while
    other tests cut their connections (see tests/drivers/test_mysql_migrations.py)."""
    import asyncmy

    connection = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", db="test", autocommit=True
    )
    try:
        async with connection.cursor() as cursor:
            names = ", ".join(f"`{table}`" for table in driver_tables(prefix))
            await cursor.execute(f"DROP TABLE IF EXISTS {names}")
    finally:
        connection.close()


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    require_service("mysql", 3306, START)
    driver = driver_class("conveyor.drivers.sql.mysql", "MysqlDriver")
    prefix = fresh_prefix()
    try:
        yield Storage(lambda: driver(URL, prefix=prefix), partial(damage, prefix), DAMAGES)
    finally:
        await drop_tables(prefix)
