"""Job control (the `control` capability): cancelling jobs, pausing queues, keeping results."""

from __future__ import annotations

import pytest

from conveyor.drivers.base import Driver, Failure, Reservation
from conveyor.job import ErrorInfo, JobState

from .helpers import LONG_LEASE, make_job, push_and_reserve, reservation, state_of


@pytest.fixture(autouse=True)
def control_or_skip(driver: Driver) -> None:
    if not driver.capabilities.control:
        pytest.skip(f"{driver.kind} declares no control capability")


async def test_cancel_of_pending_and_delayed_jobs_finishes_them(driver: Driver) -> None:
    pending, delayed = make_job(unique="k"), make_job(delay=60)
    await driver.push_many([pending, delayed])

    assert await driver.cancel([pending.id, delayed.id, "nobody"]) == {pending.id, delayed.id}

    assert [await state_of(driver, job.id) for job in (pending, delayed)] == ["cancelled"] * 2
    assert await driver.reserve(["q"], 10, LONG_LEASE, "w") == []
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.cancelled, counts.pending, counts.delayed) == (2, 0, 0)
    assert await driver.push(make_job(unique="k")) != pending.id  # the key is free again


async def test_cancel_of_a_reserved_job_asks_its_worker_to_stop_it(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    other = await push_and_reserve(driver)

    assert await driver.cancel([reserved.id]) == {reserved.id}

    assert await state_of(driver, reserved.id) == "reserved"
    held = [reservation(reserved), reservation(other)]
    assert await driver.cancelling(held) == {reserved.id}
    got = await driver.get(reserved.id)
    assert got is not None and got.cancel_requested
    cancelled = Failure(reserved.id, reserved.reservation or "", ErrorInfo("C", "c"), True)
    assert await driver.fail([cancelled]) == {reserved.id}
    assert await state_of(driver, reserved.id) == "cancelled"


async def test_cancel_of_a_finished_job_finds_nothing(driver: Driver) -> None:
    done = await push_and_reserve(driver)
    await driver.ack([reservation(done)])

    assert await driver.cancel([done.id]) == set()
    assert await state_of(driver, done.id) == "succeeded"


async def test_cancelling_is_fenced(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.cancel([reserved.id])

    assert await driver.cancelling([Reservation(reserved.id, "stale")]) == set()


async def test_a_paused_queue_is_named_until_resumed(driver: Driver) -> None:
    await driver.pause("a")

    assert await driver.paused(["a", "b"]) == {"a"}
    await driver.pause("a", paused=False)
    assert await driver.paused(["a", "b"]) == set()


async def test_pushes_to_a_paused_queue_are_stored(driver: Driver) -> None:
    await driver.pause("q")

    await driver.push(make_job())

    assert (await driver.counts(["q"]))["q"].pending == 1


async def test_ack_keeps_the_result(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    result = '{"total": 42, "note": "é"}'
    done = Reservation(reserved.id, reserved.reservation or "", result)
    assert await driver.ack([done]) == {reserved.id}

    got = await driver.get(reserved.id)
    assert got is not None and (got.state, got.result) == (JobState.SUCCEEDED, result)


async def test_a_job_without_a_result_keeps_none(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)
    await driver.ack([reservation(reserved)])

    got = await driver.get(reserved.id)
    assert got is not None and got.result is None
