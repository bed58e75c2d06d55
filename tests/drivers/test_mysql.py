"""What only the MySQL driver has: deadlock retries, unique keys through a generated column,
transactional push, table prefixes, migrations under a named lock, URLs, error messages,
recovery from lost connections, batched prune, and its SQL plans.

The protocol's behaviour is tested by the contract and worker suites, which run on mysql too;
these tests cover the rest. Each test works under a table prefix of its own, dropped
afterwards, on the server of this machine (tests.backends.mysql.URL), which is never
restarted: a lost server is played by a TCP proxy the test starts, or by killing the test's
own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import asyncmy
import pymysql
import pytest

import conveyor.drivers.sql.mysql as mysql_driver
import conveyor.drivers.sql.mysql.connection as my_connection
import conveyor.drivers.sql.mysql.session as my_session
from conveyor import Job, Registry, Worker
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Failure, Release, Reservation, WorkerCounts
from conveyor.drivers.sql.adapter import REQUIRED_QUERIES, SqlTransaction
from conveyor.drivers.sql.mysql import MysqlDriver
from conveyor.drivers.sql.queries import Query, load_migrations, load_queries
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError
from conveyor.job import ErrorInfo, JobBatch, JobInfo, JobState, NewJob
from tests.backends import Drivers, eventually, require_service
from tests.backends.locks import runs_of_a_job_acked_behind
from tests.backends.mysql import START, URL, drop_tables, fresh_prefix
from tests.backends.proxy import Proxy
from tests.contract.helpers import cancelled_push_is_still_stored, make_job

PACKAGE = "conveyor.drivers.sql.mysql"

pytestmark = pytest.mark.timeout(30)


def held(job: JobInfo) -> Reservation:
    return Reservation(job.id, job.reservation or "")


@pytest.fixture(autouse=True)
def server() -> None:
    require_service("mysql", 3306, START)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A table prefix of this test's own; its tables are dropped when the test ends."""
    fresh = fresh_prefix()
    yield fresh
    await drop_tables(fresh)


@pytest.fixture
async def drivers(prefix: str) -> AsyncIterator[Drivers[MysqlDriver]]:
    made = Drivers(MysqlDriver, URL, prefix)
    yield made
    await made.close_all()


async def connect(**options: Any) -> asyncmy.connection.Connection:
    """A plain asyncmy connection to the test database, as an application would hold."""
    options.setdefault("autocommit", True)
    return await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test", **options)


