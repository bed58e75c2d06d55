"""The worker's counters count what the backend accepted: a retry whose release was refused
(its lease lost) is no retry, even beside a stop's give-back the backend took."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from conveyor import Retry
from conveyor.attempt import error_info, given_back, retry_or_fail
from conveyor.drivers.memory import MemoryDriver
from conveyor.drivers.values import WorkerCounts
from conveyor.job import NewJob
from conveyor.settle import Settler


async def _never(what: str, error: Exception, failures: int, woken: asyncio.Event) -> None:
    raise AssertionError(f"no write should fail here: {what}: {error}")


async def test_a_refused_retry_is_not_counted_as_retried() -> None:
    driver = MemoryDriver()
    await driver.open()
    await driver.push_many([NewJob(name, "q", "j", "{}", max_attempts=3) for name in "ab"])
    first, second = await driver.reserve(["q"], 2, 30.0, "w")
    lost = replace(first, reservation="another worker's")  # its lease was taken over
    settler = Settler("w", _never)
    await settler.settle(
        driver,
        [
            retry_or_fail(lost, driver, error_info(Retry(delay=5)), Retry(delay=5)),
            given_back(second, driver),  # a stop gave it back: accepted, not a retry
        ],
    )
    # Before, retried was min(releases with an error, releases accepted) = 1. The give-back
    # came to no outcome: not processed either (it is, where it runs again).
    assert settler.counts == WorkerCounts(processed=0, succeeded=0, failed=0, retried=0)
