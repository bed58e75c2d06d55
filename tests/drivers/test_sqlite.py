"""What only the SQLite driver has: its file, migrations, table prefix, URL and error messages.

The protocol's behaviour is tested by the contract suite (tests/contract), which runs on SQLite
too; these tests cover the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import conveyor.drivers.sql.driver as sql_driver
import conveyor.drivers.sql.sqlite as sqlite_module
import conveyor.drivers.sql.sqlite.connection as sqlite_connection
from conveyor.drivers import driver_from_url
from conveyor.drivers.base import Reservation
from conveyor.drivers.doorbell import Doorbell
from conveyor.drivers.sql.adapter import REQUIRED_QUERIES
from conveyor.drivers.sql.queries import load_migrations, load_queries
from conveyor.drivers.sql.sqlite import SqliteConnection, SqliteDriver
from conveyor.errors import BackendUnavailableError, ConfigError, DriverError
from conveyor.job import JobState
from tests.contract.helpers import make_job

PACKAGE = "conveyor.drivers.sql.sqlite"
MIGRATIONS = len(load_migrations(PACKAGE, "conveyor_"))


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows read with a plain sqlite3 connection, behind the driver's back."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        return db.execute(sql).fetchall()


@pytest.fixture
async def opened() -> AsyncIterator[list[SqliteDriver]]:
    """Drivers a test appends here are closed when it ends."""
    drivers: list[SqliteDriver] = []
    yield drivers
    for driver in drivers:
        await driver.close()


async def open_driver(opened: list[SqliteDriver], path: Path, **options: str) -> SqliteDriver:
    driver = SqliteDriver(path, **options)
    opened.append(driver)
    await driver.open()
    return driver


# -- the file and its migrations -----------------------------------------------------------------


async def test_open_creates_the_file_in_wal_mode(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"

    await open_driver(opened, path)

    assert path.exists()
    assert read(path, "PRAGMA journal_mode") == [("wal",)]


async def test_migrations_are_applied_once_and_recorded(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_driver(opened, path)
    await driver.close()
    await driver.open()
    await open_driver(opened, path)

    recorded = read(path, "SELECT version, name FROM conveyor_schema_version ORDER BY version")

    expected = [(m.version, m.name) for m in load_migrations(PACKAGE, "conveyor_")]
    assert recorded == expected
    assert recorded[0] == (1, "0001_init.sql")


async def test_two_drivers_opening_a_new_file_at_once_both_succeed(tmp_path: Path) -> None:
    for attempt in range(5):
        path = tmp_path / f"new-{attempt}.db"
        drivers = [SqliteDriver(path) for _ in range(4)]

        await asyncio.gather(*(driver.open() for driver in drivers))

        for driver in drivers:
            await driver.push(make_job())
            await driver.close()
        assert read(path, "SELECT count(*) FROM conveyor_schema_version") == [(MIGRATIONS,)]
        assert read(path, "SELECT count(*) FROM conveyor_jobs") == [(4,)]


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    script = (
        "import asyncio, sys\n"
        "from conveyor.drivers.sql.sqlite import SqliteDriver\n"
        "async def main():\n"
        "    driver = SqliteDriver(sys.argv[1])\n"
        "    await driver.open()\n"
        "    await driver.counts(['q'])\n"
        "    await driver.close()\n"
        "asyncio.run(main())\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]

    errors = [process.communicate(timeout=60)[1].decode() for process in processes]

    assert [process.returncode for process in processes] == [0] * 4, errors
    assert read(path, "SELECT count(*) FROM conveyor_schema_version") == [(MIGRATIONS,)]


async def test_a_script_runs_its_last_statement_without_a_semicolon(tmp_path: Path) -> None:
    # A migration file whose last statement had no ';' lost it: recorded as applied, not done.
    connection = SqliteConnection(str(tmp_path / "jobs.db"))
    await connection.open()
    try:
        await connection.script("CREATE TABLE first (a);\nCREATE TABLE last (b)\n-- the end\n")
    finally:
        await connection.close()

    names = read(tmp_path / "jobs.db", "SELECT name FROM sqlite_master ORDER BY name")
    assert names == [("first",), ("last",)]


async def test_jobs_survive_close_and_reopen(tmp_path: Path, opened: list[SqliteDriver]) -> None:
    path = tmp_path / "jobs.db"
    first = await open_driver(opened, path)
    job = make_job(payload='{"n": 1}', meta={"trace": "abc"}, unique="k")
    await first.push(job)
    await first.close()

    again = await open_driver(opened, path)
    stored = await again.get(job.id)

    assert stored is not None
    assert (stored.payload, stored.meta, stored.unique) == ('{"n": 1}', {"trace": "abc"}, "k")
    assert stored.state is JobState.PENDING
    assert await again.push(make_job(unique="k")) == job.id  # the key is still held


async def test_closed_driver_opens_again_on_next_call(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    driver = await open_driver(opened, tmp_path / "jobs.db")
    job_id = await driver.push(make_job())
    await driver.close()

    stored = await driver.get(job_id)

    assert stored is not None and stored.id == job_id


async def test_methods_open_the_driver_lazily(tmp_path: Path, opened: list[SqliteDriver]) -> None:
    driver = SqliteDriver(tmp_path / "lazy.db")
    opened.append(driver)

    job_id = await driver.push(make_job())

    assert (await driver.counts(["q"]))["q"].pending == 1
    assert job_id


# -- table prefix ------------------------------------------------------------------------------


async def test_prefix_keeps_two_sets_of_tables_apart(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    mail = await open_driver(opened, path, prefix="mail_")
    billing = await open_driver(opened, path, prefix="billing_")

    await mail.push(make_job())

    assert (await mail.counts(["q"]))["q"].pending == 1
    assert (await billing.counts(["q"]))["q"].pending == 0
    tables = {
        str(row[0]) for row in read(path, "SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"mail_jobs", "mail_workers", "billing_jobs", "billing_workers"} <= tables
    assert not any(table.startswith("conveyor_") for table in tables)


@pytest.mark.parametrize("prefix", ["", "1jobs_", "my-app_", "a b", "x;drop", "p" * 32])
def test_bad_prefix_raises_config_error(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        SqliteDriver(tmp_path / "jobs.db", prefix=prefix)


# -- URLs ------------------------------------------------------------------------------------


def test_from_url_reads_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    driver = SqliteDriver.from_url("sqlite:///data/jobs.db")

    assert driver.path == str(tmp_path / "data" / "jobs.db")


def test_from_url_reads_an_absolute_path(tmp_path: Path) -> None:
    driver = SqliteDriver.from_url(f"sqlite:///{tmp_path}/jobs.db")

    assert driver.path == str(tmp_path / "jobs.db")


def test_from_url_decodes_percent_escapes(tmp_path: Path) -> None:
    driver = SqliteDriver.from_url(f"sqlite:///{tmp_path}/my%20jobs.db")

    assert driver.path == str(tmp_path / "my jobs.db")


async def test_from_url_takes_a_prefix_option(tmp_path: Path, opened: list[SqliteDriver]) -> None:
    driver = SqliteDriver.from_url(f"sqlite:///{tmp_path}/jobs.db?prefix=app_")
    opened.append(driver)

    await driver.push(make_job())

    assert read(tmp_path / "jobs.db", "SELECT count(*) FROM app_jobs") == [(1,)]


async def test_from_url_takes_migrate_false(tmp_path: Path, opened: list[SqliteDriver]) -> None:
    driver = SqliteDriver.from_url(f"sqlite:///{tmp_path}/jobs.db?prefix=app_&migrate=false")
    opened.append(driver)

    with pytest.raises(ConfigError, match=r"no SQLite database at .* run `conveyor migrate`"):
        await driver.push(make_job())
    assert list(tmp_path.iterdir()) == []  # no empty database made, nor its -wal or doorbell
    await driver.migrate()
    await driver.push(make_job())

    assert driver.migrate_on_open is False
    assert read(tmp_path / "jobs.db", "SELECT count(*) FROM app_jobs") == [(1,)]


async def test_migrate_false_on_an_empty_file_says_the_schema_is_missing(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    (tmp_path / "jobs.db").touch()  # a file that exists: made by hand, or by sqlite3 jobs.db
    driver = SqliteDriver.from_url(f"sqlite:///{tmp_path}/jobs.db?migrate=false")
    opened.append(driver)

    with pytest.raises(ConfigError, match=r"at version 0, .* run `conveyor migrate`"):
        await driver.push(make_job())


def test_driver_from_url_makes_a_sqlite_driver(tmp_path: Path) -> None:
    driver = driver_from_url(f"sqlite:///{tmp_path}/jobs.db")

    assert isinstance(driver, SqliteDriver)
    assert driver.kind == "sqlite"
    assert (driver.capabilities.durable, driver.capabilities.shared) == (True, True)
    assert driver.capabilities.notify  # by watching PRAGMA data_version


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://:memory:", "memory driver"),
        ("sqlite:///:memory:", "memory driver"),
        ("sqlite://host/jobs.db", "host"),
        ("sqlite://", "no file"),
        ("sqlite:///", "no file"),
        ("postgres:///jobs.db", "not an SQLite URL"),
        ("jobs.db", "not an SQLite URL"),
        (
            "sqlite:///jobs.db?timeout=5",
            "unknown option 'timeout'; the options are prefix, migrate",
        ),
        ("sqlite:///jobs.db?migrate=maybe", "migrate='maybe' is not a yes or no"),
        ("sqlite:///jobs.db?prefix=a_&prefix=b_", "prefix= is given twice"),  # not b_'s, silently
        ("sqlite:///jobs.db?prefix=bad-prefix", "prefix"),
    ],
)
def test_from_url_rejects_what_it_cannot_use(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SqliteDriver.from_url(url)


@pytest.mark.parametrize("path", [":memory:", ""])
def test_in_memory_path_is_refused_for_the_memory_driver(path: str) -> None:
    with pytest.raises(ConfigError, match="memory driver"):
        SqliteDriver(path)


# -- errors ------------------------------------------------------------------------------------


async def test_file_in_missing_folder_raises_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "jobs.db"
    driver = SqliteDriver(path)

    with pytest.raises(BackendUnavailableError) as caught:
        await driver.open()

    message = str(caught.value)
    assert str(path) in message
    assert "folder exists" in message
    assert isinstance(caught.value, DriverError)


async def test_lazy_open_of_unopenable_file_raises_driver_error(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "no-such-folder" / "jobs.db")

    with pytest.raises(DriverError, match="cannot open the SQLite database"):
        await driver.push(make_job())


async def test_file_that_is_not_a_database_raises_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for\n" * 100)

    with pytest.raises(BackendUnavailableError, match="is an SQLite database"):
        await SqliteDriver(path).open()


async def test_locked_database_raises_backend_unavailable_after_busy_timeout(
    tmp_path: Path, opened: list[SqliteDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"
    monkeypatch.setattr(sqlite_connection, "BUSY_TIMEOUT", 0.1)  # the one connect() reads
    driver = await open_driver(opened, path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(BackendUnavailableError, match="locked"):
            await driver.push(make_job())
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert await driver.push(make_job())  # and it works again once the lock is gone


async def test_sqlite_errors_reach_callers_as_driver_errors(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_driver(opened, path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE conveyor_jobs")

    with pytest.raises(DriverError, match="get failed") as caught:
        await driver.get("x")

    assert not isinstance(caught.value, sqlite3.Error)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_a_file_deleted_under_an_open_driver_is_an_error_not_a_lost_push(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_driver(opened, path)
    await driver.push(make_job())
    for left in tmp_path.glob("jobs.db*"):  # as `rm jobs.db*` while the worker runs
        left.unlink()

    with pytest.raises(BackendUnavailableError, match=r"deleted or replaced.*restart"):
        await driver.push(make_job())  # it went to the unlinked file, seen by no one
    with pytest.raises(BackendUnavailableError, match="deleted or replaced"):
        await asyncio.to_thread(driver.push_in_thread, make_job())

    await driver.close()
    job = make_job()
    await driver.open()  # the file now at that path
    await driver.push(job)
    assert read(path, "SELECT id FROM conveyor_jobs") == [(job.id,)]


async def test_a_file_replaced_under_an_open_driver_is_an_error(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path, other = tmp_path / "jobs.db", tmp_path / "restored.db"
    driver = await open_driver(opened, path)
    await (await open_driver(opened, other)).close()
    other.replace(path)  # a backup restored over it

    with pytest.raises(BackendUnavailableError, match="deleted or replaced"):
        await driver.reserve(["default"], 1, 30.0, "me")


# -- several connections on one file --------------------------------------------------------------


async def test_reserves_from_two_drivers_never_hand_out_a_job_twice(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    drivers = [await open_driver(opened, path) for _ in range(2)]
    await drivers[0].push_many([make_job() for _ in range(300)])

    batches = await asyncio.gather(
        *(drivers[i % 2].reserve(["q"], 4, 30.0, f"w{i}") for i in range(100))
    )

    ids = [job.id for batch in batches for job in batch]
    assert len(ids) == len(set(ids)) == 300
    assert (await drivers[1].counts(["q"]))["q"].reserved == 300


async def test_unique_push_from_two_drivers_stores_one_job(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    drivers = [await open_driver(opened, path) for _ in range(2)]

    ids = await asyncio.gather(*(drivers[i % 2].push(make_job(unique="report")) for i in range(20)))

    assert len(set(ids)) == 1
    assert (await drivers[0].counts(["q"]))["q"].pending == 1


async def test_cancelled_call_still_completes(tmp_path: Path, opened: list[SqliteDriver]) -> None:
    """A worker cancelled while its ack is in flight must not leave the ack half-sent: the
    statement runs to the end, as a memory driver call would."""
    driver = await open_driver(opened, tmp_path / "jobs.db")
    await driver.push(make_job())
    [job] = await driver.reserve(["q"], 1, 30.0, "w")
    assert job.reservation is not None
    many = [make_job("p") for _ in range(5000)]
    # A big push keeps the database thread busy, so the ack is still queued when cancelled.
    pushing = asyncio.create_task(driver.push_many(many))

    ack = asyncio.create_task(driver.ack([Reservation(job.id, job.reservation)]))
    await asyncio.sleep(0)
    ack.cancel()
    await pushing
    with pytest.raises(asyncio.CancelledError):
        await ack

    stored = await driver.get(job.id)
    assert stored is not None and stored.state is JobState.SUCCEEDED


# -- prune ----------------------------------------------------------------------------------------


async def test_a_push_from_elsewhere_lands_between_prune_batches(
    tmp_path: Path, opened: list[SqliteDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push waiting for the write lock gets it in the pause after a batch, not once the
    whole backlog is gone: before, the batches followed each other with no gap a waiting
    writer's busy handler could hit, and a push waited for the last one (1.2 s behind a
    prune of 200,000 jobs)."""
    monkeypatch.setattr(sql_driver, "PRUNE_BATCH", 2000)
    path = tmp_path / "jobs.db"
    pruner, pusher = await open_driver(opened, path), await open_driver(opened, path)
    await pruner.push_many([make_job() for _ in range(20_000)])
    jobs = await pruner.reserve(["q"], 20_000, 30.0, "w")
    await pruner.ack([Reservation(job.id, job.reservation or "") for job in jobs])
    started = asyncio.Event()
    batches: list[str] = []
    execute = pruner._execute

    async def noted(name: str, params: Any) -> int:
        batches.append(name)
        if len(batches) == 2:  # the first batch is done: prune is under way
            started.set()
        return await execute(name, params)

    monkeypatch.setattr(pruner, "_execute", noted)
    pruning = asyncio.create_task(pruner.prune("q", -1))
    await started.wait()

    await asyncio.sleep(0.005)  # well into the second batch
    await pusher.push(make_job())

    assert not pruning.done()
    assert await pruning == 20_000


