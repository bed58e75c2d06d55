"""retry_failed and purge of a whole queue on the SQL drivers: BULK_BATCH jobs per statement.

Before, each was one statement over the whole backlog: on MariaDB a retry of 300,000 failed
jobs outran the driver's 10 s timeout (BackendUnavailableError, nothing retried), and on
SQLite such a statement holds the file's one write lock, and every push, until it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import conveyor.drivers.sql.driver as sql_driver
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.job import JobState
from tests.backends import NOT_UTF8, storage_of
from tests.contract.helpers import failure_of, make_job, push_and_reserve, reservation

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlDriver]:
    async with storage_of(request.param, tmp_path) as storage:
        try:
            opened = await storage.open_driver()
            assert isinstance(opened, SqlDriver)
            yield opened
        finally:
            await storage.close_all()


def statements(driver: SqlDriver, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the writing statements the driver runs from now on."""
    names: list[str] = []
    execute = driver._execute

    async def counted(name: str, params: Any) -> int:
        names.append(name)
        return await execute(name, params)

    monkeypatch.setattr(driver, "_execute", counted)
    return names


async def failed_jobs(driver: SqlDriver, count: int, **fields: Any) -> list[str]:
    """Ids of `count` jobs of queue q moved to failed storage, oldest first."""
    jobs = [make_job(**fields) for _ in range(count)]
    await driver.push_many(jobs)
    reserved = await driver.reserve(["q"], count, 30.0, "w")
    assert await driver.fail([failure_of(job) for job in reserved]) == {j.id for j in jobs}
    return [job.id for job in jobs]


async def test_retry_failed_of_a_whole_queue_moves_a_batch_per_statement(
    driver: SqlDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_driver, "BULK_BATCH", 3)
    ids = await failed_jobs(driver, 8)
    ran = statements(driver, monkeypatch)

    assert await driver.retry_failed("q") == 8

    assert ran == ["retry_failed"] * 3  # 3 + 3 + 2
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.failed) == (8, 0)
    again = await driver.reserve(["q"], 8, 30.0, "w")
    assert sorted(job.id for job in again) == sorted(ids)
    assert {job.attempt for job in again} == {1}


async def test_retry_failed_in_batches_passes_over_jobs_whose_key_is_held(
    driver: SqlDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed jobs that must stay failed fill whole batches: the next batch starts past them."""
    monkeypatch.setattr(sql_driver, "BULK_BATCH", 2)
    held = [await failed_jobs(driver, 1, unique=f"k{n}") for n in range(4)]  # ids first
    free = await failed_jobs(driver, 3)
    for n in range(4):
        await driver.push(make_job(unique=f"k{n}"))  # an unfinished job holds each key

    assert await driver.retry_failed("q") == 3

    for job_id in free:
        assert (info := await driver.get(job_id)) is not None and info.state is JobState.PENDING
    for [job_id] in held:
        assert (info := await driver.get(job_id)) is not None and info.state is JobState.FAILED


async def test_purge_of_a_whole_queue_deletes_a_batch_per_statement(
    driver: SqlDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_driver, "BULK_BATCH", 3)
    await failed_jobs(driver, 7)
    done = await push_and_reserve(driver, make_job())
    await driver.ack([reservation(done)])
    ran = statements(driver, monkeypatch)

    assert await driver.purge("q", JobState.FAILED) == 7

    assert ran == ["purge"] * 3  # 3 + 3 + 1
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.failed, counts.succeeded) == (0, 1)


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.DELAYED])
async def test_purge_of_a_whole_queues_unfinished_jobs_deletes_a_batch_per_statement(
    driver: SqlDriver, monkeypatch: pytest.MonkeyPatch, state: JobState
) -> None:
    """Before, a purge of pending (or delayed) jobs was one statement over all of them: on
    postgres, 100,000 pending jobs took 7 s in it, a million outran the driver's timeout."""
    monkeypatch.setattr(sql_driver, "BULK_BATCH", 3)
    await driver.push_many([make_job() for _ in range(4)])
    await driver.push_many([make_job(delay=3600) for _ in range(4)])
    running = await push_and_reserve(driver, make_job(priority=9))
    ran = statements(driver, monkeypatch)

    assert await driver.purge("q", state) == 4

    assert len(ran) == 2 and set(ran) <= {"purge", "purge_live"}  # 3 + 1
    counts = (await driver.counts(["q"]))["q"]
    assert counts.reserved == 1 and (counts.pending, counts.delayed) == (
        (0, 4) if state is JobState.PENDING else (4, 0)
    )
    assert (info := await driver.get(running.id)) is not None
    assert info.state is JobState.RESERVED


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
async def test_a_failed_job_whose_id_is_not_text_is_passed_over(kind: str, tmp_path: Path) -> None:
    """No statement can name such a job (its row is for a person to delete); the others are
    retried and purged. Before, the batch naming it failed, and with it the whole command:
    a raw UnicodeEncodeError on sqlite, 'Broken JSON string' on mysql."""
    async with storage_of(kind, tmp_path) as storage:
        try:
            driver = await storage.open_driver()
            assert isinstance(driver, SqlDriver)
            ids = await failed_jobs(driver, 3)
            await storage.damage(ids[1], "id", NOT_UTF8)

            assert await driver.retry_failed("q") == 2
            for job in await driver.reserve(["q"], 3, 30.0, "w"):
                await driver.fail([failure_of(job)])
            assert await driver.purge("q", JobState.FAILED) == 2

            assert (await driver.counts(["q"]))["q"].failed == 1
        finally:
            await storage.close_all()


async def test_prune_deletes_in_batches_until_a_short_one(
    driver: SqlDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is its own statement and transaction, so a backlog of old jobs never holds
    locks (on SQLite the file's one write lock, and every push) for seconds. Before, SQLite's
    prune was one DELETE of every old job: 1.2 s for 200,000, every push waiting meanwhile."""
    monkeypatch.setattr(sql_driver, "PRUNE_BATCH", 7)
    await driver.push_many([make_job() for _ in range(20)])
    jobs = await driver.reserve(["q"], 20, 30.0, "w")
    await driver.ack([reservation(job) for job in jobs[:10]])
    await driver.fail([failure_of(job) for job in jobs[10:16]])
    names = statements(driver, monkeypatch)

    assert await driver.prune("q", -1) == 16

    assert names == ["prune"] * 3  # 7 + 7 + 2
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.succeeded, counts.failed, counts.reserved) == (0, 0, 4)
