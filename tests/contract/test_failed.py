"""retry_failed, purge and prune: what moves back, what is deleted, and what is kept."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.drivers.base import Driver
from conveyor.job import JobInfo, JobState
from tests.backends import needs

from .helpers import (
    LONG_LEASE,
    Storage,
    failure_of,
    make_job,
    push_and_reserve,
    release_of,
    reservation,
    state_of,
)

#: Connections racing in one round of the retry_failed races, and rounds per test: enough to
#: make the statements overlap on every backend here.
RACERS = 4
ROUNDS = 10


async def push_and_fail(driver: Driver, queue: str = "q", unique: str | None = None) -> JobInfo:
    """A job moved to failed storage after its first attempt."""
    reserved = await push_and_reserve(driver, make_job(queue, unique=unique))
    assert await driver.fail([failure_of(reserved)]) == {reserved.id}
    return reserved


async def push_and_ack(driver: Driver, queue: str = "q") -> JobInfo:
    """A job that succeeded on its first attempt."""
    reserved = await push_and_reserve(driver, make_job(queue))
    assert await driver.ack([reservation(reserved)]) == {reserved.id}
    return reserved


# retry_failed


@needs("lookup")
async def test_retry_failed_moves_every_failed_job_to_pending(driver: Driver) -> None:
    failed = [await push_and_fail(driver) for _ in range(3)]

    assert await driver.retry_failed("q") == 3

    for job in failed:
        got = await driver.get(job.id)
        assert got is not None
        assert (got.state, got.attempt, got.finished_at) == (JobState.PENDING, 0, None)


async def test_retried_job_is_reserved_with_attempt_one(driver: Driver) -> None:
    failed = await push_and_fail(driver)
    await driver.retry_failed("q")

    [again] = await driver.reserve(["q"], 1, LONG_LEASE, "w2")

    assert again.id == failed.id
    assert again.attempt == 1
    assert again.reservation != failed.reservation


@needs("lookup")
async def test_retry_failed_by_ids_moves_only_those(driver: Driver) -> None:
    chosen, other = await push_and_fail(driver), await push_and_fail(driver)

    assert await driver.retry_failed("q", [chosen.id]) == 1

    assert await state_of(driver, chosen.id) == "pending"
    assert await state_of(driver, other.id) == "failed"


@needs("lookup")
@needs("exact_counts")
async def test_retry_failed_ignores_jobs_not_failed(driver: Driver) -> None:
    done = await push_and_ack(driver)
    pending = make_job()
    await driver.push(pending)

    assert await driver.retry_failed("q", [pending.id, done.id]) == 0

    assert await state_of(driver, done.id) == "succeeded"
    assert (await driver.counts(["q"]))["q"].pending == 1


@needs("lookup")
async def test_retry_failed_touches_only_its_queue(driver: Driver) -> None:
    mine, theirs = await push_and_fail(driver, "a"), await push_and_fail(driver, "b")

    assert await driver.retry_failed("a", [mine.id, theirs.id]) == 1

    assert await state_of(driver, theirs.id) == "failed"


async def test_retry_failed_of_nothing_moves_nothing(driver: Driver) -> None:
    assert await driver.retry_failed("q") == 0
    assert await driver.retry_failed("q", []) == 0


@needs("lookup")
@needs("unique")
async def test_retry_failed_leaves_job_whose_unique_key_is_taken(driver: Driver) -> None:
    failed = await push_and_fail(driver, unique="k")
    holder = make_job(unique="k")
    assert await driver.push(holder) == holder.id

    assert await driver.retry_failed("q") == 0

    assert await state_of(driver, failed.id) == "failed"
    assert await state_of(driver, holder.id) == "pending"


@needs("unique")
async def test_retried_job_holds_its_unique_key_again(driver: Driver) -> None:
    failed = await push_and_fail(driver, unique="k")

    assert await driver.retry_failed("q") == 1

    assert await driver.push(make_job(unique="k")) == failed.id


@needs("lookup")
@needs("unique")
async def test_retry_failed_moves_one_of_two_jobs_sharing_a_unique_key(driver: Driver) -> None:
    first = await push_and_fail(driver, unique="k")
    second = await push_and_fail(driver, unique="k")

    assert await driver.retry_failed("q") == 1

    states = {await state_of(driver, first.id), await state_of(driver, second.id)}
    assert states == {"pending", "failed"}


@needs("unique")
async def test_job_left_failed_by_retry_failed_is_still_counted_failed(driver: Driver) -> None:
    await push_and_fail(driver, unique="k")
    await driver.push(make_job(unique="k"))  # holds the key: the failed job cannot move

    for _ in range(2):
        assert await driver.retry_failed("q") == 0

    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.failed) == (1, 1)


@needs("unique")
async def test_retry_failed_of_two_sharing_a_key_counts_the_one_left_failed(
    driver: Driver,
) -> None:
    await push_and_fail(driver, unique="k")
    await push_and_fail(driver, unique="k")

    assert await driver.retry_failed("q") == 1

    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.failed) == (1, 1)


# purge


@needs("lookup")
async def test_purge_deletes_every_failed_job_by_default(driver: Driver) -> None:
    failed = [await push_and_fail(driver) for _ in range(2)]
    kept = make_job()
    await driver.push(kept)

    assert await driver.purge("q") == 2

    assert [await driver.get(job.id) for job in failed] == [None, None]
    assert await driver.get(kept.id) is not None


@needs("lookup")
async def test_purge_by_ids_deletes_only_those(driver: Driver) -> None:
    chosen, other = await push_and_fail(driver), await push_and_fail(driver)

    assert await driver.purge("q", JobState.FAILED, [chosen.id]) == 1

    assert await driver.get(chosen.id) is None
    assert await state_of(driver, other.id) == "failed"


@needs("lookup")
async def test_purge_touches_only_its_queue(driver: Driver) -> None:
    mine, theirs = await push_and_fail(driver, "a"), await push_and_fail(driver, "b")

    assert await driver.purge("a", JobState.FAILED, [mine.id, theirs.id]) == 1

    assert await state_of(driver, theirs.id) == "failed"


@needs("lookup")
async def test_purge_deletes_only_the_state_named(driver: Driver) -> None:
    failed = await push_and_fail(driver)
    pending = make_job()
    delayed = make_job(delay=60)
    await driver.push_many([pending, delayed])

    assert await driver.purge("q", JobState.PENDING) == 1

    assert await driver.get(pending.id) is None
    assert await state_of(driver, delayed.id) == "delayed"
    assert await state_of(driver, failed.id) == "failed"


@needs("lookup")
async def test_purge_delayed_leaves_due_jobs(driver: Driver) -> None:
    pending = make_job()
    delayed = make_job(delay=60)
    await driver.push_many([pending, delayed])

    assert await driver.purge("q", JobState.DELAYED) == 1

    assert await driver.get(delayed.id) is None
    assert await state_of(driver, pending.id) == "pending"


@needs("lookup")
async def test_purge_succeeded(driver: Driver) -> None:
    done = await push_and_ack(driver)

    assert await driver.purge("q", JobState.SUCCEEDED) == 1

    assert await driver.get(done.id) is None


@needs("unique")
async def test_purged_pending_job_frees_its_unique_key(driver: Driver) -> None:
    await driver.push(make_job(unique="k"))
    await driver.purge("q", JobState.PENDING)
    fresh = make_job(unique="k")

    assert await driver.push(fresh) == fresh.id


async def test_purged_job_is_never_reserved(driver: Driver) -> None:
    await driver.push(make_job())
    await driver.purge("q", JobState.PENDING)

    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []


@needs("lookup")
async def test_purge_reserved_raises_value_error_and_deletes_nothing(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    with pytest.raises(ValueError, match="reserved"):
        await driver.purge("q", JobState.RESERVED)

    assert await state_of(driver, reserved.id) == "reserved"
    assert await driver.ack([reservation(reserved)]) == {reserved.id}


# prune


@needs("lookup")
async def test_prune_deletes_jobs_finished_longer_ago_than_older_than(driver: Driver) -> None:
    done, failed = await push_and_ack(driver), await push_and_fail(driver)

    assert await driver.prune("q", -1) == 2  # finished before a second from now

    assert await driver.get(done.id) is None
    assert await driver.get(failed.id) is None


@needs("lookup")
async def test_prune_keeps_jobs_finished_more_recently_than_older_than(driver: Driver) -> None:
    done = await push_and_ack(driver)

    assert await driver.prune("q", 3600) == 0

    assert await state_of(driver, done.id) == "succeeded"


@needs("lookup")
async def test_prune_keeps_unfinished_jobs(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    released = await push_and_reserve(driver)
    await driver.release([release_of(released, -1)])
    pending, delayed = make_job(), make_job(delay=60)
    await driver.push_many([pending, delayed])

    assert await driver.prune("q", -3600) == 0

    ids = [reserved.id, released.id, pending.id, delayed.id]
    states = [await state_of(driver, job_id) for job_id in ids]
    assert states == ["reserved", "pending", "pending", "delayed"]


@needs("lookup")
async def test_prune_touches_only_its_queue(driver: Driver) -> None:
    theirs = await push_and_ack(driver, "b")

    assert await driver.prune("a", -1) == 0

    assert await state_of(driver, theirs.id) == "succeeded"


@needs("unique")
async def test_concurrent_retries_of_failed_jobs_sharing_a_key_move_one_without_error(
    storage: Storage, driver: Driver
) -> None:
    # Each failed job retried by id from a connection of its own, at once: the statements
    # cannot see each other's move, and the backend's unique index refuses all but the first.
    drivers = [driver, *[await storage.open_driver() for _ in range(RACERS - 1)]]
    for round_ in range(ROUNDS):
        queue = f"q{round_}"
        failed = [await push_and_fail(driver, queue, unique="k") for _ in range(RACERS)]

        moved = await asyncio.gather(
            *(one.retry_failed(queue, [job.id]) for one, job in zip(drivers, failed, strict=True))
        )

        assert sum(moved) == 1
        states = [await state_of(driver, job.id) for job in failed]
        assert sorted(states) == ["failed"] * (RACERS - 1) + ["pending"]


@needs("unique")
async def test_retry_failed_racing_pushes_of_its_key_leaves_one_unfinished_holder(
    storage: Storage, driver: Driver
) -> None:
    drivers = [driver, *[await storage.open_driver() for _ in range(RACERS - 1)]]
    for round_ in range(ROUNDS):
        queue = f"q{round_}"
        failed = await push_and_fail(driver, queue, unique="k")
        pushes = [make_job(queue, unique="k") for _ in range(RACERS - 1)]

        moved, *ids = await asyncio.gather(
            drivers[0].retry_failed(queue, [failed.id]),
            *(one.push(job) for one, job in zip(drivers[1:], pushes, strict=True)),
        )

        holders = [job.id for job in await driver.list_jobs(queue, JobState.PENDING)]
        assert len(holders) == 1 and set(ids) == set(holders)
        assert moved == (1 if holders == [failed.id] else 0)


@needs("unique")
async def test_retry_failed_passes_over_holders_of_its_key_in_other_queues_or_names(
    driver: Driver,
) -> None:
    failed = await push_and_fail(driver, unique="k")
    await driver.push(make_job("q2", unique="k"))
    await driver.push(make_job(name="other", unique="k"))

    assert await driver.retry_failed("q", [failed.id]) == 1
    assert await state_of(driver, failed.id) == "pending"
    assert await driver.push(make_job(unique="k")) == failed.id


@needs("unique")
async def test_purged_delayed_job_frees_its_unique_key(driver: Driver) -> None:
    await driver.push(make_job(unique="k", delay=60))
    assert await driver.purge("q", JobState.DELAYED) == 1
    fresh = make_job(unique="k")

    assert await driver.push(fresh) == fresh.id