# -- the SQL itself ----------------------------------------------------------------------------


def explain(path: Path, name: str) -> str:
    query = load_queries(PACKAGE, "conveyor_")[name]
    params = {"items": "[]", "queues": '["q"]', "now": 0.0, "lease": 1.0, "limit": 1}
    params |= {"token": "t", "worker": "w", "id": "x", "alone": 0, "older_than": 1.0}
    params |= {"queue": "q", "stored": "s", "state": "s", "offset": 0, "name": "n", "ids": None}
    params |= {"batch": 1, "after": ""}
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        rows = db.execute(f"EXPLAIN QUERY PLAN {query.sql}", params).fetchall()
    return "\n".join(str(row[3]) for row in rows)


async def test_reserve_reads_the_ready_index_not_the_whole_table(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    await open_driver(opened, path)

    plan = explain(path, "reserve")

    assert "USING INDEX conveyor_jobs_ready (queue=?)" in plan
    assert "SCAN conveyor_jobs" not in plan and "SCAN best" not in plan


@pytest.mark.parametrize("name", ["renew", "ack", "release", "fail", "get"])
async def test_settle_statements_find_jobs_by_primary_key(
    tmp_path: Path, opened: list[SqliteDriver], name: str
) -> None:
    path = tmp_path / "jobs.db"
    await open_driver(opened, path)

    assert "sqlite_autoindex_conveyor_jobs_1 (id=?)" in explain(path, name)


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("counts", "COVERING INDEX conveyor_jobs_ready (queue=?)"),
        ("list_jobs_live", "COVERING INDEX conveyor_jobs_ready (queue=?)"),
        ("list_jobs_named_live", "INDEX conveyor_jobs_ready (queue=?)"),
        ("list_jobs", "INDEX conveyor_jobs_state (queue=? AND state=? AND id>?)"),  # after=
        ("list_jobs_named", "INDEX conveyor_jobs_state (queue=? AND state=? AND id>?)"),
        ("prune", "INDEX conveyor_jobs_finished (queue=? AND finished_at<?)"),
        ("finished_ids", "COVERING INDEX conveyor_jobs_state (queue=? AND state=? AND id>?)"),
    ],
)
async def test_reads_by_state_use_the_index_that_holds_those_jobs(
    tmp_path: Path, opened: list[SqliteDriver], name: str, index: str
) -> None:
    """Unfinished jobs are in jobs_ready only, finished ones in jobs_state (migration 0009):
    a statement that reads either kind by state reads that index, never the whole table."""
    path = tmp_path / "jobs.db"
    await open_driver(opened, path)

    plan = explain(path, name)

    assert index in plan
    assert "SCAN conveyor_jobs" not in plan


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("retry_failed", "sqlite_autoindex_conveyor_jobs_1 (id=?)"),
        ("purge_live", "sqlite_autoindex_conveyor_jobs_1 (id=?)"),
        ("purge", "conveyor_jobs_state (queue=? AND state=? AND id=?)"),
    ],
)
async def test_retry_and_purge_of_ids_look_each_one_up(
    tmp_path: Path, opened: list[SqliteDriver], name: str, index: str
) -> None:
    """Before, each tested every job of the state against the ids (`:ids IS NULL OR id IN`):
    among 200,000 failed jobs a retry of one id took 50 ms, and a retry or purge by name,
    200 ids at a time, 31 s for 100,000 jobs (4.8 s for all of the queue's)."""
    path = tmp_path / "jobs.db"
    await open_driver(opened, path)

    plan = explain(path, name)

    assert f"SEARCH conveyor_jobs USING INDEX {index}" in plan or (
        f"SEARCH conveyor_jobs USING COVERING INDEX {index}" in plan
    ), plan
    assert "SCAN conveyor_jobs" not in plan


