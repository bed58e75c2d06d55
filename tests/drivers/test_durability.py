"""What each driver's push is committed with, and the docs' durability table against the code.

`conveyor.drivers.durability.FACTS` says what of a returned push survives which crash, per
driver and setting; each driver's `durability()` names the setting in force. These tests check
that the setting a push really commits under is the one the driver names (the synchronous
level sqlite uses for it, postgres's synchronous_commit inside its transaction, the server
variables of mysql and redis), and that docs/reliability.md shows the table as it is.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncmy
import psycopg
import pytest
from redis.asyncio import Redis

import conveyor.drivers.sql.sqlite.connection as sqlite_module
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Failure, Reservation
from conveyor.drivers.durability import FACTS, IN_PROCESS, facts_of
from conveyor.drivers.memory import MemoryDriver
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.postgres import PostgresDriver
from conveyor.drivers.sql.queries import Query, load_queries
from conveyor.drivers.sql.sqlite import SqliteDriver
from conveyor.drivers.sync import SyncDriver
from conveyor.job import ErrorInfo
from tests.backends import mysql as mysql_backend
from tests.backends import postgres as postgres_backend
from tests.backends import redis as redis_backend
from tests.backends import require_service
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(30)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"

#: PRAGMA synchronous reads back as a number.
LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# -- sqlite: the synchronous level of each statement ---------------------------------------------


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteDriver]:
    driver = SqliteDriver(tmp_path / "jobs.db")
    await driver.open()
    yield driver
    await driver.close()


async def level_now(driver: SqliteDriver) -> str:
    """The synchronous level in force on the driver's own connection, read on its thread."""
    conn = driver._conn

    def read() -> int:
        return int(conn._connection().execute("PRAGMA synchronous").fetchone()[0])

    return LEVELS[await conn._hop(read)]


async def traced(driver: SqliteDriver) -> list[str]:
    """Every statement the driver's connection runs from now on, as run."""
    statements: list[str] = []
    conn = driver._conn

    def trace() -> None:
        conn._connection().set_trace_callback(lambda sql: statements.append(" ".join(sql.split())))

    await conn._hop(trace)
    return statements


def level_before(statements: list[str], fragment: str) -> str:
    """The level the last `PRAGMA synchronous = ...` before the first statement containing
    `fragment` set; SQLite cannot change it inside a transaction, so it is the commit's."""
    first = next(i for i, sql in enumerate(statements) if fragment in sql)
    pragmas = [sql for sql in statements[:first] if sql.startswith("PRAGMA synchronous =")]
    assert pragmas, f"no level set before {fragment!r}: {statements}"
    return pragmas[-1].rsplit("=", 1)[1].strip()


async def test_sqlite_push_commits_at_synchronous_full(sqlite: SqliteDriver) -> None:
    await sqlite.reserve(["q"], 1, 30.0, "w")  # leaves the connection at NORMAL
    statements = await traced(sqlite)

    await sqlite.push(make_job())

    assert level_before(statements, "INSERT INTO conveyor_jobs") == "FULL"
    assert await level_now(sqlite) == "FULL"
    assert sqlite_module.DURABLE == "FULL"


async def test_sqlite_unique_push_transaction_begins_at_synchronous_full(
    sqlite: SqliteDriver,
) -> None:
    await sqlite.reserve(["q"], 1, 30.0, "w")
    statements = await traced(sqlite)

    await sqlite.push(make_job(unique="k"))

    assert level_before(statements, "BEGIN IMMEDIATE") == "FULL"
    assert "INSERT INTO conveyor_jobs" in " ".join(
        statements[statements.index("BEGIN IMMEDIATE") :]
    )


