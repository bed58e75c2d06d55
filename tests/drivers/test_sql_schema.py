"""The SQL drivers' schema as deploys meet it, on each dialect against its real database:
processes starting together on an empty database, a schema newer than the code (a rolling
deploy's older processes, a rolled-back deploy), `migrate=false` on an out-of-date schema, a
process opening while another holds the migration lock for longer than a call's timeout, and
table prefixes that the database would not keep apart.

Each test has a file (sqlite) or a table prefix (postgres, mysql) of its own, dropped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.drivers import driver_from_url
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.drivers.sql.queries import load_migrations
from conveyor.errors import ConfigError, DriverError
from tests.backends import mysql as mysql_backend
from tests.backends import postgres as postgres_backend
from tests.backends import require_service
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(30)

Run = Callable[[str], Awaitable[list[tuple[Any, ...]]]]


@dataclass
class Dialect:
    """One dialect's database for one test: `make` a driver on it, `run` SQL behind its back."""

    name: str
    make: Callable[..., SqlDriver]
    run: Run
    prefix: str
    url: str
    made: list[SqlDriver]
    path: Path | None = None  # sqlite's file

    def driver(self, **options: Any) -> SqlDriver:
        driver = self.make(**options)
        self.made.append(driver)
        return driver

    @property
    def latest(self) -> int:
        return len(load_migrations(f"conveyor.drivers.sql.{self.name}", self.prefix))


def sqlite_dialect(tmp_path: Path, prefix: str) -> Dialect:
    from conveyor.drivers.sql.sqlite import SqliteDriver

    path = tmp_path / "jobs.db"

    async def run(statement: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            return db.execute(statement).fetchall()

    make = lambda **options: SqliteDriver(path, **{"prefix": prefix, **options})  # noqa: E731
    return Dialect("sqlite", make, run, prefix, f"sqlite:///{path}?prefix={prefix}", [], path)


def postgres_dialect(prefix: str) -> Dialect:
    from conveyor.drivers.sql.postgres import PostgresDriver

    require_service("postgres", 5432, postgres_backend.START)

    async def run(statement: str) -> list[tuple[Any, ...]]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            postgres_backend.URL, autocommit=True
        ) as conn:
            cursor = await conn.execute(statement)  # type: ignore[arg-type]
            return list(await cursor.fetchall()) if cursor.description else []

    make = lambda **options: PostgresDriver(postgres_backend.URL, **{"prefix": prefix, **options})  # noqa: E731
    url = f"{postgres_backend.URL}?prefix={prefix}"
    return Dialect("postgres", make, run, prefix, url, [])


