"""Worker stats cost a round trip of their own: written at most once a second while the
worker runs (not after every job), soon after work when idle, and always at stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from conveyor import Job, JobState, Registry, Worker, WorkerCounts
from conveyor.drivers.memory import MemoryDriver
from conveyor.errors import DriverError
from conveyor.worker import STATS_EVERY


class CountingDriver(MemoryDriver):
    """Notes when each `record_stats` call came."""

    def __init__(self) -> None:
        super().__init__()
        self.stats_written: list[float] = []

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        self.stats_written.append(time.monotonic())
        await super().record_stats(worker, counts)


def registry_on(driver: MemoryDriver) -> Registry:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=1, poll_interval=0.01)

    @registry.job("quick")
    async def quick(job: Job[dict[str, Any]]) -> None:
        await asyncio.sleep(0.004)

    return registry


async def test_worker_at_concurrency_1_writes_stats_at_most_once_a_second() -> None:
    driver = CountingDriver()
    registry = registry_on(driver)
    jobs = 300  # over a second of jobs, one at a time
    await registry.push_many("q", "quick", [{} for _ in range(jobs)])
    started = time.monotonic()
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 30)
    elapsed = time.monotonic() - started
    assert elapsed > STATS_EVERY
    written = driver.stats_written
    gaps = [later - earlier for earlier, later in itertools.pairwise(written[:-1])]
    assert all(gap >= STATS_EVERY * 0.99 for gap in gaps), gaps  # the last one: at stop
    assert len(written) <= elapsed / STATS_EVERY + 2, (len(written), elapsed)
    assert (await registry.worker_info())["w"] == WorkerCounts(
        processed=jobs, succeeded=jobs, failed=0, retried=0
    )


async def test_stats_of_the_last_jobs_are_written_soon_while_the_worker_idles() -> None:
    driver = CountingDriver()
    registry = registry_on(driver)
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(3):  # the first write is at once; the next ones wait for their turn
            job_id = await registry.push("q", "quick", {})
            async with asyncio.timeout(5):
                while (await registry.job_info(job_id)).state is not JobState.SUCCEEDED:
                    await asyncio.sleep(0.01)
        async with asyncio.timeout(STATS_EVERY + 2):
            while (await registry.worker_info())["w"].processed < 3:
                await asyncio.sleep(0.02)
        assert not task.done()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)


class OnceDownDriver(CountingDriver):
    """Its first `record_stats` fails, as when the backend is briefly out of reach."""

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        if not self.stats_written:
            self.stats_written.append(time.monotonic())
            raise DriverError("the backend is out of reach")
        await super().record_stats(worker, counts)


async def test_counts_a_failed_write_missed_are_written_with_the_next_ones() -> None:
    driver = OnceDownDriver()
    registry = registry_on(driver)
    jobs = 5
    await registry.push_many("q", "quick", [{} for _ in range(jobs)])

    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 30)

    assert len(driver.stats_written) >= 2  # the failed write, then at least the one at stop
    assert (await registry.worker_info())["w"] == WorkerCounts(
        processed=jobs, succeeded=jobs, failed=0, retried=0
    )