async def test_sqlite_reserve_and_settles_commit_at_synchronous_normal(
    sqlite: SqliteDriver,
) -> None:
    await sqlite.push_many([make_job(), make_job()])

    first, second = await sqlite.reserve(["q"], 2, 30.0, "w")
    assert await level_now(sqlite) == "NORMAL"
    await sqlite.push(make_job())
    assert await level_now(sqlite) == "FULL"
    await sqlite.ack([Reservation(first.id, first.reservation or "")])
    assert await level_now(sqlite) == "NORMAL"
    error = ErrorInfo("E", "m", "")
    await sqlite.fail([Failure(second.id, second.reservation or "", error)])
    assert await level_now(sqlite) == "NORMAL"


async def test_sqlite_retry_failed_commits_at_synchronous_full(sqlite: SqliteDriver) -> None:
    await sqlite.push(make_job())
    [job] = await sqlite.reserve(["q"], 1, 30.0, "w")
    await sqlite.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "m", ""))])
    assert await level_now(sqlite) == "NORMAL"

    assert await sqlite.retry_failed("q") == 1

    assert await level_now(sqlite) == "FULL"


def test_sqlite_relaxes_only_statements_whose_loss_repeats_work() -> None:
    names = load_queries("conveyor.drivers.sql.sqlite", "conveyor_").keys()

    relaxed = {name for name in names if sqlite_module._level_of(name) == "NORMAL"}

    # A lost heartbeat only makes a worker look gone for a few seconds.
    assert relaxed == {
        "reserve",
        "renew",
        "ack",
        "release",
        "fail",
        "record_stats",
        "beat",
        "beat_stopping",
    }
    assert sqlite_module._level_of("push_many") == "FULL"
    assert sqlite_module._level_of("a block added later") == "FULL"  # durable unless named


# -- postgres: synchronous_commit inside the push's transaction ------------------------------


@pytest.fixture
async def postgres() -> AsyncIterator[PostgresDriver]:
    require_service("postgres", 5432, postgres_backend.START)
    prefix = postgres_backend.fresh_prefix()
    driver = PostgresDriver(postgres_backend.URL, prefix=prefix)
    await driver.open()
    yield driver
    await driver.close()
    await postgres_backend.drop_tables(prefix)


async def show_synchronous_commit(conn: psycopg.AsyncConnection[Any]) -> str:
    cursor = await conn.execute("SHOW synchronous_commit")
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def test_postgres_push_commits_with_synchronous_commit_on(
    postgres: PostgresDriver,
) -> None:
    # In the caller's transaction, whatever the push's statement set is still in force at its
    # end: the setting the commit runs with.
    async with await psycopg.AsyncConnection.connect(postgres_backend.URL) as conn:
        async with conn.transaction():
            await postgres.push(make_job(), connection=conn)
            after_push = await show_synchronous_commit(conn)
        async with conn.transaction():
            await postgres._borrower().borrow(conn, _reserve_on(postgres))
            after_reserve = await show_synchronous_commit(conn)

    assert after_push == "on"
    assert after_reserve == "off"  # the check can tell: reserve relaxes its own transaction
    assert await postgres.durability() == "synchronous_commit=on"


def _reserve_on(driver: PostgresDriver) -> Callable[[Any], Any]:
    async def reserve(tx: Any) -> Any:
        params = {"queues": '["q"]', "limit": 1, "lease": 30.0, "worker": "w"}
        params |= {"token": uuid.uuid4().hex, "now": time.time()}
        return await tx.fetch(driver._queries["reserve"], params)

    return reserve


# -- mysql: the server's flush settings, never relaxed by the driver ---------------------------


@pytest.fixture
async def mysql() -> AsyncIterator[MysqlDriver]:
    require_service("mysql", 3306, mysql_backend.START)
    prefix = mysql_backend.fresh_prefix()
    driver = MysqlDriver(mysql_backend.URL, prefix=prefix, pool_size=1)
    await driver.open()
    yield driver
    await driver.close()
    await mysql_backend.drop_tables(prefix)


async def mysql_variables() -> dict[str, str]:
    connection = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test")
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN"
                " ('innodb_flush_log_at_trx_commit', 'log_bin', 'sync_binlog')"
            )
            return {name: value for name, value in await cursor.fetchall()}
    finally:
        connection.close()


