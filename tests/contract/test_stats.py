"""record_stats and worker_stats: running totals per worker, added up atomically."""

from __future__ import annotations

import asyncio

from conveyor.drivers.base import Driver, WorkerCounts
from tests.backends import needs


async def test_worker_stats_is_empty_before_any_record(driver: Driver) -> None:
    assert await driver.worker_stats() == {}


async def test_record_stats_stores_every_field(driver: Driver) -> None:
    await driver.record_stats("mailer", WorkerCounts(processed=4, succeeded=2, failed=1, retried=3))

    assert await driver.worker_stats() == {"mailer": WorkerCounts(4, 2, 1, 3)}


async def test_record_stats_adds_up(driver: Driver) -> None:
    await driver.record_stats("mailer", WorkerCounts(processed=1, succeeded=1))
    await driver.record_stats("mailer", WorkerCounts(processed=2, failed=1, retried=1))

    assert await driver.worker_stats() == {"mailer": WorkerCounts(3, 1, 1, 1)}


async def test_worker_stats_lists_every_worker(driver: Driver) -> None:
    await driver.record_stats("mailer", WorkerCounts(processed=1))
    await driver.record_stats("billing", WorkerCounts(processed=2))
    await driver.record_stats("reports", WorkerCounts())

    stats = await driver.worker_stats()

    assert stats == {
        "mailer": WorkerCounts(processed=1),
        "billing": WorkerCounts(processed=2),
        "reports": WorkerCounts(),
    }


@needs("shared_records")
async def test_concurrent_record_stats_from_two_connections_lose_nothing(
    driver_pair: tuple[Driver, Driver],
) -> None:
    one = WorkerCounts(processed=1, succeeded=1)

    await asyncio.gather(*(driver_pair[i % 2].record_stats("mailer", one) for i in range(20)))

    assert (await driver_pair[1].worker_stats())["mailer"] == WorkerCounts(20, 20, 0, 0)
