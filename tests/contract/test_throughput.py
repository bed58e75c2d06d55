"""throughput: the jobs of a queue that finished in each of the last minutes."""

from __future__ import annotations

import time

from conveyor.drivers.base import Driver
from tests.backends import needs

from .helpers import failure_of, make_job, push_and_reserve, reservation


@needs("lookup")
async def test_finished_jobs_count_in_the_current_minute(driver: Driver) -> None:
    for _ in range(3):
        done = await push_and_reserve(driver, make_job())
        assert await driver.ack([reservation(done)]) == {done.id}
    failed = await push_and_reserve(driver, make_job())
    assert await driver.fail([failure_of(failed)]) == {failed.id}
    other = await push_and_reserve(driver, make_job("other"))
    assert await driver.ack([reservation(other)]) == {other.id}
    await driver.push(make_job())  # unfinished: not counted

    shown = await driver.throughput("q", minutes=5)

    assert len(shown.succeeded) == len(shown.failed) == 5
    assert shown.start % 60 == 0 and shown.start <= time.time() + 5
    # The jobs finished in the last minute or two (the minute may turn during the test).
    assert sum(shown.succeeded[-2:]) == 3 and sum(shown.failed[-2:]) == 1
    assert sum(shown.succeeded) == 3 and sum(shown.failed) == 1


@needs("lookup")
async def test_a_queue_with_nothing_finished_counts_zeros(driver: Driver) -> None:
    shown = await driver.throughput("empty", minutes=60)

    assert shown.succeeded == shown.failed == (0,) * 60
