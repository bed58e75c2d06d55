"""counts, list_jobs and get: what a reader sees of each state."""

from __future__ import annotations

import pytest

from conveyor.drivers.base import Driver, QueueCounts
from conveyor.job import JobState
from tests.backends import needs

from .helpers import (
    LONG_LEASE,
    failure_of,
    make_job,
    push_and_reserve,
    reservation,
)


async def fill_every_state(driver: Driver, queue: str = "q") -> dict[JobState, list[str]]:
    """Two pending, one delayed, one reserved, one succeeded and one failed job in `queue`."""
    jobs = {
        JobState.PENDING: [make_job(queue), make_job(queue)],
        JobState.DELAYED: [make_job(queue, delay=60)],
    }
    done = await push_and_reserve(driver, make_job(queue))
    await driver.ack([reservation(done)])
    failed = await push_and_reserve(driver, make_job(queue))
    await driver.fail([failure_of(failed)])
    reserved = await push_and_reserve(driver, make_job(queue))
    await driver.push_many([job for group in jobs.values() for job in group])
    ids = {state: [job.id for job in group] for state, group in jobs.items()}
    ids[JobState.RESERVED] = [reserved.id]
    ids[JobState.SUCCEEDED] = [done.id]
    ids[JobState.FAILED] = [failed.id]
    return ids


@needs("exact_counts")
async def test_counts_every_state(driver: Driver) -> None:
    await fill_every_state(driver)

    counts = await driver.counts(["q"])

    assert counts == {"q": QueueCounts(pending=2, delayed=1, reserved=1, succeeded=1, failed=1)}
    states = ("pending", "delayed", "reserved", "succeeded", "failed", "cancelled")
    # Plain ints, as JSON and arithmetic take them (MySQL's sums are DECIMAL).
    assert [type(getattr(counts["q"], state)) for state in states] == [int] * len(states)
    age = counts["q"].oldest_pending_age
    assert age is not None and 0 <= age < 10


async def test_counts_unknown_queue_as_zeros(driver: Driver) -> None:
    await driver.push(make_job("q"))

    counts = await driver.counts(["q", "nobody"])

    assert counts == {"q": QueueCounts(pending=1), "nobody": QueueCounts()}


async def test_counts_only_queues_named(driver: Driver) -> None:
    await driver.push_many([make_job("a"), make_job("b"), make_job("b")])

    assert await driver.counts(["b"]) == {"b": QueueCounts(pending=2)}


async def test_counts_of_no_queues_is_empty(driver: Driver) -> None:
    await driver.push(make_job())

    assert await driver.counts([]) == {}


@needs("exact_counts")
async def test_delayed_job_counts_as_pending_once_due(driver: Driver) -> None:
    await driver.push(make_job(delay=-0.001))
    await driver.push(make_job(delay=60))

    assert (await driver.counts(["q"]))["q"] == QueueCounts(pending=1, delayed=1)


@needs("lookup")
async def test_list_jobs_by_state(driver: Driver) -> None:
    ids = await fill_every_state(driver)

    for state, expected in ids.items():
        listed = await driver.list_jobs("q", state)
        assert [job.id for job in listed] == sorted(expected), state
        assert all(job.state is state for job in listed), state


@needs("lookup")
async def test_list_jobs_of_empty_state_is_empty(driver: Driver) -> None:
    await driver.push(make_job())

    assert await driver.list_jobs("q", JobState.FAILED) == []
    assert await driver.list_jobs("nobody", JobState.PENDING) == []


@needs("lookup")
async def test_list_jobs_only_lists_the_queue(driver: Driver) -> None:
    mine = make_job("a")
    await driver.push_many([mine, make_job("b")])

    assert [job.id for job in await driver.list_jobs("a", JobState.PENDING)] == [mine.id]


@needs("lookup")
@needs("ordered")
async def test_list_jobs_orders_by_id(driver: Driver) -> None:
    jobs = [make_job(priority=p, delay=-p) for p in (3, 1, 2, 0, 4)]
    await driver.push_many(list(reversed(jobs)))

    listed = await driver.list_jobs("q", JobState.PENDING)

    assert [job.id for job in listed] == sorted(job.id for job in jobs)


