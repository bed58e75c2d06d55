"""The Redis driver's job-list indexes, pending_ids and failed_ids, against the jobs they list:
entries a job's move left behind, jobs whose hash is damaged or gone, and what list_jobs and
reserve make of them. The shared Redis on 127.0.0.1:6379, each test under a key prefix of its
own, looked at behind the driver's back with a plain client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from conveyor.drivers.base import Failure
from conveyor.drivers.redis import RedisDriver
from conveyor.job import ErrorInfo, JobState
from tests.backends import require_service
from tests.backends.redis import START, URL, delete_prefix, fresh_prefix
from tests.contract.helpers import LONG_LEASE, make_job

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def driver() -> AsyncIterator[RedisDriver]:
    require_service("redis", 6379, START)
    opened = RedisDriver(URL, prefix=fresh_prefix())
    await opened.open()
    yield opened
    await opened.close()
    await delete_prefix(opened.prefix)


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client on the shared server, to look and write behind the driver's back."""
    client = Redis.from_url(URL, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_cancelled_job_whose_rank_is_damaged_is_never_reserved(
    driver: RedisDriver, raw: Redis
) -> None:
    """cancel finds a job's entry among the due ones by its rank: with the rank damaged it
    missed the entry, and the next reserve handed the cancelled job out to run."""
    job = make_job(priority=5)
    await driver.push(job)
    await raw.hdel(driver.keys("q").job + job.id, "rank")
    assert await driver.cancel([job.id]) == {job.id}

    assert await driver.reserve(["q"], 10, LONG_LEASE, "w1") == []

    got = await driver.get(job.id)
    assert got is not None and got.state is JobState.CANCELLED
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.reserved, counts.cancelled) == (0, 0, 1)


async def test_a_delayed_job_whose_hash_is_gone_leaves_no_id_in_pending_ids(
    driver: RedisDriver, raw: Redis
) -> None:
    """reserve dropped such a job from the delayed set once it fell due, but left its id in
    pending_ids: the index then held as many ids as the sets, though not theirs, so a job
    missing from it (stored by an older driver) was never indexed, nor listed."""
    keys = driver.keys("q")
    gone = make_job(delay=0.2)
    await driver.push(gone)
    await raw.delete(keys.job + gone.id)
    deadline = time.monotonic() + 30
    while await raw.zcard(keys.delayed) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        assert await driver.reserve(["q"], 10, LONG_LEASE, "w1") == []
    assert await raw.zcard(keys.delayed) == 0
    older = make_job()
    await driver.push(older)
    await raw.zrem(keys.pending_ids, older.id)  # as an older driver's push leaves it

    listed = await driver.list_jobs("q", JobState.PENDING)

    assert [job.id for job in listed] == [older.id]
    assert await raw.zrange(keys.pending_ids, 0, -1) == [older.id]


async def test_a_failed_job_whose_state_is_damaged_is_listed_as_failed(
    driver: RedisDriver, raw: Redis
) -> None:
    """list.lua counted it on the page, then list_jobs left it out (its state read as a
    placeholder): the page came back short, and `conveyor failed list`, which stops at a
    short page, never showed the failed jobs after it."""
    await driver.push_many([make_job() for _ in range(4)])
    jobs = await driver.reserve(["q"], 4, LONG_LEASE, "w1")
    await driver.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs])
    ids = sorted(job.id for job in jobs)
    await raw.hdel(driver.keys("q").job + ids[0], "state")

    first = await driver.list_jobs("q", JobState.FAILED, 2)
    rest = await driver.list_jobs("q", JobState.FAILED, 2, after=first[-1].id)

    assert [job.id for job in first + rest] == ids
    assert {job.state for job in first + rest} == {JobState.FAILED}
    assert "state" in first[0].unreadable
    assert (await driver.counts(["q"]))["q"].failed == 4


