"""Damaged records: a stored job whose fields cannot be decoded (written by hand, by another
program, by a bug, by a disk) never makes a driver method raise and never holds back the
rest of a batch. Each backend lists the damage it can hold (`Storage.damages`)."""

from __future__ import annotations

import pytest

from conveyor.drivers.base import Driver
from conveyor.job import JobState

from .helpers import LONG_LEASE, Storage, failure_of, make_job, state_of


def damaged_or_skip(storage: Storage) -> None:
    if not storage.damages:
        pytest.skip("this backend keeps Python objects: nothing can be written behind it")


async def push_one_per_damage(
    storage: Storage, driver: Driver, priority: int = 0
) -> dict[str, int]:
    """Push two good jobs, then one job per kind of damage (of `priority`), and damage each;
    returns the index in `storage.damages` of every damaged job's id."""
    await driver.push_many([make_job(), make_job()])
    damaged = {}
    for index, damage in enumerate(storage.damages):
        job = make_job(
            meta={"m": 1}, unique=f"k{index}", timeout=5.0, retry_delay='{"fixed": 1}',
            priority=priority,
        )  # fmt: skip
        await driver.push(job)
        await storage.damage(job.id, damage.field, damage.raw)
        damaged[job.id] = index
    return damaged


async def test_reserve_returns_damaged_jobs_beside_the_good_ones(
    storage: Storage, driver: Driver
) -> None:
    damaged_or_skip(storage)
    damaged = await push_one_per_damage(storage, driver)

    reserved = await driver.reserve(["q"], 100, LONG_LEASE, "w1")

    assert len(reserved) == len(damaged) + 2
    assert len({job.id for job in reserved}) == len(reserved)
    for job in reserved:
        assert job.state is JobState.RESERVED and job.reservation
        damage = storage.damages[damaged[job.id]] if job.id in damaged else None
        if damage is None or damage.outcome == "tolerate":
            assert job.unreadable == {}, (damage, job.unreadable)
        elif damage.error.endswith("CorruptJobError"):
            assert list(job.unreadable) == [
                "unique" if damage.field == "unique_key" else damage.field
            ], (damage, job.unreadable)


async def test_damaged_jobs_can_be_failed_by_their_token(storage: Storage, driver: Driver) -> None:
    damaged_or_skip(storage)
    damaged = await push_one_per_damage(storage, driver)
    reserved = [job for job in await driver.reserve(["q"], 100, LONG_LEASE, "w1")]

    failed = await driver.fail([failure_of(job) for job in reserved if job.id in damaged])

    assert failed == set(damaged)
    assert [await state_of(driver, job_id) for job_id in damaged] == ["failed"] * len(damaged)
    assert (await driver.counts(["q"]))["q"].failed == len(damaged)


async def test_get_and_list_jobs_show_damaged_jobs(storage: Storage, driver: Driver) -> None:
    damaged_or_skip(storage)
    damaged = await push_one_per_damage(storage, driver)

    for job_id, index in damaged.items():
        got = await driver.get(job_id)
        assert got is not None and got.id == job_id
        damage = storage.damages[index]
        if damage.outcome == "fail" and damage.error.endswith("CorruptJobError"):
            assert got.unreadable, damage
    listed = await driver.list_jobs("q", JobState.PENDING, limit=1000)
    assert set(damaged) <= {job.id for job in listed}
    counts = (await driver.counts(["q"]))["q"]
    assert counts.pending == len(damaged) + 2


async def test_damaged_pending_jobs_once_cancelled_are_never_reserved(
    storage: Storage, driver: Driver
) -> None:
    """Redis found a cancelled job's entry among the due ones by its time field: with that
    field damaged the entry stayed, counted as pending, and the next reserve handed the
    cancelled job out."""
    damaged_or_skip(storage)
    if not driver.capabilities.control:
        pytest.skip(f"{driver.kind} declares no control capability")
    damaged = await push_one_per_damage(storage, driver)
    # A job whose state itself is damaged is no pending job cancel can tell.
    wanted = {job_id for job_id, at in damaged.items() if storage.damages[at].field != "state"}

    assert await driver.cancel(list(wanted)) == wanted

    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.cancelled) == (len(damaged) - len(wanted) + 2, len(wanted))
    reserved = await driver.reserve(["q"], 100, LONG_LEASE, "w1")
    assert not wanted & {job.id for job in reserved}
    assert [await state_of(driver, job_id) for job_id in wanted] == ["cancelled"] * len(wanted)


@pytest.mark.parametrize("verb", ["cancel", "purge"])
async def test_damaged_pending_jobs_of_a_priority_once_gone_are_no_longer_counted(
    storage: Storage, driver: Driver, verb: str
) -> None:
    """Redis found a pending job's entry among the due ones by its rank field, and with that
    field damaged, looked among priority 0's: the entry of a job of another priority stayed,
    and the job, cancelled or purged, was still counted as pending until a reserve."""
    damaged_or_skip(storage)
    if verb == "cancel" and not driver.capabilities.control:
        pytest.skip(f"{driver.kind} declares no control capability")
    damaged = await push_one_per_damage(storage, driver, priority=3)
    # A job whose state itself is damaged is no pending job cancel or purge can tell.
    wanted = {job_id for job_id, at in damaged.items() if storage.damages[at].field != "state"}

    if verb == "cancel":
        assert await driver.cancel(list(wanted)) == wanted
    else:
        assert await driver.purge("q", JobState.PENDING, list(wanted)) == len(wanted)

    counts = (await driver.counts(["q"]))["q"]
    assert counts.pending == len(damaged) - len(wanted) + 2
    assert counts.cancelled == (len(wanted) if verb == "cancel" else 0)