@needs("lookup")
async def test_list_jobs_pages_with_limit_and_offset(driver: Driver) -> None:
    jobs = [make_job() for _ in range(7)]
    await driver.push_many(jobs)

    pages = [await driver.list_jobs("q", JobState.PENDING, limit=3, offset=o) for o in (0, 3, 6)]

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job.id for page in pages for job in page] == sorted(job.id for job in jobs)
    assert await driver.list_jobs("q", JobState.PENDING, limit=3, offset=7) == []


@needs("lookup")
async def test_list_jobs_by_name_filters_the_whole_state_then_pages(driver: Driver) -> None:
    jobs = [make_job(name="wanted" if n % 4 == 3 else "other") for n in range(12)]
    await driver.push_many(jobs)
    wanted = sorted(job.id for job in jobs if job.name == "wanted")

    first = await driver.list_jobs("q", JobState.PENDING, limit=2, name="wanted")
    second = await driver.list_jobs("q", JobState.PENDING, limit=2, offset=2, name="wanted")

    assert [job.id for job in first + second] == wanted
    assert {job.name for job in first + second} == {"wanted"}
    assert await driver.list_jobs("q", JobState.PENDING, name="nobody") == []
    assert await driver.list_jobs("q", JobState.FAILED, name="wanted") == []


@needs("lookup")
@needs("unique")
async def test_list_jobs_returns_full_records(driver: Driver) -> None:
    job = make_job(payload='{"x": 1}', meta={"k": "v"}, unique="u")
    await driver.push(job)

    [listed] = await driver.list_jobs("q", JobState.PENDING)

    assert listed == await driver.get(job.id)


@needs("lookup")
async def test_get_unknown_id_returns_none(driver: Driver) -> None:
    await driver.push(make_job())

    assert await driver.get("0" * 32) is None


@needs("lookup")
async def test_get_shows_finished_job(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, lease=LONG_LEASE)
    await driver.ack([reservation(reserved)])

    got = await driver.get(reserved.id)

    assert got is not None
    assert got.state is JobState.SUCCEEDED
    assert got.attempt == 1


@needs("ordered")
@needs("exact_counts")
async def test_counts_tell_how_long_the_oldest_pending_job_has_waited(driver: Driver) -> None:
    assert (await driver.counts(["q"]))["q"].oldest_pending_age is None
    await driver.push_many(
        [make_job(delay=-30.0, priority=-1), make_job(delay=-10.0, priority=5), make_job(delay=60)]
    )

    age = (await driver.counts(["q"]))["q"].oldest_pending_age

    assert age is not None and 29.0 <= age <= 40.0  # the lower priority waited longest
    await driver.reserve(["q"], 2, 30.0, "w1")
    assert (await driver.counts(["q"]))["q"].oldest_pending_age is None  # only a delayed one


@needs("exact_counts")
@needs("lookup")
async def test_finished_counts_follow_retry_purge_and_cancel(driver: Driver) -> None:
    for _ in range(2):
        failed = await push_and_reserve(driver, make_job())
        await driver.fail([failure_of(failed)])
    done = await push_and_reserve(driver, make_job())
    await driver.ack([reservation(done)])
    assert await driver.retry_failed("q", [failed.id]) == 1
    assert await driver.purge("q", JobState.SUCCEEDED) == 1

    counts = (await driver.counts(["q"]))["q"]

    assert (counts.pending, counts.succeeded, counts.failed) == (1, 0, 1)
    assert await driver.prune("q", older_than=-60) == 1  # the failed job, finished "long ago"
    assert (await driver.counts(["q"]))["q"] == QueueCounts(pending=1)


@needs("lookup")
@pytest.mark.parametrize("huge", [2**64, 10**20])
async def test_list_jobs_takes_a_limit_and_offset_past_any_integer_column(
    driver: Driver, huge: int
) -> None:
    """A page as large as asked (the CLI's --limit, a script's), or past the end: MySQL
    failed with a syntax error on a LIMIT past 2**64 - 1."""
    jobs = [make_job() for _ in range(3)]
    await driver.push_many(jobs)

    listed = await driver.list_jobs("q", JobState.PENDING, huge)

    assert [job.id for job in listed] == sorted(job.id for job in jobs)
    assert await driver.list_jobs("q", JobState.PENDING, 5, huge) == []
