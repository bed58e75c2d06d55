"""Durable drivers: jobs, their states and reservations survive a restart."""

from __future__ import annotations

import pytest

from conveyor.drivers.base import Driver
from conveyor.job import JobInfo, JobState
from tests.backends import needs

from .helpers import Storage, failure_of, make_job, push_and_reserve, reservation


@pytest.fixture
def durable(driver: Driver) -> Driver:
    """`driver`, or skip for a driver whose jobs live only as long as the process."""
    if not driver.capabilities.durable:
        pytest.skip(f"{driver.kind} is not durable")
    return driver


async def restart(storage: Storage, driver: Driver) -> Driver:
    """Close `driver` as a stopping process would, and open a new instance on its storage."""
    await storage.close_driver(driver)
    return await storage.open_driver()


async def get(driver: Driver, job_id: str) -> JobInfo:
    job = await driver.get(job_id)
    assert job is not None, f"job {job_id} did not survive the restart"
    return job


@needs("unique")
async def test_pending_job_survives_restart(storage: Storage, durable: Driver) -> None:
    job = make_job(payload='{"a": 1}', unique="k", meta={"m": 1})
    await durable.push(job)

    after = await restart(storage, durable)

    got = await get(after, job.id)
    assert (got.state, got.payload) == (JobState.PENDING, '{"a": 1}')
    assert (got.unique, got.meta) == ("k", {"m": 1})
    assert await after.push(make_job(unique="k")) == job.id


@needs("lookup")
async def test_reserved_job_and_its_token_survive_restart(
    storage: Storage, durable: Driver
) -> None:
    reserved = await push_and_reserve(durable)

    after = await restart(storage, durable)

    got = await get(after, reserved.id)
    assert (got.state, got.reservation, got.attempt) == (JobState.RESERVED, reserved.reservation, 1)
    assert await after.ack([reservation(reserved)]) == {reserved.id}


@needs("lookup")
async def test_failed_job_and_its_error_survive_restart(storage: Storage, durable: Driver) -> None:
    reserved = await push_and_reserve(durable)
    failure = failure_of(reserved)
    await durable.fail([failure])

    after = await restart(storage, durable)

    got = await get(after, reserved.id)
    assert (got.state, got.error) == (JobState.FAILED, failure.error)
    assert got.finished_at is not None
