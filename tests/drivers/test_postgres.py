"""What only the PostgreSQL driver has: LISTEN/NOTIFY, transactional push, table prefixes,
migrations, URLs, error messages, recovery from lost connections, and its SQL plans.

The protocol's behaviour is tested by the contract and worker suites, which run on postgres
too; these tests cover the rest. Each test works under a table prefix of its own, dropped
afterwards, on the server of this machine (tests.backends.postgres.URL), which is never
restarted: a lost server is played by a TCP proxy the test starts, or by terminating the
test's own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import conveyor.drivers.sql.postgres.connection as pg_connection
from conveyor import Job, PayloadError, Registry
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Failure, Release, Reservation
from conveyor.drivers.sql.adapter import REQUIRED_QUERIES
from conveyor.drivers.sql.postgres import COPY_FROM, PostgresDriver
from conveyor.drivers.sql.queries import Query, load_migrations, load_queries
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError
from conveyor.job import ErrorInfo, JobState
from tests.backends import Drivers, eventually, require_service
from tests.backends.locks import runs_of_a_job_acked_behind
from tests.backends.postgres import START, URL, drop_tables, fresh_prefix
from tests.backends.private import private_postgres
from tests.contract.helpers import cancelled_push_is_still_stored, make_job

PACKAGE = "conveyor.drivers.sql.postgres"

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def server() -> None:
    require_service("postgres", 5432, START)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A table prefix of this test's own; its tables are dropped when the test ends."""
    fresh = fresh_prefix()
    yield fresh
    await drop_tables(fresh)


@pytest.fixture
async def drivers(prefix: str) -> AsyncIterator[Drivers[PostgresDriver]]:
    made = Drivers(PostgresDriver, URL, prefix)
    yield made
    await made.close_all()


