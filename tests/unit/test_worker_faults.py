"""A backend that fails for a while: the worker backs off, carries on, and never hangs on stop.

The failing backend is the memory driver with some calls raising DriverError, the error every
real driver raises when its server is unreachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.base import Reservation
from conveyor.drivers.memory import MemoryDriver
from conveyor.errors import BackendUnavailableError
from conveyor.job import JobInfo


class FailingDriver(MemoryDriver):
    """Raises BackendUnavailableError from `ack` and `reserve` while told to."""

    def __init__(self) -> None:
        super().__init__()
        self.ack_failures = 0
        self.reserve_failures = 0
        self.renew_failures = 0
        self.ack_calls = 0

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        if self.renew_failures:
            self.renew_failures -= 1
            raise BackendUnavailableError("server went away")
        return await super().renew(reservations, lease, alone=alone)

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        self.ack_calls += 1
        if self.ack_failures:
            self.ack_failures -= 1
            raise BackendUnavailableError("server went away")
        return await super().ack(reservations)

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        if self.reserve_failures:
            self.reserve_failures -= 1
            raise BackendUnavailableError("server went away")
        return await super().reserve(queues, limit, lease, worker)


def registry_on(driver: FailingDriver, **worker: Any) -> Registry:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", **{"poll_interval": 0.01, **worker})

    @registry.job("noop")
    async def noop(job: Job[dict[str, Any]]) -> None: ...

    return registry


async def test_settle_is_retried_until_the_backend_answers() -> None:
    driver = FailingDriver()
    driver.ack_failures = 3
    registry = registry_on(driver)
    job_id = await registry.push("q", "noop", {})
    worker = Worker(registry, "w", burst=True)
    await asyncio.wait_for(worker.run(), 10)
    assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED
    assert driver.ack_calls == 4
    assert worker.counts.succeeded == 1


async def test_reserve_failures_are_backed_off_and_the_worker_carries_on() -> None:
    driver = FailingDriver()
    driver.reserve_failures = 3
    registry = registry_on(driver)
    job_id = await registry.push("q", "noop", {})
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 10)
    assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED


async def test_stop_gives_up_settling_on_a_dead_backend_after_stop_timeout() -> None:
    driver = FailingDriver()
    driver.ack_failures = 10**9
    # A poll interval of 1 s makes the settle back-offs grow to many seconds: stop must cut
    # them short and give up stop_timeout after the stop.
    registry = registry_on(driver, stop_timeout=0.3, poll_interval=1.0)
    job_id = await registry.push("q", "noop", {})
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    while driver.ack_calls < 2:  # after a back-off of 1 s: the next one is 2 s long
        await asyncio.sleep(0.05)
    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1.5
    # Never settled: it stays reserved and comes back after its lease, as after a crash.
    assert (await registry.job_info(job_id)).state is JobState.RESERVED


async def test_a_failed_renewal_is_tried_again_before_the_lease_runs_out() -> None:
    driver = FailingDriver()
    driver.renew_failures = 2
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", lease=1.0, poll_interval=0.01)
    started = asyncio.Event()
    attempts: list[int] = []

    @registry.job("long")
    async def long(job: Job[dict[str, Any]]) -> None:
        attempts.append(job.attempt)
        started.set()
        await asyncio.sleep(2.0)  # the renewals at 0.5 s and 0.6 s fail; 0.7 s succeeds

    job_id = await registry.push("q", "long", {})
    worker = Worker(registry, "w", burst=True)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    while not task.done():
        assert await driver.reserve(["q"], 1, 5.0, "rival") == []
        await asyncio.sleep(0.02)
    assert attempts == [1]
    assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED


class FailingWaitDriver(MemoryDriver):
    """A backend whose `wait` fails at once, as a server that went away would make it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        self.waits += 1
        raise BackendUnavailableError("server went away")


async def test_a_wait_that_fails_at_once_does_not_make_the_worker_spin() -> None:
    driver = FailingWaitDriver()
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", poll_interval=0.1)
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert 1 <= driver.waits <= 10  # about one per poll interval, not thousands


class GreedyDriver(MemoryDriver):
    """A backend whose reserve hands out twice what was asked, as a reserve retried after a
    lost commit could."""

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        return await super().reserve(queues, limit * 2, lease, worker)


async def test_worker_never_runs_more_jobs_than_its_concurrency_whatever_reserve_returns() -> None:
    driver = GreedyDriver()
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=2, poll_interval=0.01)
    running = most = 0

    @registry.job("busy")
    async def busy(job: Job[dict[str, Any]]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1

    ids = await registry.push_many("q", "busy", [{} for _ in range(10)])
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 10)
    assert most == 2
    infos = [await registry.job_info(job_id) for job_id in ids]
    assert {info.state for info in infos if info} == {JobState.SUCCEEDED}
    assert {info.attempt for info in infos if info} == {1}  # the ones given back lost nothing


async def test_a_job_whose_attempts_meet_an_internal_fault_is_failed_with_that_fault() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("q", workers=["w"], retry=1, retry_delay=0)
    registry.worker("w", poll_interval=0.01)

    @registry.job("noop")
    async def noop(job: Job[dict[str, Any]]) -> None: ...

    job_id = await registry.push("q", "noop", {})
    worker = Worker(registry, "w", burst=True)

    async def fault_of_conveyor(job: JobInfo, driver: Any) -> Any:
        raise RuntimeError("a fault of conveyor's own")

    worker.runner.attempt = fault_of_conveyor  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(), 10)
    info = await registry.job_info(job_id)
    assert info is not None and info.state is JobState.FAILED and info.attempt == 2
    assert info.error is not None and info.error.type == "RuntimeError"  # not LeaseExpiredError
    await registry.close()
