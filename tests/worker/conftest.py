"""Fixtures of the worker tests: every test runs once per driver kind in `tests.backends.KINDS`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import JobState, Registry, Worker
from conveyor.drivers.base import Driver, Reservation
from tests.backends import KINDS, Storage, skip_without, storage_of

Connect = Callable[[], Driver]


@pytest.fixture(params=KINDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """This test's fresh storage of one driver kind."""
    async with storage_of(request.param, tmp_path) as fresh:
        skip_without(request.node, fresh.connect())
        yield fresh


@pytest.fixture
def connect(storage: Storage) -> Connect:
    """Builds a driver on this test's fresh storage; a second call is a second connection."""
    return storage.connect


class App:
    """Registries made for one test, closed at its end."""

    def __init__(self, connect: Connect) -> None:
        self.connect = connect
        self.registries: list[Registry] = []

    def registry(
        self,
        *,
        concurrency: int = 1,
        lease: float = 30.0,
        stop_timeout: float = 5.0,
        poll_interval: float = 0.05,
        prefetch: int | None = None,
        **queue_options: Any,
    ) -> Registry:
        """A registry with queue "q" served by worker "w" on this test's storage."""
        registry = Registry()
        registry.queue("q", driver=self.connect(), workers=["w"], **queue_options)
        registry.worker(
            "w",
            concurrency=concurrency,
            lease=lease,
            stop_timeout=stop_timeout,
            poll_interval=poll_interval,
            prefetch=prefetch,
        )
        self.registries.append(registry)
        return registry


@pytest.fixture
async def app(connect: Connect) -> AsyncIterator[App]:
    made = App(connect)
    yield made
    for registry in made.registries:
        await registry.close()


class Running:
    """A worker running in a task; `stop()` waits for it to return."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run())

    async def stop(self, *, now: bool = False) -> None:
        self.worker.stop(now=now)
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def start() -> AsyncIterator[Callable[[Registry], Running]]:
    """Start worker "w" of a registry in the background; stopped at the end of the test."""
    running: list[Running] = []

    def start_worker(registry: Registry, **options: Any) -> Running:
        run = Running(Worker(registry, "w", **options))
        running.append(run)
        return run

    yield start_worker
    for run in running:
        if not run.task.done():
            await run.stop(now=True)


async def failed_without_lookup(registry: Registry, job_id: str) -> Any:
    """The failed job with this id, from a driver that cannot look a job up by id but lists
    its failed jobs (amqp), or None: what lets a test that ends in a failure run there."""
    for queue in await registry.queue_info():
        driver = await registry.driver_of(queue)
        if driver.capabilities.lookup:
            continue
        for job in await registry.list_jobs(queue, JobState.FAILED, limit=1000):
            if job.id == job_id:
                return job
    return None


async def die_twice(app: App, job_id: str) -> None:
    """Let the only job of queue "q" die with its worker twice, as another process's worker
    would: the second time while it ran alone, as a worker runs a rescued job."""
    crashed = app.connect()
    await crashed.open()
    await crashed.reserve(["q"], 1, 0.1, "crashed")
    await asyncio.sleep(0.2)
    [rescued] = await crashed.reserve(["q"], 1, 0.1, "crashed")
    assert await crashed.renew([Reservation(job_id, rescued.reservation)], 0.1, alone=True)
    await asyncio.sleep(0.2)
    await crashed.close()


async def settle(registry: Registry, job_id: str, timeout: float = 10.0) -> Any:
    """Wait until the job is finished (succeeded, failed or cancelled); return its JobInfo."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await registry.job_info(job_id) or await failed_without_lookup(registry, job_id)
        if info is not None and info.state.value in ("succeeded", "failed", "cancelled"):
            return info
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} did not finish in {timeout}s: {info}")
        await asyncio.sleep(0.01)