async def test_mysql_reports_the_servers_flush_settings(mysql: MysqlDriver) -> None:
    found = await mysql_variables()

    flush = f"innodb_flush_log_at_trx_commit={found['innodb_flush_log_at_trx_commit']}"
    if found["innodb_flush_log_at_trx_commit"] != "1":
        expected = flush
    elif found["log_bin"] == "OFF":
        expected = f"{flush}, binlog off"
    else:
        expected = f"{flush}, sync_binlog={found['sync_binlog']}"
    assert await mysql.durability() == expected
    assert facts_of("mysql", expected) is not None


async def test_mysql_push_leaves_the_servers_flush_settings_alone(mysql: MysqlDriver) -> None:
    # The flush settings are global only, so a driver could relax a push only by a SET in its
    # SQL, or by keeping its session out of the binary log: it does neither.
    queries = load_queries("conveyor.drivers.sql.mysql", "conveyor_")
    for query in queries.values():
        assert not re.search(r"\bSET\s+(GLOBAL|SESSION|@@)", query.sql, re.I), query.name
        if query.name != "durability":  # which reads them
            assert "sql_log_bin" not in query.sql and "flush_log" not in query.sql, query.name
    before = await mysql_variables()
    await mysql.push(make_job())  # one pooled connection: the push's session is read below
    rows = await mysql._conn.fetch(_session_binlog(), {})

    assert rows == [{"sql_log_bin": 1}]
    assert await mysql_variables() == before


def _session_binlog() -> Query:
    return Query("sql_log_bin", "binary logging", "SELECT @@SESSION.sql_log_bin AS sql_log_bin")


# -- redis: the append-only file's settings ----------------------------------------------------


async def test_redis_reports_its_append_only_settings() -> None:
    require_service("redis", 6379, redis_backend.START)
    client = Redis.from_url(redis_backend.URL, decode_responses=True)
    try:
        config = await client.config_get("append*")
    finally:
        await client.aclose()
    driver = driver_from_url(f"{redis_backend.URL}?prefix={redis_backend.fresh_prefix()}")
    try:
        reported = await driver.durability()
    finally:
        await driver.close()

    if config["appendonly"] == "yes":
        assert reported == f"appendfsync {config['appendfsync']}"
    else:
        assert reported == "appendonly no"
    assert facts_of("redis", reported) is not None


# -- every driver against the table, and the table against the docs ----------------------------


async def test_memory_and_sync_keep_jobs_in_the_process() -> None:
    for driver in (MemoryDriver(), SyncDriver()):
        assert await driver.durability() == IN_PROCESS
        assert not driver.capabilities.durable
        facts = facts_of(driver.kind, IN_PROCESS)
        assert facts is not None and facts.app_crash == "lost"


async def test_sqlite_setting_is_the_level_its_pushes_use(sqlite: SqliteDriver) -> None:
    await sqlite.push(make_job())

    reported = await sqlite.durability()

    assert reported == f"synchronous={await level_now(sqlite)}"
    facts = facts_of("sqlite", reported)
    assert facts is not None and facts.power_cut == "kept"


def test_every_durable_driver_has_a_row_that_keeps_pushes_through_a_power_cut() -> None:
    kinds = {"sqlite", "postgres", "mysql", "redis", "amqp"}
    for kind in kinds:
        assert any(row.kind == kind and row.power_cut == "kept" for row in FACTS), kind
    assert {row.kind for row in FACTS} == kinds | {"memory", "sync"}


def docs_table() -> list[tuple[str, ...]]:
    """The rows of the table in reliability.md's section on durability, cells unquoted."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Durability: what survives a crash", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [tuple(cell.strip().strip("`") for cell in row.strip("|").split("|")) for row in rows]
    return cells[2:]  # past the header and its rule


def test_docs_durability_table_is_the_drivers_table() -> None:
    expected = [
        (row.kind, row.setting, row.app_crash, row.server_crash, row.os_crash, row.power_cut)
        for row in FACTS
    ]

    assert docs_table() == expected
