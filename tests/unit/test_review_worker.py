"""Worker regressions found in review, on the memory driver with faults injected."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.base import Release, Reservation, WorkerCounts
from conveyor.drivers.memory import MemoryDriver
from conveyor.errors import BackendUnavailableError
from conveyor.job import JobInfo
from tests.backends import eventually


class FlakyReleaseDriver(MemoryDriver):
    """`release` fails the first time it is called; `ack` counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.release_failures = 1
        self.acked: list[str] = []

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        self.acked += [r.id for r in reservations]
        return await super().ack(reservations)

    async def release(self, releases: Sequence[Release]) -> set[str]:
        if self.release_failures:
            self.release_failures -= 1
            raise BackendUnavailableError("server went away")
        return await super().release(releases)


async def test_a_failed_release_does_not_write_the_acks_of_its_batch_again() -> None:
    driver = FlakyReleaseDriver()
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"], retry=1, retry_delay=0)
    registry.worker("w", concurrency=2, poll_interval=0.01)
    go = asyncio.Event()

    @registry.job("ok")
    async def ok(job: Job[dict[str, Any]]) -> None:
        await go.wait()

    @registry.job("flaky")
    async def flaky(job: Job[dict[str, Any]]) -> None:
        await go.wait()
        if job.attempt == 1:
            raise ValueError("first time")

    ok_id = await registry.push("q", "ok", {})
    flaky_id = await registry.push("q", "flaky", {})
    worker = Worker(registry, "w", burst=True)
    task = asyncio.create_task(worker.run())
    while worker.running < 2:
        await asyncio.sleep(0.01)
    go.set()  # both finish together: their outcomes settle in one batch
    await asyncio.wait_for(task, 10)
    assert (await registry.job_info(ok_id)).state is JobState.SUCCEEDED
    assert (await registry.job_info(flaky_id)).state is JobState.SUCCEEDED
    assert driver.acked.count(ok_id) == 1
    assert (worker.counts.succeeded, worker.counts.retried) == (2, 1)
    assert (await registry.worker_info())["w"].succeeded == 2


class BrokenReserveDriver(MemoryDriver):
    """`reserve` works once, then fails with an error no driver should let out."""

    def __init__(self) -> None:
        super().__init__()
        self.reserves = 0

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        self.reserves += 1
        if self.reserves > 1:
            raise RuntimeError("a bug in the driver")
        return await super().reserve(queues, limit, lease, worker)


def slow_registry(driver: MemoryDriver, started: asyncio.Event) -> Registry:
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=2, poll_interval=0.01, stop_timeout=30)

    @registry.job("slow")
    async def slow(job: Job[dict[str, Any]]) -> None:
        started.set()
        await asyncio.sleep(60)

    return registry


async def test_an_unexpected_reserve_error_is_logged_and_the_worker_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A crash here would crash-loop every worker on the same bad record; the worker logs it,
    # backs off and tries again, its running job untouched, and a stop gives that job back.
    driver = BrokenReserveDriver()
    started = asyncio.Event()
    registry = slow_registry(driver, started)
    job_id = await registry.push("q", "slow", {})
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)

    async def tried_again() -> bool:  # failing, backing off, trying again
        return driver.reserves >= 3

    await eventually(tried_again)

    assert not task.done() and worker.running == 1
    assert "reserve failed unexpectedly" in caplog.text and "a bug in the driver" in caplog.text
    worker.stop(now=True)
    await asyncio.wait_for(task, 5)
    info = await registry.job_info(job_id)
    assert (info.state, info.attempt) == (JobState.PENDING, 0)


async def test_cancelling_a_running_worker_gives_running_jobs_back_at_once() -> None:
    started = asyncio.Event()
    registry = slow_registry(MemoryDriver(), started)
    job_id = await registry.push("q", "slow", {})
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert worker.running == 0
    info = await registry.job_info(job_id)
    assert (info.state, info.attempt) == (JobState.PENDING, 0)


class SlowReserveDriver(MemoryDriver):
    """`reserve` waits for the test to let it return."""

    def __init__(self) -> None:
        super().__init__()
        self.reserving = asyncio.Event()
        self.answer = asyncio.Event()

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        self.reserving.set()
        await self.answer.wait()
        return await super().reserve(queues, limit, lease, worker)


async def test_stop_now_during_a_reserve_gives_the_reserved_jobs_back() -> None:
    driver = SlowReserveDriver()
    registry = slow_registry(driver, asyncio.Event())
    ids = [await registry.push("q", "slow", {}) for _ in range(2)]
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(driver.reserving.wait(), 5)
    worker.stop(now=True)  # a second SIGTERM while the reserve is on its way
    driver.answer.set()
    await asyncio.wait_for(task, 5)
    for job_id in ids:
        info = await registry.job_info(job_id)
        assert (info.state, info.attempt) == (JobState.PENDING, 0)


class BrokenStatsDriver(MemoryDriver):
    """`record_stats` fails with an error no driver should let out."""

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        raise TypeError("a bug in the driver")


async def test_a_failure_to_record_stats_never_stops_the_worker_settling_jobs() -> None:
    registry = Registry()
    registry.queue("q", driver=BrokenStatsDriver(), workers=["w"])
    registry.worker("w", poll_interval=0.01)

    @registry.job("ok")
    async def ok(job: Job[dict[str, Any]]) -> None: ...

    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    for _ in range(2):  # the second is settled after a failed stats write
        job_id = await registry.push("q", "ok", {})
        async with asyncio.timeout(5):
            while (await registry.job_info(job_id)).state is not JobState.SUCCEEDED:
                await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(task, 5)


class LateReleaseAnswerDriver(MemoryDriver):
    """`release` writes at once but answers late, as when another connection of the worker
    reserves the released job before the release's own reply has come back."""

    async def release(self, releases: Sequence[Release]) -> set[str]:
        released = await super().release(releases)
        await asyncio.sleep(0.3)
        return released


async def test_hooks_see_retried_before_the_next_started_when_the_release_answers_late() -> None:
    registry = Registry()
    registry.queue("q", driver=LateReleaseAnswerDriver(), workers=["w"], retry=1, retry_delay=0)
    registry.worker("w", concurrency=2, poll_interval=0.01)
    kinds: list[str] = []
    registry.hook("started", "retried", "succeeded")(lambda event: kinds.append(event.kind))

    @registry.job("flaky")
    async def flaky(job: Job[dict[str, Any]]) -> None:
        if job.attempt == 1:
            raise ValueError("first time")

    await registry.push("q", "flaky", {})
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 10)
    assert kinds == ["started", "retried", "started", "succeeded"]