async def test_jobs_stored_before_migration_0009_are_counted_listed_and_purged(
    tmp_path: Path, opened: list[SqliteDriver]
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_driver(opened, path)
    first, second = make_job(), make_job()
    await driver.push_many([first, second])
    [taken] = await driver.reserve(["q"], 1, 30.0, "w")
    await driver.ack([Reservation(taken.id, taken.reservation or "")])
    await driver.close()
    # The indexes as 0001 and 0002 made them, and 0009 not yet recorded.
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            """
            DELETE FROM conveyor_schema_version WHERE version = 9;
            DROP INDEX conveyor_jobs_state;
            CREATE INDEX conveyor_jobs_state ON conveyor_jobs (queue, state, id, available_at);
            DROP INDEX conveyor_jobs_ready;
            CREATE INDEX conveyor_jobs_ready ON conveyor_jobs (queue, priority DESC, due_at, id)
                WHERE state IN ('pending', 'reserved');
            """
        )

    upgraded = await open_driver(opened, path)
    waiting = second if taken.id == first.id else first

    counts = (await upgraded.counts(["q"]))["q"]
    assert (counts.pending, counts.succeeded) == (1, 1)
    assert [job.id for job in await upgraded.list_jobs("q", JobState.PENDING)] == [waiting.id]
    assert [job.id for job in await upgraded.list_jobs("q", JobState.SUCCEEDED)] == [taken.id]
    assert await upgraded.purge("q", JobState.PENDING) == 1
    assert read(path, "SELECT max(version) FROM conveyor_schema_version") == [(MIGRATIONS,)]


