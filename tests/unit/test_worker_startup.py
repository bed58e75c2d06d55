"""A worker started before its backend: it tries to open its drivers again with back-off, a
log line per attempt, until they open, until startup_timeout, or until stopped."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.memory import MemoryDriver
from conveyor.errors import BackendUnavailableError, ConfigError


class LateDriver(MemoryDriver):
    """A backend that cannot be reached for the next `refusals` attempts to open it."""

    def __init__(self, refusals: int = 0) -> None:
        super().__init__()
        self.refusals = refusals
        self.opens = 0

    async def open(self) -> None:
        self.opens += 1
        if self.refusals:
            self.refusals -= 1
            raise BackendUnavailableError("cannot connect to the server (connection refused)")
        await super().open()


def registry_on(driver: MemoryDriver) -> Registry:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", poll_interval=0.01)

    @registry.job("noop")
    async def noop(job: Job[dict[str, Any]]) -> None: ...

    return registry


async def test_worker_retries_opening_its_driver_until_the_backend_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = LateDriver()
    registry = registry_on(driver)
    job_id = await registry.push("q", "noop", {})
    await registry.close()  # the worker opens it again, and the backend is not up yet
    driver.refusals, driver.opens = 3, 0
    caplog.set_level(logging.WARNING, "conveyor.worker")
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 10)
    assert driver.opens == 4
    attempts = [r.getMessage() for r in caplog.records if "start-up attempt" in r.getMessage()]
    assert len(attempts) == 3, attempts
    assert "queue 'q'" in attempts[0] and "connection refused" in attempts[0]
    assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED


async def test_worker_gives_up_after_its_startup_timeout() -> None:
    registry = registry_on(LateDriver(refusals=10**9))
    worker = Worker(registry, "w", startup_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"gave up after 0.3s of start-up"):
        await asyncio.wait_for(worker.run(), 5)
    assert 0.3 <= time.monotonic() - started < 2.0


async def test_a_stop_ends_the_start_up_retries_at_once() -> None:
    driver = LateDriver(refusals=10**9)
    registry = registry_on(driver)
    registry.freeze()
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    while driver.opens < 3:  # back-offs of 0.01, 0.02, ... s: it is retrying
        await asyncio.sleep(0.01)
    stopped = time.monotonic()
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - stopped < 0.5
    assert worker.counts.processed == 0


@pytest.mark.parametrize("seconds", [-1, float("nan"), "10", True])
def test_startup_timeout_must_be_seconds(seconds: Any) -> None:
    with pytest.raises(ConfigError, match="startup_timeout"):
        Worker(registry_on(MemoryDriver()), "w", startup_timeout=seconds)


async def test_the_start_line_names_the_first_queues_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    queues = [f"tenant{n:03}" for n in range(300)]
    for queue in queues:
        registry.queue(queue, driver="memory", workers=["w"])
    registry.worker("w", poll_interval=0.01)

    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 10)

    [line] = [r.getMessage() for r in caplog.records if "started on queues" in r.getMessage()]
    assert "'tenant000', 'tenant001'" in line
    assert "and 290 more] in memory" in line
    assert "tenant299" not in line