def mysql_dialect(prefix: str) -> Dialect:
    from conveyor.drivers.sql.mysql import MysqlDriver

    require_service("mysql", 3306, mysql_backend.START)

    async def run(statement: str) -> list[tuple[Any, ...]]:
        import asyncmy

        connection = await asyncmy.connect(
            host="127.0.0.1", port=3306, user="root", db="test", autocommit=True
        )
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(statement)
                return list(await cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    make = lambda **options: MysqlDriver(mysql_backend.URL, **{"prefix": prefix, **options})  # noqa: E731
    return Dialect("mysql", make, run, prefix, f"{mysql_backend.URL}?prefix={prefix}", [])


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def dialect(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Dialect]:
    prefix = postgres_backend.fresh_prefix()
    if request.param == "sqlite":
        made = sqlite_dialect(tmp_path, prefix)
    elif request.param == "postgres":
        made = postgres_dialect(prefix)
    else:
        made = mysql_dialect(prefix)
    try:
        yield made
    finally:
        for driver in made.made:
            await driver.close()
        if request.param == "postgres":
            await postgres_backend.drop_tables(prefix)
        elif request.param == "mysql":
            await mysql_backend.drop_tables(prefix)


# -- a deploy on an empty database -------------------------------------------------------------

PROCESSES = 4
PUSHES = 5  # by each pushing process


def start_up(url: str, pushing: bool, barrier: Any, results: Any) -> None:
    """One process of a deploy: wait for the others, then push (a web process) or open."""
    barrier.wait()
    results.put(asyncio.run(_start_up(url, pushing)))


async def _start_up(url: str, pushing: bool) -> str:
    driver = driver_from_url(url)
    try:
        for _ in range(PUSHES if pushing else 0):
            await driver.push(make_job())
        await driver.open()
        return "ok"
    except Exception as error:  # reported to the test, which shows it
        return f"{type(error).__name__}: {error}"
    finally:
        await driver.close()


def test_processes_starting_together_on_an_empty_database_all_come_up_and_keep_every_job(
    dialect: Dialect,
) -> None:
    # Fresh processes, as a deploy starts: each forked from a server started once without the
    # test's threads and loop, which imported this module (and so conveyor) for all of them.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=start_up, args=(dialect.url, number % 2 == 0, barrier, results))
        for number in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=25) for _ in processes]
    except queue.Empty:
        outcomes = ["a process never reported"]
    for process in processes:
        process.join(timeout=5)

    assert outcomes == ["ok"] * PROCESSES  # no duplicate table, deadlock or lock wait error
    recorded = asyncio.run(dialect.run(f"SELECT version FROM {dialect.prefix}schema_version"))
    assert sorted(version for (version,) in recorded) == list(range(1, dialect.latest + 1))
    pending = asyncio.run(dialect.run(f"SELECT COUNT(*) FROM {dialect.prefix}jobs"))
    assert pending == [(PUSHES * PROCESSES // 2,)]


# -- a schema newer than the code --------------------------------------------------------------


async def test_a_schema_newer_than_the_code_is_used_with_a_warning_naming_both_versions(
    dialect: Dialect, caplog: pytest.LogCaptureFixture
) -> None:
    first = dialect.driver()
    job_id = await first.push(make_job())
    await first.close()
    newer = dialect.latest + 1
    await dialect.run(
        f"INSERT INTO {dialect.prefix}schema_version (version, name, applied_at)"
        f" VALUES ({newer}, '{newer:04}_from_a_newer_conveyor.sql', 0)"
    )

    for driver, step in [
        (dialect.driver(), "open"),
        (dialect.driver(migrate=False), "open"),
        (dialect.driver(migrate=False), "migrate"),  # what `conveyor migrate` runs
    ]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="conveyor.sql"):
            await getattr(driver, step)()
        [warning] = [record.getMessage() for record in caplog.records]
        assert f"version {newer}, newer than this conveyor knows" in warning, step
        assert f"end at version {dialect.latest}" in warning and dialect.prefix in warning

        # A rolling deploy's older processes, or all after a rollback, carry on.
        assert await driver.push(make_job())
        assert (await driver.get(job_id)) is not None
    recorded = await dialect.run(f"SELECT MAX(version) FROM {dialect.prefix}schema_version")
    assert recorded == [(newer,)]  # nothing applied, nothing taken back


# -- migrate=false ------------------------------------------------------------------------------


async def test_migrate_false_refuses_a_missing_or_old_schema_naming_conveyor_migrate(
    dialect: Dialect,
) -> None:
    # SQLite's file is missing too: that is said instead (not made empty; test_sqlite.py).
    missing = r"(at version 0,|no SQLite database at) .*run `conveyor migrate`"
    with pytest.raises(ConfigError, match=missing):
        await dialect.driver(migrate=False).open()

    await dialect.driver(migrate=False).migrate()  # what `conveyor migrate` runs
    await dialect.driver(migrate=False).migrate()  # twice: nothing more to do
    await dialect.run(
        f"DELETE FROM {dialect.prefix}schema_version WHERE version = {dialect.latest}"
    )
    older = dialect.latest - 1
    with pytest.raises(ConfigError, match=rf"at version {older}, .* run `conveyor migrate`"):
        await dialect.driver(migrate=False).push(make_job())


async def test_a_version_table_that_cannot_be_read_is_an_error_saying_why_not_version_0(
    dialect: Dialect,
) -> None:
    # Reading the version failed for another reason than the table missing: here a table of
    # that name that is not conveyor's (another tool's, under the same prefix); for a DBA's
    # app user, one it may not read. With migrate=false that was "at version 0: run `conveyor
    # migrate`", which the DBA had run, and would run again in vain.
    await dialect.run(f"CREATE TABLE {dialect.prefix}schema_version (id INTEGER PRIMARY KEY)")
    for options in [{"migrate": False}, {}]:
        with pytest.raises(DriverError, match=r"schema_version failed.*version") as raised:
            await dialect.driver(**options).open()
        assert "conveyor migrate" not in str(raised.value), options


async def test_a_migration_the_database_refuses_is_an_error_naming_conveyor_migrate(
    dialect: Dialect,
) -> None:
    # The usual cause is a user that may not create tables (a DBA's application user), whose
    # error ("permission denied for schema public") named no fix; here the database refuses
    # for another reason, a table of conveyor's name that is not conveyor's.
    await dialect.run(f"CREATE TABLE {dialect.prefix}jobs (other INTEGER)")
    with pytest.raises(DriverError) as raised:
        await dialect.driver().open()
    said = str(raised.value)
    assert f"could not create or update its tables with prefix {dialect.prefix!r}" in said
    assert "run `conveyor migrate` as one who may, and add migrate=false to this URL" in said


@pytest.mark.parametrize("prefix", ["Mail_", "jobsA"])
def test_a_prefix_with_capitals_is_refused_naming_the_lower_case_one(
    dialect: Dialect, prefix: str
) -> None:
    # PostgreSQL and SQLite ignore case in unquoted table names: Mail_ would share mail_'s
    # tables while taking another migration lock, so it is refused on every dialect.
    with pytest.raises(ConfigError, match=rf"upper-case.*{prefix.lower()!r}"):
        dialect.make(prefix=prefix)


# -- waiting for another process's migration ---------------------------------------------------


async def hold_migration_lock(dialect: Dialect) -> Callable[[], Awaitable[None]]:
    """Take the dialect's migration lock on a connection of the test's own, as a process in
    the middle of a long migration holds it (SQLite's: the file's write lock); returns the
    function that releases it."""
    if dialect.name == "sqlite":
        db = sqlite3.connect(dialect.path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")

        async def release_sqlite() -> None:
            db.rollback()
            db.close()

        return release_sqlite
    if dialect.name == "postgres":
        import psycopg

        conn = await psycopg.AsyncConnection.connect(postgres_backend.URL, autocommit=True)
        await conn.execute(
            "SELECT pg_advisory_lock(hashtext(%s))", (f"conveyor migrate {dialect.prefix}",)
        )

        async def release() -> None:
            await conn.close()  # a session's advisory locks end with it

        return release
    import asyncmy

    connection = await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", db="test", autocommit=True
    )
    async with connection.cursor() as cursor:
        await cursor.execute(
            "SELECT GET_LOCK(CONCAT('conveyor.', LEFT(SHA2(CONCAT(DATABASE(), '.', %s), 256),"
            " 40)), 0)",
            (dialect.prefix,),
        )
        assert await cursor.fetchall() == ((1,),)

    async def release_mysql() -> None:
        connection.close()  # a session's named locks end with it

    return release_mysql


async def test_opening_waits_for_another_processs_migration_past_the_call_timeout(
    dialect: Dialect,
) -> None:
    if dialect.name == "sqlite":
        pytest.skip("SQLite has no call timeout: a writer waits BUSY_TIMEOUT for the file")
    release = await hold_migration_lock(dialect)
    try:
        driver = dialect.driver(timeout=0.3)
        opening = asyncio.create_task(driver.push(make_job()))

        done, _ = await asyncio.wait({opening}, timeout=1.5)  # five times the call timeout

        assert not done, opening.exception()  # still waiting for the lock, not failed
    finally:
        await release()
    job_id = await opening
    assert (await driver.get(job_id)) is not None


async def test_an_up_to_date_schema_opens_while_another_holds_the_migration_lock(
    dialect: Dialect,
) -> None:
    # Every open but a deploy's first finds nothing to migrate: it must neither queue behind
    # another process's migration lock (or SQLite's write lock) nor fail for it.
    await dialect.driver().open()
    release = await hold_migration_lock(dialect)
    try:
        driver = dialect.driver() if dialect.name == "sqlite" else dialect.driver(timeout=0.3)

        await asyncio.wait_for(driver.open(), timeout=5)

        assert await driver.counts(["q"])
    finally:
        await release()
