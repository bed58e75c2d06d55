"""The mysql backend: the local MariaDB's `test` database, with a table prefix of its own per
test, whose tables are dropped afterwards; each connection a new driver."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.backends import Storage, driver_class, require_service

#: The server every mysql test uses: the one on this machine, never another.
URL = "mysql://root@127.0.0.1:3306/test"
START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"


def fresh_prefix() -> str:
    """A table prefix no other test (or run) uses."""
    return f"t{uuid.uuid4().hex[:12]}_"


async def drop_tables(prefix: str) -> None:
    """Drop every table whose name starts with `prefix` (what a test's drivers created)."""
    import asyncmy

    connection = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", db="test", autocommit=True
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = DATABASE() AND LEFT(table_name, %s) = %s",
                (len(prefix), prefix),
            )
            tables = [row[0] for row in await cursor.fetchall()]
            if tables:
                names = ", ".join(f"`{table}`" for table in tables)
                await cursor.execute(f"DROP TABLE IF EXISTS {names}")
    finally:
        connection.close()


@asynccontextmanager
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    require_service("mysql", 3306, START)
    driver = driver_class("conveyor.drivers.sql.mysql", "MysqlDriver")
    prefix = fresh_prefix()
    try:
        yield Storage(lambda: driver(URL, prefix=prefix))
    finally:
        await drop_tables(prefix)
