"""A single push on PostgreSQL as a statement prepared on each pooled connection, its
parameters sent as text (conveyor.drivers.sql.postgres.prepared)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from conveyor.drivers.sql.postgres import PostgresDriver, prepared
from conveyor.drivers.sql.postgres.prepared import Positional, positional
from conveyor.drivers.sql.queries import Query
from conveyor.job import JobState
from tests.backends import Drivers
from tests.contract.helpers import make_job
from tests.drivers import test_postgres

pytestmark = pytest.mark.timeout(30)

server = test_postgres.server
prefix = test_postgres.prefix
drivers = test_postgres.drivers

_PREPARED = Query("prepared", "", "SELECT name FROM pg_prepared_statements ORDER BY name")


def test_named_parameters_become_positional_in_order_of_first_use() -> None:
    query = Query("push", "", "INSERT INTO t VALUES (%(b)s, %(a)s, %(b)s::float8)")

    assert positional(query) == Positional(
        b"conveyor_push", b"INSERT INTO t VALUES ($1, $2, $1::float8)", ("b", "a")
    )


def test_only_statements_run_one_at_a_time_and_without_a_bare_percent_are_short() -> None:
    assert positional(Query("ack", "", "UPDATE t SET a = %(a)s")) is None
    assert positional(Query("push", "", "SELECT %(a)s LIKE 'x%%'")) is None


async def test_single_pushes_run_one_statement_prepared_once_per_connection(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    job = make_job(payload='{"text": "é ✓"}', delay=0.0, timeout=2.5, meta={"k": "v"})
    for each in (job, make_job(), make_job()):
        await driver.push(each)

    prepared = await driver._conn.fetch(_PREPARED, {})  # the pool's one connection
    assert [row["name"] for row in prepared] == ["conveyor_push"]
    stored = await driver.get(job.id)
    assert stored is not None and stored.state is JobState.PENDING
    assert (stored.payload, stored.timeout, stored.meta) == ('{"text": "é ✓"}', 2.5, {"k": "v"})
    assert (await driver.counts(["q"]))["q"].pending == 3


async def test_a_push_after_the_server_forgot_the_statement_prepares_it_again(
    drivers: Drivers[PostgresDriver],
) -> None:
    # DEALLOCATE ALL or DISCARD ALL (a pooler's reset) drops a session's prepared statements:
    # each push on that connection would otherwise fail, invalid_sql_statement_name.
    driver = await drivers.open()
    await driver.push(make_job())
    await driver._conn.execute(Query("discard", "", "DEALLOCATE ALL"), {})

    await driver.push(make_job())
    assert (await driver.counts(["q"]))["q"].pending == 2


def test_a_nul_in_a_text_parameter_is_refused_not_cut_short() -> None:
    # libpq sends text parameters as C strings: the NUL would end the text there.
    with pytest.raises(psycopg.DataError, match="NUL"):
        prepared._text("a\x00b")
    assert prepared._text("é") == "é".encode()
    assert [prepared._text(value) for value in (None, True, 3, 0.5)] == [None, b"t", b"3", b"0.5"]


async def test_a_push_from_a_plain_thread_takes_the_short_way_too(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is not None
    # The statement is there to drop on the thread's connection (else invalid name), and a
    # push after that prepares it again.
    forget = Query("forget", "", "DEALLOCATE conveyor_push")
    assert await asyncio.to_thread(driver._threads.execute, forget, {})

    assert await asyncio.to_thread(driver.push_in_thread, make_job()) is not None
    assert (await driver.counts(["q"]))["q"].pending == 2