async def test_purge_deletes_failed_jobs_whose_state_is_damaged_or_hash_is_gone(
    driver: RedisDriver, raw: Redis
) -> None:
    """purge read such a job's state from its hash and left it: after a purge of every failed
    job, the counts still had them failed and failed_ids still held them (the damaged one
    listed too), until prune's retention ran out."""
    keys = driver.keys("q")
    await driver.push_many([make_job() for _ in range(3)])
    jobs = await driver.reserve(["q"], 3, LONG_LEASE, "w1")
    await driver.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs])
    ids = sorted(job.id for job in jobs)
    await raw.hdel(keys.job + ids[0], "state")
    await raw.delete(keys.job + ids[1])

    # The job whose hash is gone is no job to delete: the index is mended first, without it.
    assert await driver.purge("q", JobState.FAILED) == 2

    assert await driver.list_jobs("q", JobState.FAILED) == []
    assert (await driver.counts(["q"]))["q"].failed == 0
    assert await raw.zcard(keys.failed_ids) == 0
    assert await raw.exists(keys.job + ids[0]) == 0


async def failed_ids_an_older_driver_left(driver: RedisDriver, raw: Redis) -> list[str]:
    """In a rolling upgrade an older driver's prune deletes a failed job but not its id in
    failed_ids, and its fail adds a failed job to the failed set alone: failed_ids holds as
    many ids as the set, not the same. Returns the ids of the failed jobs, sorted."""
    keys = driver.keys("q")
    pruned, kept, missing = make_job(), make_job(), make_job()
    await driver.push_many([pruned, kept, missing])
    jobs = await driver.reserve(["q"], 3, LONG_LEASE, "w1")
    await driver.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs])
    await raw.delete(keys.job + pruned.id)  # the older prune: the job and its
    await raw.zrem(keys.failed, pruned.id)  # place in failed, not its id in failed_ids
    await raw.zrem(keys.failed_ids, missing.id)  # the older fail: in failed alone
    return sorted([kept.id, missing.id])


async def test_ids_an_older_driver_left_in_failed_ids_hide_no_listed_job(
    driver: RedisDriver, raw: Redis
) -> None:
    """The index was mended only when it held fewer ids than the set: holding as many, it
    was trusted, and the job it missed was never listed, long after the upgrade."""
    failed = await failed_ids_an_older_driver_left(driver, raw)

    listed = await driver.list_jobs("q", JobState.FAILED)

    assert [job.id for job in listed] == failed
    assert sorted(await raw.zrange(driver.keys("q").failed_ids, 0, -1)) == failed


async def test_ids_an_older_driver_left_in_failed_ids_hide_no_job_from_retry(
    driver: RedisDriver, raw: Redis
) -> None:
    """retry_failed(queue) (and purge of a state) read every id of the index: the job it
    missed was never retried."""
    failed = await failed_ids_an_older_driver_left(driver, raw)

    assert await driver.retry_failed("q") == 2

    listed = await driver.list_jobs("q", JobState.PENDING)
    assert [job.id for job in listed] == failed


async def test_a_job_retried_while_its_page_is_read_leaves_the_page_full(
    driver: RedisDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list_jobs reads a page's ids from the index, then the jobs: a job retried in between
    was left out and the page came back short, which `conveyor failed list` takes for the
    end. Here another driver retries the first job just after its id was read."""
    await driver.push_many([make_job() for _ in range(4)])
    jobs = await driver.reserve(["q"], 4, LONG_LEASE, "w1")
    await driver.fail([Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs])
    ids = sorted(job.id for job in jobs)
    other = RedisDriver(URL, prefix=driver.prefix)
    await other.open()
    walk = driver._walk

    async def walk_then_retry(*args: Any, **kwargs: Any) -> list[str]:
        found = await walk(*args, **kwargs)
        if ids[0] in found:
            assert await other.retry_failed("q", [ids[0]]) == 1
        return found

    monkeypatch.setattr(driver, "_walk", walk_then_retry)
    try:
        page = await driver.list_jobs("q", JobState.FAILED, 2)
    finally:
        await other.close()

    assert [job.id for job in page] == ids[1:3]