async def sql(statement: str, *args: Any) -> list[dict[str, Any]]:
    """Rows read with a plain connection, behind the driver's back."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(statement, args or None)
        return await cursor.fetchall() if cursor.description else []


async def idle_wait(
    driver: PostgresDriver, queues: list[str], timeout: float
) -> asyncio.Task[None]:
    """What an idle worker does: an empty reserve, then a wait, started in a task."""
    assert await driver.reserve(queues, 1, 30.0, "w") == []
    task = asyncio.create_task(driver.wait(queues, timeout))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    return task


# -- LISTEN/NOTIFY --------------------------------------------------------------------------------


async def test_tables_go_to_the_schema_the_search_path_names_not_one_a_prefix_names(
    prefix: str,
) -> None:
    schema = f"s{prefix}"
    with pytest.raises(ConfigError, match=r"search_path \(\?options=-csearch_path%3Dmyschema\)"):
        PostgresDriver(URL, prefix=f"{schema}.{prefix}")
    await sql(f'CREATE SCHEMA "{schema}"')
    driver = PostgresDriver(f"{URL}?options=-csearch_path%3D{schema}", prefix=prefix)
    try:
        await driver.push(make_job())
        [job] = await driver.reserve(["q"], 1, 30.0, "w")
        await driver.ack([Reservation(job.id, job.reservation or "")])
        tables = await sql(
            "SELECT DISTINCT table_schema FROM information_schema.tables"
            " WHERE starts_with(table_name, %s)",
            prefix,
        )
        assert tables == [{"table_schema": schema}]
    finally:
        await driver.close()
        await sql(f'DROP SCHEMA "{schema}" CASCADE')


async def test_push_from_another_driver_wakes_an_idle_wait_within_100_ms(
    drivers: Drivers[PostgresDriver],
) -> None:
    waiting, pushing = await drivers.open(), await drivers.open()
    delays = []
    for _ in range(5):
        waiter = await idle_wait(waiting, ["q"], 5.0)
        await pushing.push(make_job())
        pushed = time.perf_counter()
        await asyncio.wait_for(waiter, 5.0)
        delays.append(time.perf_counter() - pushed)
        assert len(await waiting.reserve(["q"], 10, 30.0, "w")) == 1

    # Most within 100 ms; on a loaded machine one may lag, but every one comes long before
    # the 5 s timeout that would wake a wait nobody notified.
    assert sorted(delays)[2] < 0.1, delays
    assert max(delays) < 1.0, delays


async def test_a_batch_copied_in_keeps_push_manys_order_ids_and_wake_up(
    drivers: Drivers[PostgresDriver],
) -> None:
    waiting, pushing = await drivers.open(), await drivers.open()
    waiter = await idle_wait(waiting, ["q"], 5.0)
    jobs = [make_job(priority=i % 2) for i in range(COPY_FROM)]

    assert await pushing.push_many(jobs) == [job.id for job in jobs]
    await asyncio.wait_for(waiter, 1.0)  # woken, long before the wait's timeout
    # Pushed again (a retry after a lost reply), the batch stores nothing twice.
    assert await pushing.push_many(jobs) == [job.id for job in jobs]

    reserved = await waiting.reserve(["q"], 2 * COPY_FROM, 30.0, "w")
    assert len(reserved) == COPY_FROM
    # Each job stored as given.
    stored = {job.id: job for job in reserved}
    assert [(stored[job.id].payload, stored[job.id].priority) for job in jobs] == [
        (job.payload, job.priority) for job in jobs
    ]


async def test_a_batch_copied_in_stores_every_field_as_given(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    # COPY's text format escapes these; a job's options may differ from the next one's.
    payloads = ['{"s":"tab\\tnew\\nline back\\\\slash"}', '"\t\n\r\\ é"', "{}"]
    jobs = [
        make_job(
            queue=["q", "q\\tab\t\\n"][i % 2],
            payload=payloads[i % 3],
            delay=3600.0 * (i % 2),
            max_attempts=1 + i % 4,
            priority=i % 3,
            timeout=None if i % 2 else 2.5,
            retry_delay=None if i % 2 else '{"kind":"fixed"}',
            meta={"n": i, "tab": "\t"} if i % 5 else {},
        )
        for i in range(COPY_FROM)
    ]
    alike = [replace(jobs[0], id=make_job().id, payload=payloads[i % 3]) for i in range(COPY_FROM)]
    before = time.time()

    assert await driver.push_many(jobs) == [job.id for job in jobs]
    assert await driver.push_many(alike) == [job.id for job in alike]

    for job in jobs + alike:
        info = await driver.get(job.id)
        assert info is not None
        assert (info.queue, info.name, info.payload, info.max_attempts, info.priority) == (
            job.queue, job.name, job.payload, job.max_attempts, job.priority
        )  # fmt: skip
        assert (info.timeout, info.retry_delay, info.meta) == (
            job.timeout, job.retry_delay, job.meta
        )  # fmt: skip
        assert info.available_at - info.created_at == pytest.approx(job.delay)
        assert before - 1.0 < info.created_at < time.time() + 1.0


async def test_a_copied_batch_with_one_id_stored_already_stores_the_others(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    jobs = [make_job() for _ in range(COPY_FROM)]
    kept = jobs[7]
    await driver.push(replace(kept, payload='"first"'))

    assert await driver.push_many(jobs) == [job.id for job in jobs]

    stored = await driver.get(kept.id)
    assert stored is not None and stored.payload == '"first"'  # the first push is kept
    assert len(await driver.reserve(["q"], 2 * COPY_FROM, 30.0, "w")) == COPY_FROM


async def test_registry_push_many_streams_each_chunk_all_or_none(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    # Chunks of 2,000 go to the server as two parts each (push.ENCODE_STEP), in one COPY
    # per chunk; a payload that fails in the second chunk's second part stores none of it.
    waiting = await drivers.open()
    waiter = await idle_wait(waiting, ["rows"], 5.0)
    registry = Registry()
    registry.queue("rows", driver=f"{URL}?prefix={prefix}", workers=["w"])
    registry.worker("w")
    registry.job("row")(_never_run)
    told: list[str] = []
    registry.hook("pushed")(lambda event: told.append(event.job_id))
    payloads: list[Any] = [{"n": n} for n in range(3_500)] + [{"n": "not a number"}]
    try:
        with pytest.raises(PayloadError):
            await registry.push_many("rows", "row", payloads, chunk=2_000)
        await asyncio.wait_for(waiter, 1.0)  # the first chunk woke a worker's wait

        assert (await registry.queue_info())["rows"].pending == 2_000
        assert len(told) == 2_000
        again = await registry.push_many("rows", "row", payloads[:3_500], chunk=2_000)
        assert again == told[2_000:]
    finally:
        await registry.close()
    reserved = await waiting.reserve(["rows"], 6_000, 30.0, "w")
    assert [json.loads(job.payload)["n"] for job in reserved] == [*range(2_000), *range(3_500)]


async def planner_rows(prefix: str) -> float:
    """What pg_class says the jobs table holds (the planner's count)."""
    [row] = await sql("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", f"{prefix}jobs")
    return float(row["reltuples"])


async def burst_after_a_near_empty_count(driver: PostgresDriver, prefix: str, jobs: int) -> None:
    """One job pushed and the table counted with it, as once a queue drained; then `jobs` more."""
    await driver.push(make_job())
    await sql(f"VACUUM ANALYZE {prefix}jobs")
    await driver.push_many([make_job() for _ in range(jobs)])
    assert await planner_rows(prefix) == 1


async def test_a_full_reserve_gets_a_table_counted_near_empty_counted_again(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    """After a burst into a drained queue the planner's count says a row or two; reserves then
    planned for that took 30-130 ms each (statistics.py). The first full reserve has the table
    counted again, in the background, and only once every CHECK_EVERY seconds."""
    driver = await drivers.open()
    await burst_after_a_near_empty_count(driver, prefix, 300)
    assert len(await driver.reserve(["q"], 100, 30.0, "w")) == 100

    async def counted() -> bool:
        return await planner_rows(prefix) >= 100

    await eventually(counted)
    # Counted near empty once more: no second check within CHECK_EVERY.
    await sql(f"DELETE FROM {prefix}jobs")
    await burst_after_a_near_empty_count(driver, prefix, 300)
    assert len(await driver.reserve(["q"], 100, 30.0, "w")) == 100
    await asyncio.sleep(0.5)
    assert await planner_rows(prefix) == 1


async def test_a_reserve_short_of_its_batch_leaves_the_count_alone(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    driver = await drivers.open()
    await burst_after_a_near_empty_count(driver, prefix, 50)
    assert len(await driver.reserve(["q"], 100, 30.0, "w")) == 51
    await asyncio.sleep(0.5)
    assert await planner_rows(prefix) == 1


async def test_wait_ignores_pushes_to_other_queues(drivers: Drivers[PostgresDriver]) -> None:
    waiting, pushing = await drivers.open(), await drivers.open()
    waiter = await idle_wait(waiting, ["q"], 0.5)
    begin = time.monotonic()

    await pushing.push(make_job("other"))
    await waiter

    assert time.monotonic() - begin >= 0.4


@pytest.mark.parametrize("yields", [0, 1, 2, 3])
async def test_cancelled_wait_ends_at_once(drivers: Drivers[PostgresDriver], yields: int) -> None:
    # Regression: with asyncio.wait_for, a cancel landing just as an inner step finished was
    # swallowed on Python 3.11, and a stopping worker hung for a whole poll interval.
    driver = await drivers.open()
    assert await driver.reserve(["q"], 1, 30.0, "w") == []  # listening
    for _ in range(5):
        waiter = asyncio.create_task(driver.wait(["q"], 5.0))
        for _ in range(yields):
            await asyncio.sleep(0)
        waiter.cancel()

        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 2.0)  # well before the wait's own 5 s


async def test_push_between_empty_reserve_and_wait_is_not_lost(
    drivers: Drivers[PostgresDriver],
) -> None:
    waiting, pushing = await drivers.open(), await drivers.open()
    assert await waiting.reserve(["q"], 1, 30.0, "w") == []
    await pushing.push(make_job())
    await asyncio.sleep(0.05)  # the notification has arrived before the wait begins
    begin = time.monotonic()

    await waiting.wait(["q"], 5.0)

    assert time.monotonic() - begin < 2.0  # long before the 5 s timeout


async def test_release_from_another_driver_wakes_a_wait(drivers: Drivers[PostgresDriver]) -> None:
    waiting, working = await drivers.open(), await drivers.open()
    await working.push(make_job())
    [job] = await working.reserve(["q"], 1, 30.0, "w2")
    assert job.reservation is not None
    waiter = await idle_wait(waiting, ["q"], 5.0)

    await working.release([Release(job.id, job.reservation)])

    await asyncio.wait_for(waiter, 2.0)  # long before the wait's own 5 s


async def test_prefixes_have_channels_of_their_own(drivers: Drivers[PostgresDriver]) -> None:
    waiting = await drivers.open()
    other_prefix = fresh_prefix()
    try:
        other = await drivers.open(prefix=other_prefix)
        waiter = await idle_wait(waiting, ["q"], 0.5)
        begin = time.monotonic()

        await other.push(make_job())
        await waiter

        assert time.monotonic() - begin >= 0.4
    finally:
        await drivers.made[-1].close()
        await drop_tables(other_prefix)


# -- transactional push ---------------------------------------------------------------------------


async def test_push_in_a_transaction_that_commits_stores_the_job(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    job = make_job()
    async with await psycopg.AsyncConnection.connect(URL) as conn, conn.transaction():
        assert await driver.push(job, connection=conn) == job.id
        assert await driver.get(job.id) is None  # not visible before the commit

    [reserved] = await driver.reserve(["q"], 1, 30.0, "w")
    assert reserved.id == job.id


async def test_push_in_a_transaction_that_rolls_back_stores_nothing(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    job = make_job()
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        await driver.push_many([job, make_job()], connection=conn)
        await conn.rollback()

    assert await driver.get(job.id) is None
    assert await driver.reserve(["q"], 10, 30.0, "w") == []


async def test_rolled_back_push_wakes_no_one_and_committed_push_does(
    drivers: Drivers[PostgresDriver],
) -> None:
    waiting, pushing = await drivers.open(), await drivers.open()
    waiter = await idle_wait(waiting, ["q"], 5.0)
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        await pushing.push(make_job(), connection=conn)
        await conn.rollback()
        await asyncio.sleep(0.2)
        assert not waiter.done()

        await pushing.push(make_job(), connection=conn)
        await conn.commit()

    await asyncio.wait_for(waiter, 2.0)  # long before the wait's own 5 s


async def test_push_on_a_sync_connection_follows_its_transaction(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    kept, dropped = make_job(), make_job()
    with psycopg.Connection.connect(URL) as conn:
        await driver.push(dropped, connection=conn)
        conn.rollback()
        await driver.push(kept, connection=conn)
        conn.commit()

    assert await driver.get(dropped.id) is None
    assert [job.id for job in await driver.reserve(["q"], 10, 30.0, "w")] == [kept.id]


async def test_push_in_a_transaction_returns_the_holder_of_a_unique_key(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    holder = make_job(unique="k")
    await driver.push(holder)
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        ids = await driver.push_many([make_job(unique="k"), make_job(unique="k2")], connection=conn)
        await conn.commit()

    assert ids[0] == holder.id
    assert (await driver.counts(["q"]))["q"].pending == 2


async def test_unique_push_whose_holder_finishes_meanwhile_stores_its_job(
    drivers: Drivers[PostgresDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # READ COMMITTED: the insert skips on the holder, then the holder is acked and committed
    # by another worker before the push looks it up. The push must not return its own id
    # without having stored the job (a job lost without a word).
    driver, other = await drivers.open(), await drivers.open()
    holder = make_job(unique="k")
    await driver.push(holder)
    [reserved] = await other.reserve(["q"], 1, 30.0, "w")
    fetch = pg_connection._Transaction.fetch
    acked: list[set[str]] = []

    async def ack_first(self: Any, query: Query, params: Any) -> list[Any]:
        if query.name == "push_many_holders" and not acked:
            acked.append(await other.ack([Reservation(reserved.id, str(reserved.reservation))]))
        return await fetch(self, query, params)

    monkeypatch.setattr(pg_connection._Transaction, "fetch", ack_first)
    job = make_job(unique="k")

    assert await driver.push(job) == job.id

    assert acked == [{holder.id}]
    assert await driver.get(job.id) is not None
    assert [got.id for got in await other.reserve(["q"], 10, 30.0, "w")] == [job.id]


async def test_retry_failed_leaves_a_job_failed_when_a_concurrent_push_takes_its_key(
    drivers: Drivers[PostgresDriver],
) -> None:
    # The push is not committed when retry_failed looks for a holder, and commits while the
    # statement waits on jobs_unique: as on every driver, the job stays failed, no error.
    driver = await drivers.open()
    failed = make_job(unique="k")
    await driver.push(failed)
    [reserved] = await driver.reserve(["q"], 1, 30.0, "w")
    token = str(reserved.reservation)
    await driver.fail([Failure(failed.id, token, ErrorInfo("E", "m"))])
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        holder = make_job(unique="k")
        await driver.push(holder, connection=conn)
        retry = asyncio.create_task(driver.retry_failed("q"))
        # pg_stat_activity keeps the first 1 kB of a statement: the prefix is in the first line
        await eventually(lambda: blocked_on_a_lock(f"{drivers.prefix}jobs"))
        await conn.commit()

        assert await retry == 0

    assert [job.id for job in await driver.list_jobs("q", JobState.FAILED)] == [failed.id]
    assert [job.id for job in await driver.list_jobs("q", JobState.PENDING)] == [holder.id]


async def test_push_in_a_repeatable_read_transaction_conflicting_says_to_run_it_again(
    drivers: Drivers[PostgresDriver],
) -> None:
    """A unique key pushed and committed after the caller's snapshot: PostgreSQL aborts the
    caller's transaction. It said only "could not serialize access due to concurrent update"."""
    driver = await drivers.open()
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.execute("SELECT 1")  # the snapshot is taken
        holder = make_job(unique="k")
        await driver.push(holder)
        with pytest.raises(DriverError, match=r"concurrent update.*roll it back and run it"):
            await driver.push(make_job(unique="k"), connection=conn)
        await conn.rollback()
        assert await driver.push(make_job(unique="k"), connection=conn) == holder.id


async def test_push_waiting_on_a_callers_uncommitted_unique_key_fails_naming_the_lock(
    drivers: Drivers[PostgresDriver],
) -> None:
    """A pooled push of a unique key that a caller's open transaction pushed waits for that
    transaction (the unique index). Past its timeout it said the server "gave no answer", and
    broke a connection that was fine; now the server gives the wait up first, and says so
    (BackendUnavailableError: it may well succeed once that transaction ends)."""
    driver = await drivers.open(timeout=1.0)
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        mine = make_job(unique="k")
        await driver.push(mine, connection=conn)

        with pytest.raises(BackendUnavailableError, match=r"waited 0\.8s for a lock"):
            await driver.push(make_job(unique="k"))

        await conn.commit()
    assert await driver.push(make_job(unique="k")) == mine.id


async def blocked_on_a_lock(fragment: str) -> bool:
    """Whether a statement whose text holds `fragment` is waiting for a lock."""
    rows = await sql(
        "SELECT count(*) AS n FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND strpos(query, %s) > 0",
        fragment,
    )
    return bool(rows[0]["n"])


async def test_push_on_something_not_a_psycopg_connection_raises_config_error(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()

    with pytest.raises(ConfigError, match=r"psycopg\.AsyncConnection"):
        await driver.push(make_job(), connection=object())


async def test_push_on_a_connection_to_another_database_raises_config_error_naming_both(
    drivers: Drivers[PostgresDriver],
) -> None:
    # Its tables are named without a database: were the other one migrated too (a staging
    # database beside production), the job would be stored where no worker of this driver looks.
    driver = await drivers.open()
    other = URL.rsplit("/", 1)[0] + "/postgres"
    job = make_job()
    async with await psycopg.AsyncConnection.connect(other) as conn:
        with pytest.raises(ConfigError, match=r"using database 'postgres'.* in 'test'"):
            await driver.push(job, connection=conn)
    with (
        psycopg.connect(other) as sync_conn,
        pytest.raises(ConfigError, match="using database 'postgres'"),
    ):
        await driver.push_many([job], connection=sync_conn)

    assert await driver.get(job.id) is None


async def test_push_on_a_connection_whose_search_path_finds_other_tables_raises_config_error(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    """The driver's tables in a schema of their own (the URL's options=-csearch_path=...), and
    the application's connection on the default search_path, where the same prefix's tables
    also exist (an install from before the move): the job went into those, where no worker
    of this driver looks; with none there, the push failed with "relation does not exist"."""
    schema = f"{prefix}schema"
    await sql(f"CREATE SCHEMA {schema}")
    try:
        await drivers.open()  # the same prefix's tables on the default search_path
        driver = await drivers.open(f"{URL}?options=-csearch_path%3D{schema}")
        job = make_job()
        async with await psycopg.AsyncConnection.connect(URL) as conn:
            with pytest.raises(ConfigError, match=rf"search_path.*driver's '{schema}'"):
                await driver.push(job, connection=conn)
        async with await psycopg.AsyncConnection.connect(URL) as conn:
            await conn.execute(f"SET search_path = {schema}")
            await driver.push(job, connection=conn)
            await conn.commit()

        assert [got.id for got in await driver.reserve(["q"], 10, 30.0, "w")] == [job.id]
        assert await sql(f"SELECT id FROM public.{prefix}jobs") == []
    finally:
        await drivers.close_all()
        await sql(f"DROP SCHEMA {schema} CASCADE")


async def test_push_on_a_connection_to_another_server_raises_config_error(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    """Another server with a database of the same name, migrated under the same prefix (a
    staging server beside production): the job was stored there, where no worker looks."""
    driver = await drivers.open()
    with private_postgres() as server:
        other = server.url.rsplit("/", 1)[0] + "/test"
        async with await psycopg.AsyncConnection.connect(server.url, autocommit=True) as conn:
            await conn.execute("CREATE DATABASE test")
        staging = PostgresDriver(other, prefix=prefix)
        await staging.open()  # the same tables there
        try:
            job = make_job()
            async with await psycopg.AsyncConnection.connect(other) as conn:
                with pytest.raises(ConfigError, match="another server than"):
                    await driver.push(job, connection=conn)
                await conn.commit()
            assert await staging.get(job.id) is None
        finally:
            await staging.close()


async def test_a_lent_connections_database_is_checked_on_its_first_push_only(
    drivers: Drivers[PostgresDriver], tmp_path: Path
) -> None:
    """The check costs a round trip: paid once per connection (which never changes database),
    not on every push of a web app's long-lived connection. Counted in libpq's own trace."""
    driver = await drivers.open()
    trace = tmp_path / "libpq.trace"
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        with trace.open("w") as sink:
            conn.pgconn.trace(sink.fileno())
            first, second = make_job(), make_job()
            await driver.push(first, connection=conn)
            await driver.push(second, connection=conn)
            conn.pgconn.untrace()
        assert await driver.get(first.id) is not None and await driver.get(second.id) is not None
    assert trace.read_text().count("current_database") == 1


async def test_push_on_a_closed_connection_raises_config_error(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open()
    conn = await psycopg.AsyncConnection.connect(URL)
    await conn.close()

    with pytest.raises(ConfigError, match="connection= is closed"):
        await driver.push(make_job(), connection=conn)


async def test_push_on_a_connection_in_a_failed_transaction_raises_config_error(
    drivers: Drivers[PostgresDriver],
) -> None:
    """It said "PostgreSQL current_database failed", a statement the caller never wrote."""
    driver = await drivers.open()
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        with pytest.raises(ConfigError, match=r"connection= is in a failed transaction.*roll"):
            await driver.push(make_job(), connection=conn)
        await conn.rollback()
        job = make_job()
        await driver.push(job, connection=conn)
        await conn.commit()
    with psycopg.connect(URL) as sync_conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            sync_conn.execute("SELECT 1 / 0")
        with pytest.raises(ConfigError, match="connection= is in a failed transaction"):
            await driver.push_many([make_job()], connection=sync_conn)

    assert [got.id for got in await driver.reserve(["q"], 10, 30.0, "w")] == [job.id]


async def test_push_on_a_connection_in_pipeline_mode_raises_config_error(
    drivers: Drivers[PostgresDriver],
) -> None:
    """It raised "ValueError: not enough values to unpack": in pipeline mode a statement's
    rows come only at the sync, so the push's reads found none."""
    driver = await drivers.open()
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        async with conn.pipeline():
            with pytest.raises(ConfigError, match=r"pipeline mode.*outside the pipeline"):
                await driver.push_many([make_job(unique="k"), make_job()], connection=conn)
        job = make_job()
        await driver.push(job, connection=conn)  # outside it, the same connection works
        await conn.commit()

    assert [got.id for got in await driver.reserve(["q"], 10, 30.0, "w")] == [job.id]


async def test_push_on_a_connection_making_raw_cursors_stores_the_jobs(
    drivers: Drivers[PostgresDriver],
) -> None:
    """A connection whose cursor_factory is psycopg's raw cursor ($1 placeholders): the push
    made its cursors with it and failed ("raw queries require a sequence of parameters")."""
    driver = await drivers.open()
    jobs = [make_job(unique="k"), make_job(unique="k"), make_job()]
    async with await psycopg.AsyncConnection.connect(
        URL, cursor_factory=psycopg.AsyncRawCursor
    ) as conn:
        ids = await driver.push_many(jobs, connection=conn)
    with psycopg.connect(URL, cursor_factory=psycopg.RawCursor) as sync_conn:
        again = await driver.push(make_job(unique="k"), connection=sync_conn)

    assert ids == [jobs[0].id, jobs[0].id, jobs[2].id]
    assert again == jobs[0].id


async def test_push_on_a_lost_connection_says_it_is_the_callers_to_open_again(
    drivers: Drivers[PostgresDriver],
) -> None:
    """It said PostgreSQL was unreachable during "current_database" (a statement the caller
    never wrote) and that the pool reconnects by itself: no pool has the caller's connection."""
    driver = await drivers.open()
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        await driver.push(make_job(), connection=conn)  # checked: the next push is the work
        await sql("SELECT pg_terminate_backend(%s)", conn.info.backend_pid)
        with pytest.raises(BackendUnavailableError, match=r"connection= was lost.*run your"):
            await driver.push(make_job(), connection=conn)
    with psycopg.connect(URL) as sync_conn:
        await sql("SELECT pg_terminate_backend(%s)", sync_conn.info.backend_pid)
        with pytest.raises(BackendUnavailableError, match="connection= was lost during the push"):
            await driver.push(make_job(), connection=sync_conn)

    assert (await driver.counts(["q"]))["q"].pending == 0


async def test_registry_push_passes_the_connection_through(prefix: str) -> None:
    registry = receipt_registry(prefix)
    try:
        async with await psycopg.AsyncConnection.connect(URL) as conn:
            async with conn.transaction():
                job_id = await registry.push("mail", "receipt", {"order": 1}, connection=conn)
                assert (await registry.queue_info())["mail"].pending == 0
            assert (await registry.queue_info())["mail"].pending == 1
        assert job_id
    finally:
        await registry.close()


class ThreadNoting(psycopg.Connection[Any]):
    """A psycopg connection noting the threads it waited for the server on (every statement
    its cursors run, whatever made them)."""

    threads: set[int]

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        self.threads = getattr(self, "threads", set()) | {threading.get_ident()}
        return super().wait(*args, **kwargs)


def test_blocking_push_joins_a_sync_transaction() -> None:
    """What a Django or Flask view does: push through the blocking facade, on its own
    psycopg connection, inside its own transaction. The statements run in the view's thread,
    the connection's owner (they ran in a thread of asyncio's)."""
    prefix = fresh_prefix()
    registry = receipt_registry(prefix)
    try:
        with ThreadNoting.connect(URL) as conn:
            with conn.transaction():
                kept = registry.blocking.push("mail", "receipt", {"order": 1}, connection=conn)
            with contextlib.suppress(ZeroDivisionError), conn.transaction():
                dropped = registry.blocking.push("mail", "receipt", {"order": 2}, connection=conn)
                raise ZeroDivisionError  # the view fails: its transaction rolls back

            assert conn.threads == {threading.get_ident()}

        assert registry.blocking.job_info(kept) is not None
        assert registry.blocking.job_info(dropped) is None
    finally:
        registry.blocking.close()
        asyncio.run(drop_tables(prefix))


async def test_blocking_push_on_an_async_connection_raises_config_error(prefix: str) -> None:
    registry = receipt_registry(prefix)
    try:
        async with await psycopg.AsyncConnection.connect(URL) as conn:
            with pytest.raises(ConfigError, match=r"its event loop.*psycopg\.Connection"):
                await asyncio.to_thread(
                    registry.blocking.push, "mail", "receipt", {"order": 1}, connection=conn
                )
    finally:
        await asyncio.to_thread(registry.blocking.close)


def receipt_registry(prefix: str) -> Registry:
    """A registry whose queue "mail" is on this test's postgres tables, with job "receipt"."""
    registry = Registry()
    registry.queue("mail", driver=f"{URL}?prefix={prefix}", workers=["w"])
    registry.worker("w")
    registry.job("receipt")(_never_run)
    return registry


async def _never_run(job: Job[dict[str, int]]) -> None:
    """A handler these tests register but never run."""


# -- table prefix -------------------------------------------------------------------------------


async def test_prefix_keeps_two_sets_of_tables_apart(drivers: Drivers[PostgresDriver]) -> None:
    other_prefix = fresh_prefix()
    try:
        mail = await drivers.open()
        billing = await drivers.open(prefix=other_prefix)

        await mail.push(make_job())

        assert (await mail.counts(["q"]))["q"].pending == 1
        assert (await billing.counts(["q"]))["q"].pending == 0
        rows = await sql(
            "SELECT tablename FROM pg_tables WHERE starts_with(tablename, %s)"
            " OR starts_with(tablename, %s)",
            drivers.prefix,
            other_prefix,
        )
        names = {row["tablename"] for row in rows}
        for table in ("jobs", "workers", "schema_version"):
            assert {drivers.prefix + table, other_prefix + table} <= names
    finally:
        await drivers.made[-1].close()
        await drop_tables(other_prefix)


@pytest.mark.parametrize("bad", ["", "1jobs_", "my-app_", "a b", "x;drop", "p" * 32])
def test_bad_prefix_raises_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        PostgresDriver(URL, prefix=bad)


# -- migrations ---------------------------------------------------------------------------------


async def test_migrations_are_applied_once_by_drivers_opening_at_once(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    racing = [drivers.make() for _ in range(6)]

    await asyncio.gather(*(driver.open() for driver in racing))
    for driver in racing:
        await driver.push(make_job())
    await racing[0].close()
    await racing[0].open()

    recorded = await sql(f"SELECT version, name FROM {prefix}schema_version ORDER BY version")
    expected = [(m.version, m.name) for m in load_migrations(PACKAGE, prefix)]
    assert [(row["version"], row["name"]) for row in recorded] == expected
    assert recorded[0]["name"] == "0001_init.sql"
    assert (await racing[1].counts(["q"]))["q"].pending == 6


async def test_migrate_false_refuses_a_schema_never_created(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    driver = drivers.make(migrate=False)

    with pytest.raises(ConfigError, match="conveyor migrate") as caught:
        await driver.open()

    assert "version 0" in str(caught.value) and prefix in str(caught.value)
    assert await sql("SELECT 1 FROM pg_tables WHERE starts_with(tablename, %s)", prefix) == []


async def test_migrate_false_opens_once_the_schema_is_migrated(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = drivers.make(migrate=False)

    await driver.migrate()  # what `conveyor migrate` runs
    await driver.close()
    await driver.open()

    assert await driver.push(make_job())


async def test_migrate_false_from_url(prefix: str) -> None:
    driver = PostgresDriver.from_url(f"{URL}?prefix={prefix}&migrate=false")

    with pytest.raises(ConfigError, match="migrate"):
        await driver.push(make_job())


# -- URLs ---------------------------------------------------------------------------------------


def test_driver_from_url_makes_a_postgres_driver_for_both_schemes() -> None:
    for scheme in ("postgresql", "postgres"):
        driver = driver_from_url(f"{scheme}://postgres@127.0.0.1:5432/test?prefix=app_")

        assert isinstance(driver, PostgresDriver)
        assert (driver.kind, driver.prefix) == ("postgres", "app_")
        capabilities = driver.capabilities
        assert capabilities.notify and capabilities.durable and capabilities.shared
        assert capabilities.transactional


def test_from_url_reads_conveyors_options_and_leaves_libpqs() -> None:
    driver = PostgresDriver.from_url(
        f"{URL}?prefix=mail_&migrate=no&pool_size=3&application_name=my%20app&connect_timeout=5"
    )

    assert (driver.prefix, driver.migrate_on_open) == ("mail_", False)
    assert driver.target.conninfo == f"{URL}?application_name=my%20app&connect_timeout=5"


async def test_libpq_options_from_the_url_reach_the_server(
    drivers: Drivers[PostgresDriver],
) -> None:
    name = f"conveyor-test-{uuid.uuid4().hex[:8]}"
    driver = await drivers.open(f"{URL}?application_name={name}")

    await driver.counts(["q"])

    rows = await sql("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s", name)
    assert rows[0]["n"] >= 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@127.0.0.1/test", "not a PostgreSQL URL"),
        ("127.0.0.1:5432/test", "not a PostgreSQL URL"),
        (f"{URL}?migrate=maybe", "migrate='maybe'"),
        (f"{URL}?pool_size=many", "pool_size='many'"),
        (f"{URL}?pool_size=0", "pool_size='0' is not a positive whole number"),
        (f"{URL}?prefix=bad-prefix", "prefix"),
        (f"{URL}?no_such_option=1", "bad PostgreSQL connection settings"),
    ],
)
def test_from_url_rejects_what_it_cannot_use(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PostgresDriver.from_url(url)


@pytest.mark.parametrize("option", ["prefix=mail_", "migrate=false", "pool_size=3", "timeout=5"])
def test_conveyors_option_given_to_the_constructor_says_to_use_from_url(option: str) -> None:
    # Before: libpq's "invalid URI query parameter", the value masked as if a password.
    name = option.partition("=")[0]
    with pytest.raises(
        ConfigError, match=f"{name}= is conveyor's option.*from_url.*keyword"
    ) as caught:
        PostgresDriver(f"postgresql://app:s3cret-pw@127.0.0.1:5432/test?{option}")
    assert "s3cret-pw" not in str(caught.value)


def test_bad_url_message_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresDriver.from_url("postgresql://app:s3cret-pw@127.0.0.1:5432/test?bogus=1")

    assert "s3cret-pw" not in str(caught.value)
    assert "app:***@127.0.0.1" in str(caught.value)


async def test_unreachable_server_raises_backend_unavailable_without_the_password(
    prefix: str,
) -> None:
    driver = PostgresDriver("postgresql://app:s3cret-pw@127.0.0.1:1/test", prefix=prefix)

    with pytest.raises(BackendUnavailableError) as caught:
        await driver.push(make_job())

    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql://app:***@127.0.0.1:1/test" in message
    assert "server is running" in message
    assert not isinstance(caught.value.__cause__, psycopg.Error)  # its text is not shown


def test_keyword_conninfo_is_shown_without_its_password() -> None:
    target = pg_connection.Target("host=127.0.0.1 user=app password=s3cret-pw dbname=test")

    assert "s3cret-pw" not in target.shown
    assert target.mask("boom s3cret-pw") == "boom ***"


# -- errors and cancellation --------------------------------------------------------------------


async def test_postgres_errors_reach_callers_as_driver_errors(
    drivers: Drivers[PostgresDriver], prefix: str
) -> None:
    driver = await drivers.open()
    await sql(f"DROP TABLE {prefix}jobs")

    with pytest.raises(DriverError, match="PostgreSQL get failed") as caught:
        await driver.get("x")

    assert not isinstance(caught.value, BackendUnavailableError)
    assert isinstance(caught.value.__cause__, psycopg.Error)


async def test_cancelled_call_still_completes(drivers: Drivers[PostgresDriver]) -> None:
    """A worker cancelled while its ack is in flight must not leave the ack half-sent."""
    driver = await drivers.open()
    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, 30.0, "w")
    assert job.reservation is not None

    ack = asyncio.create_task(driver.ack([Reservation(job.id, job.reservation)]))
    await asyncio.sleep(0)
    ack.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ack

    async def acked() -> bool:
        stored = await driver.get(job.id)
        return stored is not None and stored.state is JobState.SUCCEEDED

    await eventually(acked, 5.0)


async def test_cancelled_push_on_the_wire_is_still_stored(drivers: Drivers[PostgresDriver]) -> None:
    await cancelled_push_is_still_stored(await drivers.open())


async def test_closed_driver_opens_again_on_next_call(drivers: Drivers[PostgresDriver]) -> None:
    driver = await drivers.open()
    job_id = await driver.push(make_job())
    await driver.close()

    stored = await driver.get(job_id)

    assert stored is not None and stored.id == job_id


# -- several drivers on one database ---------------------------------------------------------------


async def test_reserves_from_several_drivers_never_hand_out_a_job_twice(
    drivers: Drivers[PostgresDriver],
) -> None:
    many = [await drivers.open() for _ in range(3)]
    await many[0].push_many([make_job(priority=i % 3) for i in range(600)])

    batches = await asyncio.gather(
        *(many[i % 3].reserve(["q"], 1 + i % 7, 30.0, f"w{i}") for i in range(200))
    )

    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == len(set(ids)) == 600
    assert (await many[1].counts(["q"]))["q"].reserved == 600


async def test_expired_leases_are_taken_by_exactly_one_of_many_reserves(
    drivers: Drivers[PostgresDriver],
) -> None:
    many = [await drivers.open() for _ in range(3)]
    await many[0].push_many([make_job() for _ in range(50)])
    assert len(await many[0].reserve(["q"], 50, 0.05, "lost")) == 50
    await asyncio.sleep(0.15)

    batches = await asyncio.gather(
        *(many[i % 3].reserve(["q"], 3, 30.0, f"w{i}") for i in range(40))
    )

    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == len(set(ids)) == 50
    assert {(job.attempt, job.rescued) for batch in batches for job in batch} == {(1, 1)}


# -- prune ----------------------------------------------------------------------------------------


# -- the SQL itself ------------------------------------------------------------------------------


async def explain(prefix: str, name: str, items: list[list[Any]]) -> str:
    """The plan PostgreSQL picks for one query block (EXPLAIN only: nothing is run)."""
    query = load_queries(PACKAGE, prefix)[name]
    params = {
        "queues": '["q"]',
        "limit": 100,
        "lease": 30.0,
        "worker": "w",
        "token": "t",
        "alone": 0,
    }
    params |= {"now": time.time(), "items": json.dumps(items)}
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute("SET jit = off")
        cursor = await conn.execute(f"EXPLAIN (COSTS OFF) {query.sql}", params)
        return "\n".join(row[0] for row in await cursor.fetchall())


@pytest.mark.parametrize("analyzed", [False, True])
async def test_reserve_and_settle_plans_use_their_indexes_whatever_the_statistics(
    drivers: Drivers[PostgresDriver], prefix: str, analyzed: bool
) -> None:
    await drivers.open()
    # 3,000 jobs waiting and 30,000 finished, written behind the driver's back in one go.
    await sql(
        f"INSERT INTO {prefix}jobs (id, queue, name, payload, created_at, available_at,"
        " max_attempts, state, finished_at)"
        " SELECT md5(i::text), 'q', 'j', '{}', 1, 1, 1,"
        "  CASE WHEN i <= 3000 THEN 'pending' ELSE 'succeeded' END,"
        "  CASE WHEN i <= 3000 THEN NULL ELSE 2 END"
        " FROM generate_series(1, 33000) AS i"
    )
    if analyzed:
        await sql(f"ANALYZE {prefix}jobs")
    pairs = [[f"{i:032x}", "t"] for i in range(100)]

    reserve = await explain(prefix, "reserve", [])
    assert f"Index Scan using {prefix}jobs_ready" in reserve
    assert "Seq Scan" not in reserve
    for name in ("renew", "ack", "fail"):
        plan = await explain(prefix, name, pairs)
        assert f"{prefix}jobs_pkey" in plan, plan
        assert "Seq Scan" not in plan and "jobs_ready" not in plan, plan
    release = await explain(prefix, "release", [[i, t, 0.0, None, 0] for i, t in pairs])
    assert f"{prefix}jobs_pkey" in release and "Seq Scan" not in release


@pytest.mark.parametrize("analyzed", [False, True])
@pytest.mark.parametrize("name", ["retry_failed", "purge"])
async def test_retry_and_purge_of_ids_look_each_one_up_whatever_the_statistics(
    drivers: Drivers[PostgresDriver], prefix: str, analyzed: bool, name: str
) -> None:
    """Before, each tested every job of the state against the ids (`ids IS NULL OR id IN`, a
    hashed subplan over a scan of the state): among 200,000 failed jobs a retry of one id
    took 150 ms, and a retry by name (200 ids at a time) 85 s for 100,000 jobs. The holders
    of the candidates' unique keys were read whole too (an anti join over jobs_unique): a
    retry of 200 keyed jobs among 100,000 keyed pending ones took 130-260 ms."""
    await drivers.open()
    await sql(
        f"INSERT INTO {prefix}jobs (id, queue, name, payload, created_at, available_at,"
        " max_attempts, state, finished_at)"
        " SELECT md5(i::text), 'q', 'j', '{}', 1, 1, 1, 'failed', 2"
        " FROM generate_series(1, 20000) AS i"
    )
    if analyzed:
        await sql(f"ANALYZE {prefix}jobs")
    query = load_queries(PACKAGE, prefix)[name]
    ids = json.dumps([f"{i:032x}" for i in range(200)])
    params = {"queue": "q", "state": "failed", "stored": "failed", "ids": ids, "now": 0.0}

    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cursor = await conn.execute(f"EXPLAIN (COSTS OFF) {query.sql}", params)
        plan = "\n".join(row[0] for row in await cursor.fetchall())

    assert "Seq Scan" not in plan and "hashed SubPlan" not in plan, plan
    # Every index read is by id, but the look for a unique key's holder, by that key.
    looks = [(above, line) for above, line in pairwise(plan.splitlines()) if "Index Cond" in line]
    assert looks, plan
    for above, line in looks:
        assert "(id = " in line or ("jobs_unique" in above and "unique_key = " in line), plan


def test_every_query_block_is_described_and_prefixed() -> None:
    queries = load_queries(PACKAGE, "app_")

    assert queries.keys() >= REQUIRED_QUERIES
    for query in queries.values():
        assert query.description, query.name
        assert "{prefix}" not in query.sql and "conveyor_" not in query.sql, query.name
    assert "app_jobs" in queries["reserve"].sql
    assert "pg_notify('app_jobs'" in queries["push_many"].sql


def test_only_reserve_and_settle_statements_skip_the_commit_flush() -> None:
    queries = load_queries(PACKAGE, "app_")

    relaxed = {name for name, query in queries.items() if "synchronous_commit" in query.sql}

    assert relaxed == {"reserve", "renew", "ack", "release", "fail", "record_stats", "beat"}
    assert all("'off', true)" in queries[name].sql for name in relaxed)  # this transaction only


async def test_relaxed_commit_does_not_leak_into_the_next_statement(
    drivers: Drivers[PostgresDriver],
) -> None:
    driver = await drivers.open(pool_size=1)  # one connection: the push reuses the ack's
    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, 30.0, "w")
    await driver.ack([Reservation(job.id, job.reservation or "")])

    show = Query("show", "the setting", "SHOW synchronous_commit")
    rows = await driver._conn.fetch(show, {})

    assert rows == [{"synchronous_commit": "on"}]


# -- lost connections -----------------------------------------------------------------------------


async def test_driver_recovers_when_its_connections_are_killed(
    drivers: Drivers[PostgresDriver],
) -> None:
    name = f"conveyor-test-{uuid.uuid4().hex[:8]}"
    driver = await drivers.open(f"{URL}?application_name={name}")
    pushing = await drivers.open()
    assert await driver.reserve(["q"], 1, 30.0, "w") == []  # the listener is up too
    errors: list[Exception] = []

    await sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )

    async def works() -> bool:
        try:
            await driver.counts(["q"])
        except DriverError as error:
            errors.append(error)
            return False
        return True

    await eventually(works)
    assert all(isinstance(error, BackendUnavailableError) for error in errors), errors

    async def wakes() -> bool:
        waiter = await idle_wait(driver, ["q"], 1.0)
        begin = time.monotonic()
        await pushing.push(make_job())
        await waiter
        await driver.reserve(["q"], 10, 30.0, "w")
        return time.monotonic() - begin < 0.5

    await eventually(wakes)  # the LISTEN connection came back as well


async def test_an_ack_behind_another_transactions_row_lock_waits_for_it(prefix: str) -> None:
    """A transaction holding a running job's row (SELECT ... FOR UPDATE by hand, say) makes the
    job's ack wait past lock_timeout, again and again. Taken for the backend refusing the ack,
    it was written off after three tries and the job ran again after its lease; it is written
    once that transaction ends, and the job runs once."""

    @contextlib.asynccontextmanager
    async def locked(registry: Registry, job_id: str) -> AsyncIterator[None]:
        async with await psycopg.AsyncConnection.connect(URL) as conn:
            await conn.execute(f"SELECT 1 FROM {prefix}jobs WHERE id = %s FOR UPDATE", (job_id,))
            yield
            await conn.commit()

    assert await runs_of_a_job_acked_behind(f"{URL}?prefix={prefix}", locked) == 1
