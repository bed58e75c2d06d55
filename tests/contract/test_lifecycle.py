"""open and close: open is idempotent, and closing a driver leaves its jobs untouched."""

from __future__ import annotations

from conveyor.drivers.base import Driver
from conveyor.job import JobState
from tests.backends import needs

from .helpers import make_job, push_and_reserve, reservation


@needs("lookup")
async def test_open_twice_is_harmless(driver: Driver) -> None:
    job = make_job()
    await driver.push(job)

    await driver.open()

    got = await driver.get(job.id)
    assert got is not None
    assert got.state is JobState.PENDING


@needs("lookup")
async def test_closed_driver_opened_again_still_has_its_jobs(driver: Driver) -> None:
    job = make_job(payload='{"kept": true}')
    await driver.push(job)

    await driver.close()
    await driver.open()

    got = await driver.get(job.id)
    assert got is not None
    assert got.payload == '{"kept": true}'


@needs("timed_leases")
async def test_reservation_outlives_close_and_open(driver: Driver) -> None:
    reserved = await push_and_reserve(driver)

    await driver.close()
    await driver.open()

    assert await driver.ack([reservation(reserved)]) == {reserved.id}


async def test_driver_names_its_kind(driver: Driver) -> None:
    assert driver.kind != Driver.kind
    assert driver.kind in driver.unsupported("reserve").args[0]
