"""The mysql driver's migrations on MariaDB: no read of information_schema (MariaDB 10.11.19 crashed
in ha_maria::drop_table freeing the Aria temporary table such a read makes, while many clients
disconnected: benchmarks/mariadb_migration_crash.py reproduces it), the same tables as MySQL's
statements make, and each migration safe to run again.

On a private MariaDB (tests/backends/private.py), so that the server's counters are this test's
alone and MySQL's statements, which do read information_schema, never run on the shared one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest

from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.mysql.session import server_statements
from conveyor.drivers.sql.queries import load_migrations
from tests.backends.private import PrivateMariadb, private_mariadb

PACKAGE = "conveyor.drivers.sql.mysql"
#: What MySQL 8 says its version is: the driver sends it MySQL's statements.
MYSQL_VERSION = "8.0.36"
TABLES = ("jobs", "workers", "worker_processes", "queues", "schedule_ticks", "finished_counts")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateMariadb]:
    with private_mariadb() as made:
        made.sql(
            "CREATE DATABASE test; CREATE USER app@'127.0.0.1' IDENTIFIED BY 'pw';"
            " GRANT ALL ON test.* TO app@'127.0.0.1';"
        )
        yield made


def connect(server: PrivateMariadb) -> pymysql.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host="127.0.0.1", port=server.port, user="app", password="pw", database="test",
        autocommit=True,
    )  # fmt: skip


async def migrate(server: PrivateMariadb, prefix: str) -> None:
    driver = MysqlDriver(f"mysql://app:pw@127.0.0.1:{server.port}/test", prefix=prefix)
    try:
        await driver.migrate()
    finally:
        await driver.close()


def run(server: PrivateMariadb, statements: tuple[str, ...]) -> None:
    with connect(server) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def tables(server: PrivateMariadb, prefix: str) -> list[str]:
    """SHOW CREATE TABLE of each table and the triggers, the prefix taken out."""
    with connect(server) as connection, connection.cursor() as cursor:
        shown = []
        for table in TABLES:
            cursor.execute(f"SHOW CREATE TABLE {prefix}{table}")
            shown.append(cursor.fetchone()[1])
        cursor.execute(f"SHOW TRIGGERS LIKE '{prefix}%'")
        shown.extend(f"{row[0]} {row[1]} {row[2]} {row[3]} {row[4]}" for row in cursor.fetchall())
    return [text.replace(prefix, "<prefix>") for text in shown]


def temporary_tables(server: PrivateMariadb) -> int:
    """Internal temporary tables the server made so far (SHOW STATUS makes one itself)."""
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Created_tmp_tables'").split()[1])


async def test_migrating_on_mariadb_makes_no_temporary_table(server: PrivateMariadb) -> None:
    """Before, each step's check read information_schema.columns or .statistics, which MariaDB
    materializes in a temporary table: five of them per new prefix."""
    before = temporary_tables(server)

    await migrate(server, "fresh_")

    assert temporary_tables(server) - before == 1  # the SHOW STATUS above


async def test_mariadb_and_mysql_statements_make_the_same_tables(server: PrivateMariadb) -> None:
    await migrate(server, "maria_")
    for migration in load_migrations(PACKAGE, "mysql_"):
        run(server, server_statements(migration.sql, MYSQL_VERSION))  # valid on MariaDB too

    assert tables(server, "maria_") == tables(server, "mysql_")


async def test_each_migration_run_again_changes_nothing(server: PrivateMariadb) -> None:
    """As after a failure once its DDL was done (MariaDB commits DDL at once), before the
    version was recorded: IF EXISTS and IF NOT EXISTS on one index name in one ALTER would
    drop jobs_unique for good."""
    await migrate(server, "again_")
    migrated = tables(server, "again_")
    with connect(server) as connection:
        info = connection.get_server_info()

    for migration in load_migrations(PACKAGE, "again_"):
        run(server, server_statements(migration.sql, info))

    assert tables(server, "again_") == migrated


async def test_a_migration_failed_half_way_runs_again_cleanly(server: PrivateMariadb) -> None:
    await migrate(server, "whole_")
    with connect(server) as connection:
        info = connection.get_server_info()
    first, second, *rest = load_migrations(PACKAGE, "half_")
    run(server, server_statements(first.sql, info))
    run(server, server_statements(second.sql, info)[:1])  # 0002's first ALTER, then a failure

    for migration in (second, *rest):
        run(server, server_statements(migration.sql, info))

    assert tables(server, "half_") == tables(server, "whole_")