async def sql(statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows read with a plain connection, behind the driver's back."""
    connection = await connect()
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(statement, args or None)
            return list(await cursor.fetchall()) if cursor.description else []
    finally:
        connection.close()


# -- deadlocks and lock waits -------------------------------------------------------------------


async def test_deadlock_victim_transaction_runs_again_and_succeeds(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = await drivers.open()
    first, second = make_job(), make_job()
    ballast = [make_job(queue="ballast") for _ in range(10)]
    await driver.push_many([first, second, *ballast])
    rival = await connect(autocommit=False)
    runs = 0
    waiting = asyncio.Event()
    touch = Query("touch", "", f"UPDATE {prefix}jobs SET priority = priority + 1 WHERE id = %(id)s")

    async def work(tx: SqlTransaction) -> str:
        nonlocal runs
        runs += 1
        await tx.execute(touch, {"id": second.id})
        if runs == 1:
            waiting.set()
        await tx.execute(touch, {"id": first.id})  # waits for the rival: a lock cycle
        return "done"

    try:
        async with rival.cursor() as cursor:
            await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            # The rival changes more rows first, so InnoDB picks the driver as the victim.
            await cursor.execute(f"UPDATE {prefix}jobs SET priority = 5 WHERE id = %s", first.id)
            for job in ballast:
                await cursor.execute(f"UPDATE {prefix}jobs SET attempt = 1 WHERE id = %s", job.id)
            running = asyncio.create_task(driver._conn.transaction(work))
            await asyncio.wait_for(waiting.wait(), 5)
            await asyncio.sleep(0.1)  # the driver's second UPDATE is waiting on the rival now
            await cursor.execute(f"UPDATE {prefix}jobs SET priority = 9 WHERE id = %s", second.id)
        await rival.commit()

        assert await asyncio.wait_for(running, 10) == "done"
    finally:
        rival.close()
    assert runs == 2
    got = await driver.get(second.id)
    assert got is not None and got.priority == 10  # the rival's 9, then the rerun's + 1


async def test_lock_conflicts_reach_the_caller_only_after_every_attempt(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(my_connection, "BACKOFF", 0.001)
    driver = await drivers.open()
    runs = 0
    # MariaDB raises any error from an anonymous block: here, the one a deadlock victim gets.
    deadlock = Query(
        "deadlock",
        "",
        "BEGIN NOT ATOMIC SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213,"
        " MESSAGE_TEXT = 'Deadlock found when trying to get lock'; END",
    )

    async def work(tx: SqlTransaction) -> None:
        nonlocal runs
        runs += 1
        await tx.execute(deadlock, {})

    with pytest.raises(DriverError, match="still met lock conflicts") as raised:
        await driver._conn.transaction(work)

    assert not isinstance(raised.value, BackendUnavailableError)
    assert runs == my_connection.ATTEMPTS


async def test_concurrent_unique_pushes_from_many_drivers_store_one_job_without_errors(
    drivers: Drivers[MysqlDriver],
) -> None:
    many = [await drivers.open() for _ in range(4)]
    for round_ in range(5):
        jobs = [make_job(unique=f"k{round_}") for _ in range(24)]

        ids = await asyncio.gather(*(many[i % 4].push(job) for i, job in enumerate(jobs)))

        assert len(set(ids)) == 1
        assert (await many[0].counts(["q"]))["q"].pending == round_ + 1


async def test_unique_pushes_racing_settles_never_deadlock(drivers: Drivers[MysqlDriver]) -> None:
    # Eight producers hammer twenty keys while two workers reserve and ack their holders: each
    # push of a held key used to lock the holder's rows (and a scan of the key's prefix), so
    # pushes deadlocked each other and settles queued behind them.
    driver = await drivers.open()
    stop = asyncio.get_running_loop().time() + 3.0
    pushed: list[str] = []
    settled: list[str] = []

    async def produce(seed: int) -> None:
        n = seed
        while asyncio.get_running_loop().time() < stop:
            pushed.append(await driver.push(make_job(unique=f"k{n % 20}")))
            n += 7

    async def work() -> None:
        while asyncio.get_running_loop().time() < stop:
            jobs = await driver.reserve(["q"], 10, 30.0, "w")
            settled.extend(await driver.ack([held(job) for job in jobs]))

    await asyncio.gather(*(produce(seed) for seed in range(8)), work(), work())

    assert len(pushed) > 100 and len(settled) > 50, (len(pushed), len(settled))
    assert len(set(settled)) == len(settled)
    counts = (await driver.counts(["q"]))["q"]
    assert counts.succeeded == len(settled) and counts.pending + counts.reserved <= 20


async def test_every_call_passes_a_callers_open_transaction_that_pushed(
    drivers: Drivers[MysqlDriver],
) -> None:
    # The caller's transaction (REPEATABLE READ, the server's default) pushed a unique job and
    # stays open. A plan that scanned the nearly empty table, or a locking read of the key,
    # would make the other calls wait on that row (or the gap before it) until it ends.
    driver = await drivers.open()
    caller = await connect(autocommit=False)
    try:
        await caller.begin()
        await driver.push(make_job(unique="mine"), connection=caller)

        async with asyncio.timeout(5):
            await driver.push_many([make_job() for _ in range(49)])
            await driver.push(make_job(unique="theirs"))
            jobs = await driver.reserve(["q"], 100, 30.0, "w")
            assert len(jobs) == 50
            assert await driver.renew([held(job) for job in jobs[:10]], 30.0)
            assert await driver.ack([held(job) for job in jobs[:40]])
            assert await driver.release([Release(job.id, held(job).token) for job in jobs[40:45]])
            failures = [Failure(j.id, held(j).token, ErrorInfo("E", "m")) for j in jobs[45:]]
            assert await driver.fail(failures)
            assert await driver.prune("q", -1) == 45
            assert await driver.retry_failed("q") == 0
    finally:
        await caller.rollback()
        caller.close()


async def test_keyless_pushes_pass_a_callers_transaction_that_pushed_a_held_key(
    drivers: Drivers[MysqlDriver],
) -> None:
    # The caller's push of a held key checks it as a duplicate in jobs_unique, locking the gap
    # before the holder's entry until the transaction ends. Keyless slots grow with their ids
    # (migrations/0007) and sort after every held key, so they never go into that gap.
    driver = await drivers.open()
    await driver.push_many([make_job() for _ in range(5)])
    holder = make_job(unique="k")
    await driver.push(holder)
    caller = await connect(autocommit=False)
    try:
        await caller.begin()
        assert await driver.push(make_job(unique="k"), connection=caller) == holder.id

        async with asyncio.timeout(5):
            await driver.push_many([make_job() for _ in range(3)])
            await driver.push(make_job())
            await driver.push(make_job(name="other"))
    finally:
        await caller.rollback()
        caller.close()


async def test_push_in_a_snapshot_older_than_the_keys_holder_fails_with_the_fix(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    caller = await connect(autocommit=False)
    try:
        await caller.begin()
        async with caller.cursor() as cursor:  # REPEATABLE READ: the snapshot is taken here
            await cursor.execute(f"SELECT COUNT(*) FROM {drivers.prefix}jobs")
        await driver.push(make_job(unique="k"))  # committed after the caller's snapshot

        with pytest.raises(DriverError, match="READ COMMITTED"):
            await driver.push(make_job(unique="k"), connection=caller)
    finally:
        await caller.rollback()
        caller.close()


# -- unique keys ----------------------------------------------------------------------------------


async def test_unique_keys_of_any_length_are_held_and_freed(drivers: Drivers[MysqlDriver]) -> None:
    driver = await drivers.open()
    key = "k" * 5000 + "é"
    first = make_job(unique=key)

    assert await driver.push(first) == first.id
    assert await driver.push(make_job(unique=key)) == first.id
    assert await driver.push(make_job(unique=key[:-1])) != first.id
    [job] = [j for j in await driver.reserve(["q"], 10, 30.0, "w") if j.id == first.id]
    assert job.unique == key
    await driver.ack([held(job)])
    fresh = make_job(unique=key)
    assert await driver.push(fresh) == fresh.id


async def test_names_and_keys_compare_exactly_whatever_the_collation(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    jobs = [make_job(queue=q, unique=k) for q in ("q", "Q", "q ") for k in ("k", "K", "k ")]

    ids = await driver.push_many(jobs)

    assert ids == [job.id for job in jobs]
    counts = await driver.counts(["q", "Q", "q "])
    assert [counts[q].pending for q in ("q", "Q", "q ")] == [3, 3, 3]
    assert {job.queue for job in await driver.reserve(["Q"], 10, 30.0, "w")} == {"Q"}


async def test_unique_slot_holds_the_key_only_while_the_job_is_unfinished(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = await drivers.open()
    job = make_job(unique="k")
    await driver.push(job)
    slot = f"SELECT unique_slot = UNHEX(SHA2('k', 256)), ready_queue, unique_slot FROM {prefix}jobs"
    assert (await sql(slot))[0][:2] == (1, b"q")

    [reserved] = await driver.reserve(["q"], 1, 30.0, "w")
    await driver.fail([Failure(reserved.id, reserved.reservation or "", ErrorInfo("E", "x"))])

    # Freed: the slot is the job's own id after a NUL byte (migrations/0007).
    assert await sql(slot) == [(0, None, b"\0" + job.id.encode())]


async def test_jobs_pushed_before_migration_0007_keep_their_digest_slots_and_settle(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    await drivers.open()
    old = make_job()
    # The schema as 0006 left it, holding a job whose slot is its id's digest (0002).
    await sql(f"DELETE FROM {prefix}schema_version WHERE version = 7")
    await sql(
        f"ALTER TABLE {prefix}jobs DROP INDEX jobs_unique, DROP COLUMN keyless,"
        " MODIFY COLUMN unique_slot BINARY(32) NOT NULL,"
        " ADD UNIQUE KEY jobs_unique (queue, name, unique_slot)"
    )
    await sql(
        f"INSERT INTO {prefix}jobs (id, queue, name, payload, created_at, available_at,"
        " max_attempts, meta, unique_slot) VALUES (%s, 'q', 'j', '{}', 1, 1, 1, '{}',"
        " UNHEX(SHA2(CONCAT(X'00', %s), 256)))",
        old.id,
        old.id,
    )

    upgraded = await drivers.open()  # applies 0007 again
    new = [make_job() for _ in range(3)]
    assert await upgraded.push_many(new) == [job.id for job in new]
    reserved = await upgraded.reserve(["q"], 10, 30.0, "w")
    assert sorted(job.id for job in reserved) == sorted([old.id] + [job.id for job in new])
    acked = await upgraded.ack([Reservation(job.id, job.reservation or "") for job in reserved])

    assert acked == {job.id for job in reserved}
    slots = await sql(f"SELECT id, unique_slot FROM {prefix}jobs")
    assert {slot for _, slot in slots} == {b"\0" + id_ for id_, _ in slots}


# -- transactional push ---------------------------------------------------------------------------


async def test_push_in_a_transaction_that_commits_stores_the_job(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver, other = await drivers.open(), await drivers.open()
    job = make_job()
    connection = await connect()
    try:
        await connection.begin()
        assert await driver.push(job, connection=connection) == job.id
        assert await other.get(job.id) is None  # not committed: invisible to others
        await connection.commit()
    finally:
        connection.close()

    assert [got.id for got in await other.reserve(["q"], 1, 30.0, "w")] == [job.id]


async def test_push_in_a_transaction_that_rolls_back_stores_nothing(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    job = make_job()
    connection = await connect()
    try:
        await connection.begin()
        await driver.push_many([job, make_job()], connection=connection)
        await connection.rollback()
    finally:
        connection.close()

    assert await driver.get(job.id) is None
    assert await driver.reserve(["q"], 10, 30.0, "w") == []


async def test_push_in_a_transaction_returns_the_holder_of_a_unique_key(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    holder = make_job(unique="k")
    connection = await connect(autocommit=False)
    try:
        # REPEATABLE READ (the server's default), with a snapshot taken before the holder.
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
        await driver.push(holder)

        assert await driver.push(make_job(unique="k"), connection=connection) == holder.id
        await connection.commit()
    finally:
        connection.close()
    assert (await driver.counts(["q"]))["q"].pending == 1


async def test_a_call_waiting_on_a_callers_open_transaction_says_so_before_its_deadline(
    drivers: Drivers[MysqlDriver],
) -> None:
    """A push of a unique key (and a cancel of its job) that a caller's transaction pushed and
    keeps open waited for the call's whole deadline, then failed as a server that gave no
    answer ("check the server and the network"), its connection and every idle one discarded.
    It fails as a lock wait, naming what to do; still a BackendUnavailableError, which a
    worker's settle waits on (see the next test), and on a connection kept."""
    driver = await drivers.open(timeout=3, pool_size=1)
    held = make_job(unique="k")
    connection = await connect(autocommit=False)
    whoami = Query("whoami", "", "SELECT CONNECTION_ID() AS id")
    try:
        await connection.begin()
        await driver.push(held, connection=connection)
        [before] = await driver._conn.fetch(whoami, {})
        for call in (driver.push(make_job(unique="k")), driver.cancel([held.id])):
            with pytest.raises(BackendUnavailableError, match="waited 2s for a lock another"):
                await call
        assert await driver._conn.fetch(whoami, {}) == [before]  # no connection discarded
        await connection.commit()
    finally:
        connection.close()

    assert await driver.push(make_job(unique="k")) == held.id  # waits no more


async def test_a_thread_push_behind_a_callers_open_transaction_says_so(
    drivers: Drivers[MysqlDriver],
) -> None:
    """The connections for plain threads wait for a lock as the pooled ones do: before, the
    server's 50 s, so the push ran into its read timeout and failed as a server out of reach
    ("Lost connection ... (timed out)"), or waited the server's wait where that was shorter."""
    driver = await drivers.open(timeout=3)
    job = make_job()
    connection = await connect(autocommit=False)
    try:
        await connection.begin()
        await driver.push(job, connection=connection)  # the same id, pushed again below
        with pytest.raises(BackendUnavailableError, match="waited 2s for a lock another"):
            await asyncio.to_thread(driver.push_in_thread, job)
        await connection.commit()
    finally:
        connection.close()
    assert await asyncio.to_thread(driver.push_in_thread, job) == job.id


async def test_an_ack_behind_a_callers_open_transaction_waits_for_it(prefix: str) -> None:
    """A caller's transaction that pushes the unique key of a running job holds that job's row
    until it ends (MySQL's duplicate check), so the job's ack waits past the lock wait, again
    and again. Taken for the backend refusing the ack, it would be written off after three
    tries, the job run again after its lease; it is written once the caller commits."""

    @contextlib.asynccontextmanager
    async def pushed_again(registry: Registry, job_id: str) -> AsyncIterator[None]:
        connection = await connect(autocommit=False)
        try:
            await connection.begin()
            again = await registry.push("q", "held", {"n": 2}, unique="k", connection=connection)
            assert again == job_id
            yield
            await connection.commit()
        finally:
            connection.close()

    assert await runs_of_a_job_acked_behind(f"{URL}?prefix={prefix}", pushed_again, unique="k") == 1


async def test_a_migration_waits_for_row_locks_longer_than_a_call(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    """A migration may wait on a lock as long as it may take (MIGRATION_TIMEOUT), not the
    lock wait of a call; its connection is not pooled again with that wait."""
    driver = await drivers.open(timeout=2)
    job = make_job()
    await driver.push(job)
    connection = await connect(autocommit=False)
    touch = f"UPDATE {prefix}jobs SET priority = 7 WHERE id = '{job.id}'"
    try:
        await connection.begin()
        async with connection.cursor() as cursor:
            await cursor.execute(f"SELECT id FROM {prefix}jobs WHERE id = %s FOR UPDATE", job.id)
        migrating = asyncio.create_task(driver._conn.script(touch))
        await asyncio.sleep(2.5)  # past the call's lock wait (1 s) and its deadline (2 s)
        assert not migrating.done()
        await connection.commit()
    finally:
        connection.close()

    await asyncio.wait_for(migrating, 10)
    stored = await driver.get(job.id)
    assert stored is not None and stored.priority == 7
    [(wait,)] = await sql("SELECT @@SESSION.innodb_lock_wait_timeout")  # only ours changed
    [pooled] = [row["wait"] for row in await driver._conn.fetch(LOCK_WAIT, {})]
    assert int(pooled) == 1 and int(wait) != 1


#: A pooled connection's lock wait, in seconds.
LOCK_WAIT = Query("lock_wait", "", "SELECT @@SESSION.innodb_lock_wait_timeout AS wait")


async def test_registry_push_passes_the_connection_through(prefix: str) -> None:
    registry = Registry()
    registry.queue("q", driver=f"{URL}?prefix={prefix}", workers=["w"])
    registry.worker("w")

    @registry.job("noop")
    async def noop(job: Job[dict[str, int]]) -> None:
        pass

    connection = await connect()
    try:
        await connection.begin()
        job_id = await registry.push("q", "noop", {"n": 1}, connection=connection)
        await connection.rollback()
        assert await registry.job_info(job_id) is None
        await connection.begin()
        job_id = await registry.push("q", "noop", {"n": 2}, connection=connection)
        await connection.commit()
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
    finally:
        connection.close()
        await registry.close()


async def test_blocking_push_on_an_asyncmy_connection_raises_config_error(
    prefix: str,
) -> None:
    """The blocking facade runs a push on a loop of its own: an asyncmy connection belongs to
    the loop it was made on, and used from another it failed with asyncio's "attached to a
    different loop" in the middle of the caller's transaction. The error says which push
    takes which kind of connection."""
    registry = Registry()
    registry.queue("q", driver=f"{URL}?prefix={prefix}", workers=["w"])
    registry.worker("w")
    registry.job("noop")(noop_handler)
    connection = await connect()
    try:
        await connection.begin()
        with pytest.raises(ConfigError, match=r"belongs to its event loop.*PyMySQL"):
            await asyncio.to_thread(
                registry.blocking.push, "q", "noop", {"n": 1}, connection=connection
            )
        await connection.rollback()
        assert (await asyncio.to_thread(registry.blocking.queue_info))["q"].pending == 0
    finally:
        connection.close()
        await asyncio.to_thread(registry.blocking.close)


async def noop_handler(job: Job[dict[str, int]]) -> None:
    """Does nothing."""


# -- transactional push from code without an event loop (PyMySQL) --------------------------------


class ThreadNoting(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection noting the threads its cursors were made on."""

    threads: set[int]

    def cursor(self, *args: Any) -> Any:
        self.threads = getattr(self, "threads", set()) | {threading.get_ident()}
        return super().cursor(*args)


def sync_connect(**options: Any) -> ThreadNoting:
    """A plain PyMySQL connection to the test database, as a Django or Flask view holds:
    autocommit off (PyMySQL's default), so it is always inside a transaction."""
    return ThreadNoting(host="127.0.0.1", port=3306, user="root", database="test", **options)


@pytest.fixture
def sync_registry() -> Iterator[tuple[Registry, list[dict[str, int]]]]:
    """A registry on a table prefix of its own, used through the blocking facade, and the
    payloads its handler ran."""
    prefix = fresh_prefix()
    registry = Registry()
    registry.queue("q", driver=f"{URL}?prefix={prefix}", workers=["w"])
    registry.worker("w")
    ran: list[dict[str, int]] = []

    @registry.job("record")
    async def record(job: Job[dict[str, int]]) -> None:
        ran.append(job.payload)

    yield registry, ran
    registry.blocking.close()
    asyncio.run(drop_tables(prefix))


def work_off(registry: Registry) -> None:
    """Run a burst worker on the registry until no job waits (on a loop of its own: the
    facade's drivers are closed first)."""
    registry.blocking.close()

    async def burst() -> None:
        try:
            await Worker(registry, "w", burst=True).run()
        finally:
            await registry.close()

    asyncio.run(burst())


def test_blocking_push_on_a_pymysql_connection_is_stored_at_commit_and_run(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    registry, ran = sync_registry
    connection = sync_connect()
    try:
        job_id = registry.blocking.push("q", "record", {"order": 1}, connection=connection)
        assert registry.blocking.job_info(job_id) is None  # not committed: invisible to others
        connection.commit()
        info = registry.blocking.job_info(job_id)
        assert info is not None and info.state is JobState.PENDING
        assert connection.threads == {threading.get_ident()}  # the statements ran here
    finally:
        connection.close()

    work_off(registry)
    assert ran == [{"order": 1}]


def test_blocking_push_many_on_a_pymysql_connection_is_all_or_none(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    registry, ran = sync_registry
    connection = sync_connect()
    try:
        dropped = registry.blocking.push_many(
            "q", "record", [{"order": 1}, {"order": 2}], connection=connection
        )
        connection.rollback()
        kept = registry.blocking.push_many(
            "q", "record", [{"order": 3}, {"order": 4}], connection=connection
        )
        held = registry.blocking.push(
            "q", "record", {"order": 5}, unique="k", connection=connection
        )
        again = registry.blocking.push(
            "q", "record", {"order": 6}, unique="k", connection=connection
        )
        connection.commit()
    finally:
        connection.close()

    assert [registry.blocking.job_info(job_id) for job_id in dropped] == [None, None]
    assert again == held
    assert registry.blocking.queue_info()["q"].pending == 3
    work_off(registry)
    assert sorted(item["order"] for item in ran) == [3, 4, 5]
    assert len(kept) == 2


def test_plain_handler_pushes_in_its_own_pymysql_transaction(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    """A plain handler's push runs on its worker's loop, its statements in the handler's
    thread."""
    registry, ran = sync_registry

    @registry.job("order")
    def order(job: Job[dict[str, int]]) -> None:
        connection = sync_connect()
        try:
            registry.blocking.push("q", "record", job.payload, connection=connection)
            connection.commit()
        finally:
            connection.close()

    registry.blocking.push("q", "order", {"order": 7})
    work_off(registry)
    assert ran == [{"order": 7}]


def test_blocking_push_on_a_pymysql_connection_in_autocommit_is_stored_at_once(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    """As every statement on such a connection (Django's outside transaction.atomic()): the
    push is its own transaction, committed before it returns (docs/drivers.md)."""
    registry, _ = sync_registry
    connection = sync_connect(autocommit=True)
    try:
        job_id = registry.blocking.push("q", "record", {"order": 1}, connection=connection)
        connection.rollback()  # nothing left to roll back
    finally:
        connection.close()

    info = registry.blocking.job_info(job_id)
    assert info is not None and info.state is JobState.PENDING


def test_blocking_push_on_a_pymysql_connection_making_dict_rows_stores_the_job(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    """A connection made with cursorclass=DictCursor (as many Flask apps make theirs): its
    rows read as tuples gave each column its own name, and the push said "connection= is
    using database 'name'"."""
    registry, _ = sync_registry
    connection = sync_connect(cursorclass=pymysql.cursors.DictCursor)
    try:
        held = registry.blocking.push(
            "q", "record", {"order": 1}, unique="k", connection=connection
        )
        again = registry.blocking.push(
            "q", "record", {"order": 2}, unique="k", connection=connection
        )
        connection.commit()
    finally:
        connection.close()

    assert again == held
    assert registry.blocking.job_info(held) is not None
    assert registry.blocking.queue_info()["q"].pending == 1


def test_blocking_push_on_something_not_a_mysql_connection_raises_config_error(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    registry, _ = sync_registry
    with pytest.raises(ConfigError, match=r"your own open MySQL connection.*builtins\.object"):
        registry.blocking.push("q", "record", {"order": 1}, connection=object())


def test_blocking_push_on_a_closed_pymysql_connection_raises_config_error(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    """PyMySQL said only "(0, '')"."""
    registry, _ = sync_registry
    connection = sync_connect()
    connection.close()
    with pytest.raises(ConfigError, match="closed pymysql connection"):
        registry.blocking.push("q", "record", {"order": 1}, connection=connection)


def test_blocking_push_on_a_lost_pymysql_connection_says_it_is_the_callers_to_open_again(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    """It said MySQL was unreachable during "current_database" and that the pool reconnects
    by itself: no pool has the caller's connection."""
    registry, _ = sync_registry
    connection = sync_connect()
    try:
        killer = sync_connect(autocommit=True)
        with killer.cursor() as cursor:
            cursor.execute(f"KILL {connection.thread_id()}")
        killer.close()
        with pytest.raises(BackendUnavailableError, match=r"connection= was lost.*run your"):
            registry.blocking.push("q", "record", {"order": 1}, connection=connection)
    finally:
        connection.close()


def test_blocking_push_failing_on_a_pymysql_connection_raises_driver_error(
    sync_registry: tuple[Registry, list[dict[str, int]]],
) -> None:
    """The client's error is translated at the driver's edge, as asyncmy's are: here the
    server refuses to write in a read-only transaction."""
    registry, _ = sync_registry
    connection = sync_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("START TRANSACTION READ ONLY")
        with pytest.raises(DriverError, match=r"MySQL push\w* failed.*READ ONLY"):
            registry.blocking.push("q", "record", {"order": 1}, connection=connection)
    finally:
        connection.close()


@pytest.mark.parametrize("charset", ["utf8", "latin1"])
async def test_push_on_a_connection_not_in_utf8mb4_stores_any_character(
    drivers: Drivers[MysqlDriver], charset: str
) -> None:
    """Django's MySQL backend connects with charset utf8 (utf8mb3) unless told otherwise. An
    emoji in a payload pushed on such a connection failed ("Broken JSON string in argument 1
    to function 'JSON_TABLE'"); on latin1 too. Its unique key must hash as on the driver's own
    connections."""
    driver = await drivers.open()
    payload = json.dumps({"text": "caf\u00e9 \U0001f600"}, ensure_ascii=False)
    job = make_job(payload=payload, unique="\U0001f4e6 order 7", meta={"by": "\U0001f916"})
    connection = await connect(charset=charset)
    try:
        await connection.begin()
        assert await driver.push_many([job], connection=connection) == [job.id]
        again = make_job(unique=job.unique)
        assert await driver.push(again, connection=connection) == job.id  # its holder, found
        await connection.commit()
    finally:
        connection.close()

    stored = await driver.get(job.id)
    assert stored is not None
    assert (stored.payload, stored.unique, stored.meta) == (payload, job.unique, job.meta)
    assert await driver.push(make_job(unique=job.unique)) == job.id  # the same key's digest


@pytest.mark.parametrize("charset", ["utf8", "latin1"])
def test_blocking_push_on_a_pymysql_connection_not_in_utf8mb4_stores_any_character(
    sync_registry: tuple[Registry, list[dict[str, int]]], charset: str
) -> None:
    """The same through the blocking facade, on a PyMySQL connection as Django opens it."""
    registry, _ = sync_registry

    @registry.job("note")
    async def note(job: Job[dict[str, str]]) -> None:
        """Never run here."""

    connection = sync_connect(charset=charset)
    text = "caf\u00e9 \U0001f600"
    try:
        job_id = registry.blocking.push("q", "note", {"text": text}, connection=connection)
        connection.commit()
    finally:
        connection.close()

    info = registry.blocking.job_info(job_id)
    assert info is not None and json.loads(info.payload) == {"text": text}


async def test_async_push_on_a_pymysql_connection_raises_config_error(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    connection = sync_connect()
    try:
        with pytest.raises(ConfigError, match=r"synchronous.*registry\.blocking\.push"):
            await driver.push(make_job(), connection=connection)
    finally:
        connection.close()


async def test_push_on_a_closed_asyncmy_connection_raises_config_error(
    drivers: Drivers[MysqlDriver],
) -> None:
    """It said the server was unreachable, and that the pool reconnects by itself."""
    driver = await drivers.open()
    connection = await connect()
    connection.close()

    with pytest.raises(ConfigError, match="closed asyncmy connection"):
        await driver.push(make_job(), connection=connection)


async def test_push_on_something_not_a_mysql_connection_raises_config_error(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()

    with pytest.raises(ConfigError, match=r"your own open MySQL connection.*builtins\.object"):
        await driver.push(make_job(), connection=object())


async def test_deadlock_in_the_callers_transaction_is_reported_not_retried(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = await drivers.open()
    mine, theirs = make_job(), make_job(unique="k")
    ballast = [make_job(queue="ballast") for _ in range(5)]
    await driver.push_many([mine, theirs, *ballast])
    caller, rival = await connect(), await connect()
    touch = f"UPDATE {prefix}jobs SET payload = '{{\"x\": 1}}' WHERE id = %s"
    try:
        for connection in (caller, rival):
            async with connection.cursor() as cursor:
                await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await connection.begin()
        async with caller.cursor() as cursor:
            await cursor.execute(touch, mine.id)
        async with rival.cursor() as cursor:
            for job in [theirs, *ballast]:  # the heavier transaction: InnoDB spares it
                await cursor.execute(touch, job.id)
            blocked = asyncio.create_task(cursor.execute(touch, mine.id))
            await asyncio.sleep(0.1)

            with pytest.raises(DriverError, match="rolled your transaction back"):
                # Its unique key check waits for the rival, which waits for the caller.
                await driver.push(make_job(unique="k"), connection=caller)

            await asyncio.wait_for(blocked, 5)
        await rival.commit()
    finally:
        caller.close()
        rival.close()
    assert (await driver.counts(["q"]))["q"].pending == 2


async def test_lock_wait_timeout_in_the_callers_transaction_says_it_is_still_open(
    drivers: Drivers[MysqlDriver],
) -> None:
    """Past the caller's own innodb_lock_wait_timeout only the statement is undone, not the
    transaction: it said "the server rolled your transaction back", which it had not."""
    driver = await drivers.open()
    holder = await connect(autocommit=False)
    caller = await connect(autocommit=False)
    try:
        await holder.begin()
        await driver.push(make_job(unique="k"), connection=holder)
        async with caller.cursor() as cursor:
            await cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        await caller.begin()

        with pytest.raises(DriverError, match="roll your transaction back") as raised:
            await driver.push(make_job(unique="k"), connection=caller)

        assert "rolled your transaction back" not in str(raised.value)
    finally:
        holder.close()
        caller.close()


async def test_push_on_a_connection_to_another_database_raises_config_error(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    connection = await connect()
    try:
        await connection.select_db("mysql")
        with pytest.raises(ConfigError, match="database 'mysql'"):
            await driver.push(make_job(), connection=connection)
    finally:
        connection.close()


# -- batches larger than a statement may be -------------------------------------------------------


#: The deadline of a statement of 16 MiB (the default is 10 s, which a loaded CI run passed).
BIG_STATEMENT = 60.0


async def jobs_past_max_allowed_packet(**overrides: Any) -> list[NewJob]:
    """Jobs of 1 MB payloads (the default limit), more of them than the server's
    max_allowed_packet holds in one statement."""
    [(packet,)] = await sql("SELECT @@max_allowed_packet")
    payload = json.dumps({"text": "x" * 1_000_000})
    return [make_job(payload=payload, **overrides) for _ in range(int(packet) // 1_000_000 + 2)]


@pytest.mark.parametrize("kind", ["alike", "unique"])
async def test_push_many_past_max_allowed_packet_stores_every_job(
    drivers: Drivers[MysqlDriver], kind: str
) -> None:
    driver = await drivers.open(timeout=BIG_STATEMENT)
    jobs = await jobs_past_max_allowed_packet()
    if kind == "unique":  # through push_many's unique-key statements, not push_many_shared
        jobs = [replace(job, unique=job.id) for job in jobs]
    assert await driver.push_many(jobs) == [job.id for job in jobs]
    stored = await sql(f"SELECT id, LENGTH(payload) FROM {drivers.prefix}jobs")
    assert sorted((bytes(id).decode(), size) for id, size in stored) == sorted(
        (job.id, len(job.payload)) for job in jobs
    )


async def test_push_many_past_max_allowed_packet_in_a_callers_transaction_is_all_or_none(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open(timeout=BIG_STATEMENT)
    jobs = await jobs_past_max_allowed_packet()
    connection = await connect()
    try:
        await connection.begin()
        assert await driver.push_many(jobs, connection=connection) == [job.id for job in jobs]
        await connection.rollback()
    finally:
        connection.close()
    assert await sql(f"SELECT id FROM {drivers.prefix}jobs") == []


async def test_push_many_of_small_payloads_with_large_metas_stores_every_job(
    drivers: Drivers[MysqlDriver],
) -> None:
    """Only payloads counted towards a statement's size: jobs of tiny payloads whose meta
    (an id, names, a key...) made the batch past max_allowed_packet failed whole, saying to
    keep payloads under it."""
    driver = await drivers.open(timeout=BIG_STATEMENT)
    [(packet,)] = await sql("SELECT @@max_allowed_packet")
    meta = {"trace": "t" * 1_000_000}
    jobs = [make_job(meta=meta, unique=f"k{n}") for n in range(int(packet) // 1_000_000 + 2)]

    assert await driver.push_many(jobs) == [job.id for job in jobs]

    assert (await driver.counts(["q"]))["q"].pending == len(jobs)


async def test_push_many_of_a_batch_of_tiny_payloads_past_max_allowed_packet_stores_every_job(
    drivers: Drivers[MysqlDriver],
) -> None:
    """A JobBatch (Registry.push_many's, with a chunk of a million) of `{}` payloads: ids
    and the JSON around them passed the limit, the payloads never."""
    driver = await drivers.open(timeout=BIG_STATEMENT)
    [(packet,)] = await sql("SELECT @@max_allowed_packet")
    ids = [f"{n:064d}" for n in range(int(packet) // 70)]  # 79 bytes each as sent
    batch = JobBatch(make_job(), ids, ["{}"] * len(ids))

    assert await driver.push_many(batch) == ids

    assert (await driver.counts(["q"]))["q"].pending == len(ids)


async def test_push_of_a_payload_past_max_allowed_packet_names_the_setting(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    [(packet,)] = await sql("SELECT @@max_allowed_packet")
    job = make_job(payload=json.dumps("x" * (int(packet) + 1000)))
    with pytest.raises(DriverError, match="larger than the server's max_allowed_packet: raise"):
        await driver.push(job)
    assert await driver.push(make_job()) is not None  # the driver carries on


# -- table prefixes and migrations ----------------------------------------------------------------


async def test_prefix_keeps_two_sets_of_tables_apart(drivers: Drivers[MysqlDriver]) -> None:
    mine = await drivers.open()
    other_prefix = fresh_prefix()
    try:
        theirs = await drivers.open(prefix=other_prefix)
        await mine.push(make_job())

        assert (await theirs.counts(["q"]))["q"].pending == 0
        assert (await mine.counts(["q"]))["q"].pending == 1
        await theirs.record_stats("w", WorkerCounts(processed=1))
        assert await mine.worker_stats() == {}
    finally:
        await drop_tables(other_prefix)


@pytest.mark.parametrize("bad", ["", "1x_", "jobs;drop", "a-b", "x" * 40])
def test_bad_prefix_raises_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="table prefix"):
        MysqlDriver(URL, prefix=bad)


async def test_migrations_are_applied_once_by_drivers_opening_at_once(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    many = [drivers.make() for _ in range(6)]

    await asyncio.gather(*(driver.open() for driver in many))

    recorded = await sql(f"SELECT version, name FROM {prefix}schema_version ORDER BY version")
    assert recorded == [(m.version, m.name) for m in load_migrations(PACKAGE, prefix)]
    await asyncio.gather(*(driver.push(make_job()) for driver in many))
    assert (await many[0].counts(["q"]))["q"].pending == 6


def test_processes_opening_a_new_schema_at_once_all_succeed(prefix: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from conveyor.drivers.sql.mysql import MysqlDriver\n"
        "async def main():\n"
        "    driver = MysqlDriver(sys.argv[1], prefix=sys.argv[2])\n"
        "    await driver.open()\n"
        "    await driver.counts(['q'])\n"
        "    await driver.close()\n"
        "asyncio.run(main())\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, URL, prefix], stderr=subprocess.PIPE)
        for _ in range(4)
    ]

    errors = [process.communicate(timeout=30)[1].decode() for process in processes]

    assert [process.returncode for process in processes] == [0] * 4, errors
    recorded = asyncio.run(sql(f"SELECT COUNT(*) FROM {prefix}schema_version"))
    assert recorded == [(len(load_migrations(PACKAGE, prefix)),)]


async def test_migration_lock_is_released_once_open(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    await drivers.open()

    [(name,)] = await sql(
        "SELECT CONCAT('conveyor.', LEFT(SHA2(CONCAT(DATABASE(), '.', %s), 256), 40))", prefix
    )
    assert await sql("SELECT IS_USED_LOCK(%s)", name) == [(None,)]


async def test_migrate_false_refuses_a_schema_never_created(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = drivers.make(migrate=False)

    with pytest.raises(ConfigError, match="conveyor migrate"):
        await driver.open()

    await driver.migrate()
    await driver.push(make_job())
    assert await sql(f"SELECT COUNT(*) FROM {prefix}jobs") == [(1,)]


async def test_closed_driver_opens_again_on_next_call(drivers: Drivers[MysqlDriver]) -> None:
    driver = await drivers.open()
    job = make_job()
    await driver.push(job)
    await driver.close()

    got = await driver.get(job.id)

    assert got is not None and got.id == job.id


# -- URLs and messages ----------------------------------------------------------------------------


def test_driver_from_url_makes_a_mysql_driver_for_both_schemes() -> None:
    for scheme in ("mysql", "mariadb"):
        driver = driver_from_url(f"{scheme}://app:pw@db.example:3307/jobs?prefix=mail_")

        assert isinstance(driver, MysqlDriver)
        target = driver.target
        assert (target.host, target.port, target.user, target.password) == (
            "db.example",
            3307,
            "app",
            "pw",
        )
        assert target.database == "jobs"
        assert driver.prefix == "mail_"


def test_from_url_reads_every_option() -> None:
    driver = MysqlDriver.from_url(
        "mysql://a%40b:p%2Fw%3A@127.0.0.1/db?prefix=x_&migrate=off&pool_size=3"
        "&connect_timeout=2.5&unix_socket=/run/mysqld/mysqld.sock"
    )

    target = driver.target
    assert (target.user, target.password, target.port) == ("a@b", "p/w:", 3306)
    assert (target.connect_timeout, target.unix_socket) == (2.5, "/run/mysqld/mysqld.sock")
    assert (driver.prefix, driver.migrate_on_open, driver._conn.pool_size) == ("x_", False, 3)
    assert "p/w" not in repr(target) and "p/w" not in target.shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h/db", "not a MySQL URL"),
        ("mysql://u:secret@h:3306", "names no database"),
        ("mysql://u:secret@h:port/db", "not a valid URL"),
        ("mysql://u:secret@h/db?pool=3", "unknown option 'pool'"),
        ("mysql://u:secret@h/db?pool_size=0", "pool_size='0' is not a positive whole number"),
        ("mysql://u:secret@h/db?migrate=maybe", "migrate='maybe' is not a yes or no"),
        ("mysql://u:secret@h/db?connect_timeout=soon", "is not a positive number of seconds"),
        # asyncmy's own ValueError when the driver opened, not a ConfigError at once
        ("mysql://u:secret@h/db?connect_timeout=nan", "connect_timeout='nan' is not a positive"),
        ("mysql://u:secret@h/db?connect_timeout=inf", "connect_timeout='inf' is not a positive"),
        ("mysql://u:secret@h/db?connect_timeout=99999999", "of seconds up to 31536000"),
        # a TypeError from setsockopt as the first connection was made: TCP_USER_TIMEOUT, in
        # milliseconds, is a C int
        ("mysql://u:secret@h/db?timeout=3e6", "timeout='3e6' is not a positive number of"),
    ],
)
def test_from_url_rejects_what_it_cannot_use_and_hides_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        MysqlDriver.from_url(url)

    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 0.0, 3e6])
def test_a_timeout_keyword_no_socket_takes_is_refused(timeout: float) -> None:
    with pytest.raises(ConfigError, match="up to 2073600"):
        MysqlDriver(URL, timeout=timeout)


def test_constructor_points_conveyors_url_options_to_from_url() -> None:
    with pytest.raises(ConfigError, match="from_url"):
        MysqlDriver(f"{URL}?prefix=x_")


async def test_wrong_password_raises_backend_unavailable_without_the_password(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = drivers.make("mysql://root:s3cr3t-pw@127.0.0.1:3306/test")

    with pytest.raises(BackendUnavailableError, match="cannot connect") as raised:
        await driver.open()

    assert "s3cr3t-pw" not in str(raised.value)
    assert "mysql://root@127.0.0.1:3306/test" in str(raised.value)


async def test_unreachable_server_raises_backend_unavailable(drivers: Drivers[MysqlDriver]) -> None:
    closed_port = _free_port()
    driver = drivers.make(f"mysql://root:s3cr3t-pw@127.0.0.1:{closed_port}/test")

    with pytest.raises(BackendUnavailableError, match="check that the server is running") as e:
        await driver.counts(["q"])

    assert "s3cr3t-pw" not in str(e.value)


async def test_mysql_errors_reach_callers_as_driver_errors(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = await drivers.open()
    await sql(f"DROP TABLE {prefix}jobs")

    with pytest.raises(DriverError, match="MySQL get failed") as raised:
        await driver.get("x")

    assert not isinstance(raised.value, BackendUnavailableError)


async def test_sessions_read_committed_in_strict_mode(drivers: Drivers[MysqlDriver]) -> None:
    driver = await drivers.open()
    settings = Query("settings", "", "SELECT @@tx_isolation AS isolation, @@sql_mode AS mode")

    [row] = await driver._conn.fetch(settings, {})

    assert row["isolation"] == "READ-COMMITTED"
    assert "STRICT_ALL_TABLES" in row["mode"]
    with pytest.raises(DriverError, match="too long"):
        await driver.push(make_job(queue="q" * 256))


async def test_a_transaction_runs_at_the_isolation_asked_for(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    driver = await drivers.open(pool_size=1)  # both transactions on one connection
    lock = Query("lock", "", f"SELECT COUNT(*) AS n FROM {prefix}jobs FOR UPDATE")
    # information_schema.INNODB_TRX is a copy the server makes at most every 0.1 s.
    pause = Query("pause", "", "DO SLEEP(0.3)")
    level = Query(
        "level",
        "",
        "SELECT trx_isolation_level AS level FROM information_schema.INNODB_TRX"
        " WHERE trx_mysql_thread_id = CONNECTION_ID()",
    )

    async def isolation(tx: SqlTransaction) -> str:
        await tx.fetch(lock, {})
        await tx.execute(pause, {})
        [row] = await tx.fetch(level, {})
        return str(row["level"])

    asked = await driver._conn.transaction(isolation, isolation="REPEATABLE READ")
    after = await driver._conn.transaction(isolation)

    assert (asked, after) == ("REPEATABLE READ", "READ COMMITTED")


async def test_reserves_behind_a_backlog_run_at_repeatable_read(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await drivers.open()
    await driver.push_many([make_job() for _ in range(5)])
    levels: list[object] = []
    in_one_trip = driver._conn.in_one_trip

    async def noted(query: Query, params: Any, isolation: Any = "READ COMMITTED") -> Any:
        levels.append(isolation)
        return await in_one_trip(query, params, isolation)

    monkeypatch.setattr(driver._conn, "in_one_trip", noted)

    taken = [len(await driver.reserve(["q"], 2, 30.0, "w")) for _ in range(4)]

    # The first reserve knows of no backlog; the second and third follow a full batch; the
    # fourth follows the third's short one.
    assert taken == [2, 2, 1, 0]
    assert levels == ["READ COMMITTED", "REPEATABLE READ", "REPEATABLE READ", "READ COMMITTED"]
    assert (await driver.counts(["q"]))["q"].reserved == 5


def test_ipv6_hosts_are_shown_in_brackets() -> None:
    driver = MysqlDriver.from_url("mysql://app:pw@[::1]:3307/jobs")

    assert driver.target.host == "::1"
    assert driver.target.shown == "mysql://app@[::1]:3307/jobs"


def test_server_versions_are_read_from_the_handshake_string() -> None:
    read = my_connection._server_version

    assert read("5.5.5-10.11.6-MariaDB-0+deb12u1") == ("MariaDB", (10, 11, 6))
    assert read("11.4.2-MariaDB") == ("MariaDB", (11, 4, 2))
    assert read("8.0.36") == ("MySQL", (8, 0, 36))
    assert read("9.1") == ("MySQL", (9, 1, 0))
    assert read("5.7.44-log") < ("MySQL", (8, 0, 0))


def test_mysql_before_8_0_21_is_refused() -> None:
    """reserve calls JSON_VALUE, which MySQL has since 8.0.21: an 8.0.20 server was let in,
    took pushes, and failed every reserve."""
    read, minimum = my_connection._server_version, my_connection.MINIMUM
    assert read("8.0.20")[1] < minimum["MySQL"] <= read("8.0.21-commercial")[1]
    assert read("5.5.5-10.7.8-MariaDB")[1] < minimum["MariaDB"] <= read("10.8.3-MariaDB")[1]


# -- concurrency ----------------------------------------------------------------------------------


async def test_cancelled_call_still_completes(drivers: Drivers[MysqlDriver]) -> None:
    driver = await drivers.open()
    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, 30.0, "w")

    acking = asyncio.create_task(driver.ack([held(job)]))
    await asyncio.sleep(0)
    acking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await acking

    async def succeeded() -> bool:
        got = await driver.get(job.id)
        return got is not None and got.state is JobState.SUCCEEDED

    await eventually(succeeded, 5)


async def test_cancelled_push_on_the_wire_is_still_stored(drivers: Drivers[MysqlDriver]) -> None:
    await cancelled_push_is_still_stored(await drivers.open())


async def test_many_reserves_from_several_drivers_never_hand_out_a_job_twice(
    drivers: Drivers[MysqlDriver],
) -> None:
    many = [await drivers.open(pool_size=4) for _ in range(4)]
    total = 1200
    await many[0].push_many([make_job(priority=n % 3) for n in range(total)])
    taken: list[str] = []

    async def work(driver: MysqlDriver, name: str) -> None:
        while batch := await driver.reserve(["q"], 7, 30.0, name):
            taken.extend(job.id for job in batch)
            assert await driver.ack([held(job) for job in batch]) == {job.id for job in batch}

    await asyncio.gather(*(work(many[i % 4], f"w{i}") for i in range(16)))

    assert len(taken) == len(set(taken)) == total
    assert (await many[1].counts(["q"]))["q"].succeeded == total


async def test_expired_leases_are_taken_by_exactly_one_of_many_reserves(
    drivers: Drivers[MysqlDriver],
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


async def test_reserve_serves_more_queues_than_its_per_queue_subqueries(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open()
    queues = [f"q{n}" for n in range(12)]
    jobs = [make_job(queue=q, priority=n) for n, q in enumerate(queues)]
    await driver.push_many(jobs)

    order = []
    while batch := await driver.reserve(queues, 5, 30.0, "w"):
        order.extend(job.priority for job in batch)
        await driver.ack([held(job) for job in batch])

    assert order == list(range(11, -1, -1))


async def test_reserve_puts_the_queues_it_took_jobs_from_lately_first(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog in the 12th of 20 queues: once a reserve took jobs from it, the next gives
    it a subquery of its own (an index scan that stops after `limit` jobs) instead of the
    shared one for queues past the eighth, which sorts all their due jobs: 56 ms a reserve
    with 40,000 jobs waiting in 4 of 20 queues, against 2.2 ms."""
    driver = await drivers.open()
    queues = [f"q{n}" for n in range(20)]
    await driver.push_many([make_job("q3")] + [make_job("q11") for _ in range(30)])
    sent: list[list[str]] = []
    reserve_rows = driver._reserve_rows

    async def seen(params: dict[str, Any]) -> list[Any]:
        sent.append(json.loads(params["queues"]))
        return await reserve_rows(params)

    monkeypatch.setattr(driver, "_reserve_rows", seen)
    first = await driver.reserve(queues, 5, 30.0, "w")
    second = await driver.reserve(queues, 5, 30.0, "w")

    assert sent[0] == queues
    assert sorted(sent[1][:2]) == ["q11", "q3"]
    assert sorted(sent[1]) == sorted(queues)
    assert len({job.id for job in first + second}) == 10


# -- prune ----------------------------------------------------------------------------------------


# -- the SQL itself -------------------------------------------------------------------------------


async def explain(prefix: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan MariaDB picks for the first statement of a query block (nothing is run)."""
    statement = my_session.statements(load_queries(PACKAGE, prefix)[name].sql)[0]
    connection = await connect()
    try:
        async with connection.cursor(asyncmy.cursors.DictCursor) as cursor:
            await cursor.execute("EXPLAIN " + statement, params)
            return list(await cursor.fetchall())
    finally:
        connection.close()


async def test_reserve_and_settle_plans_skip_finished_jobs(
    drivers: Drivers[MysqlDriver], prefix: str
) -> None:
    await drivers.open()
    # 2,000 jobs waiting and 20,000 finished, written behind the driver's back in one go.
    await sql(
        f"INSERT INTO {prefix}jobs (id, queue, name, payload, created_at, available_at,"
        " max_attempts, meta, unique_slot, state, finished_at)"
        " SELECT MD5(seq), 'q', 'j', '{}', 1, 1, 1, '{}', UNHEX(SHA2(seq, 256)),"
        "  IF(seq <= 2000, 'pending', 'succeeded'), IF(seq <= 2000, NULL, 2)"
        " FROM seq_1_to_22000"
    )
    await sql(f"ANALYZE TABLE {prefix}jobs")
    params = {
        "queues": '["q"]',
        "limit": 10,
        "lease": 30.0,
        "worker": "w",
        "token": "t",
        "alone": 0,
    }
    params |= {"now": time.time(), "items": json.dumps([[f"{i:032x}", "t"] for i in range(50)])}

    reserve = await explain(prefix, "reserve", dict(mysql_driver._spread(params)))
    scans = [row for row in reserve if row["table"] == f"{prefix}jobs"]
    assert scans and all(row["key"] == "jobs_ready" for row in scans), reserve
    assert all("filesort" not in (row["Extra"] or "") for row in scans), reserve
    assert [row["type"] for row in reserve if row["table"] == "job"] == ["eq_ref"], reserve
    for name in ("renew", "ack", "release", "fail"):
        plan = await explain(prefix, name, params)
        jobs = [row for row in plan if row["table"] == "job"]
        assert [(row["type"], row["key"]) for row in jobs] == [("eq_ref", "PRIMARY")], plan


@pytest.mark.parametrize("name", ["purge", "retry_failed"])
async def test_purge_and_retry_of_ids_find_them_by_primary_key(
    drivers: Drivers[MysqlDriver], prefix: str, name: str
) -> None:
    """Before, each job of the state was tested against the ids (a dependent subquery over
    JSON_TABLE, read again per job): among 50,000 failed jobs a purge of 100 ids took 3 to 6 s
    and one of 1,000 outran the driver's timeout; a retry of one id took 0.3 s."""
    await drivers.open()
    await sql(
        f"INSERT INTO {prefix}jobs (id, queue, name, payload, created_at, available_at,"
        " max_attempts, meta, unique_slot, state, finished_at)"
        " SELECT MD5(seq), 'q', 'j', '{}', 1, 1, 1, '{}', UNHEX(SHA2(seq, 256)), 'failed', 2"
        " FROM seq_1_to_20000"
    )
    await sql(f"ANALYZE TABLE {prefix}jobs")
    ids = json.dumps([f"{i:032x}" for i in range(50)])
    params = {"queue": "q", "state": "failed", "stored": "failed", "ids": ids}

    plan = await explain(prefix, name, params)

    jobs = [(row["type"], row["key"]) for row in plan if row["table"] == "job"]
    assert jobs and set(jobs) == {("eq_ref", "PRIMARY")}, plan
    assert all(row["table"] != f"{prefix}jobs" for row in plan), plan  # no read of the state


def test_every_query_block_is_described_and_prefixed() -> None:
    queries = load_queries(PACKAGE, "app_")

    assert queries.keys() >= REQUIRED_QUERIES
    for query in queries.values():
        assert query.description, query.name
        assert "{prefix}" not in query.sql and "conveyor_" not in query.sql, query.name
        assert "%" not in query.sql.replace("%(", ""), f"{query.name}: a bare % sign"
    assert "app_jobs" in queries["reserve"].sql


# -- lost connections -----------------------------------------------------------------------------


async def test_driver_carries_on_when_its_connection_is_killed(
    drivers: Drivers[MysqlDriver],
) -> None:
    driver = await drivers.open(pool_size=1)
    whoami = Query("whoami", "", "SELECT CONNECTION_ID() AS id")
    [row] = await driver._conn.fetch(whoami, {})

    await sql(f"KILL {int(row['id'])}")

    await driver.push(make_job())  # on a new connection, without an error
    [again] = await driver._conn.fetch(whoami, {})
    assert again["id"] != row["id"]
    assert (await driver.counts(["q"]))["q"].pending == 1


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_calls_fail_as_unavailable_while_the_server_is_away_then_recover(
    drivers: Drivers[MysqlDriver],
) -> None:
    proxy = Proxy(3306)
    await proxy.start()
    driver = await drivers.open(f"mysql://root@127.0.0.1:{proxy.port}/test")
    await driver.push(make_job())

    await proxy.cut()
    with pytest.raises(BackendUnavailableError):
        await driver.counts(["q"])
    await proxy.start()

    assert (await driver.counts(["q"]))["q"].pending == 1
    await proxy.cut()


async def test_a_reserve_over_many_queues_sends_each_queue_name_once(
    drivers: Drivers[MysqlDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement held the queue list eleven times (a JSON array read by eight JSON_VALUEs,
    a JSON_TABLE and a JSON_LENGTH): 77 KB of text over 300 queues, on every reserve."""
    driver = await drivers.open()
    queues = [f"queue-{n:03}-of-many" for n in range(300)]
    await driver.push_many([make_job(queue) for queue in (queues[3], queues[200])])
    sent: list[str] = []
    run = my_session.Session._run

    async def counted(self: my_session.Session, cursor: Any, statement: str, params: Any) -> None:
        if params is not None:
            sent.append(cursor.mogrify(statement, dict(params)))
        await run(self, cursor, statement, params)

    monkeypatch.setattr(my_session.Session, "_run", counted)
    got = await driver.reserve(queues, 10, 30.0, "w1")

    assert sorted(job.queue for job in got) == [queues[3], queues[200]]
    text = "".join(sent)
    assert [queue for queue in queues if text.count(queue) != 1] == []