def test_every_query_block_is_described_and_prefixed() -> None:
    queries = load_queries(PACKAGE, "app_")

    assert queries.keys() >= REQUIRED_QUERIES
    for query in queries.values():
        assert query.description, query.name
        assert "{prefix}" not in query.sql and "conveyor_" not in query.sql, query.name
    assert "app_jobs" in queries["reserve"].sql


PUSH_FROM_ANOTHER_PROCESS = """
import asyncio, sys, time
from conveyor.drivers.sql.sqlite import SqliteConnection, SqliteDriver
from conveyor.job import NewJob, new_id

async def main():
    driver = SqliteDriver(sys.argv[1])
    await driver.push(NewJob(new_id(), "q", "j", "{}"))
    await driver.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("heard_by", ["doorbell", "watcher"])
async def test_wait_returns_soon_after_a_push_from_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, heard_by: str
) -> None:
    """Heard by the doorbell (the watcher made to look once a minute), or by the watcher
    alone (no doorbell: no Unix sockets, a folder that cannot be made)."""
    if heard_by == "doorbell":
        monkeypatch.setattr(sqlite_module, "WATCH_BUSY", 60.0)
        monkeypatch.setattr(sqlite_module, "WATCH_IDLE", 60.0)
    else:
        monkeypatch.setattr(Doorbell, "open", lambda self, notify: None)
    driver = SqliteDriver(tmp_path / "jobs.db")
    try:
        assert await driver.reserve(["q"], 1, 30.0, "w") == []
        waiting = asyncio.create_task(driver.wait(["q"], 30.0))
        pusher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUSH_FROM_ANOTHER_PROCESS, str(tmp_path / "jobs.db")
        )
        assert await pusher.wait() == 0
        pushed = time.monotonic()
        await asyncio.wait_for(waiting, 5.0)  # far sooner than its 30 s timeout
        assert time.monotonic() - pushed < 1.0
        assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1
    finally:
        await driver.close()


async def test_wait_without_writes_elsewhere_lasts_its_timeout(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    try:
        await driver.reserve(["q"], 1, 30.0, "w")
        begin = time.monotonic()
        await driver.wait(["q"], 0.2)
        assert time.monotonic() - begin >= 0.19
    finally:
        await driver.close()


async def test_watcher_looks_often_after_work_and_seldom_when_idle(tmp_path: Path) -> None:
    driver = SqliteDriver(tmp_path / "jobs.db")
    try:
        assert driver._watch_interval() == sqlite_module.WATCH_IDLE  # nothing found yet
        await driver.push(make_job())

        assert len(await driver.reserve(["q"], 1, 30.0, "w")) == 1
        assert driver._watch_interval() == sqlite_module.WATCH_BUSY
        assert await driver.reserve(["q"], 1, 30.0, "w") == []  # finding nothing: no change
        assert driver._watch_interval() < sqlite_module.WATCH_IDLE
    finally:
        await driver.close()
