"""Unique keys: a duplicate push while the first job is unfinished returns the first's id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from conveyor import Job, JobState, Registry
from tests.backends import needs

from .conftest import App, die_twice, settle


@dataclass
class Item:
    n: int


async def running_under_key(registry: Registry, start: Any) -> tuple[str, Any]:
    """Push a job of unique key "k" that runs for 30 s, start a worker, and return the job's
    id and the worker's run once the job has started."""
    started = asyncio.Event()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        started.set()
        await asyncio.sleep(30)

    first = await registry.push("q", "item", Item(1), unique="k")
    run = start(registry)
    await started.wait()
    return first, run


@needs("lookup")
async def test_duplicate_push_returns_existing_id_until_job_finishes(app: App, start) -> None:
    registry = app.registry()

    @registry.job("item")
    async def item(job: Job[Item]) -> None: ...

    first = await registry.push("q", "item", Item(1), unique="report:42")
    assert await registry.push("q", "item", Item(2), unique="report:42") == first
    assert (await registry.queue_info())["q"].pending == 1
    start(registry)
    assert (await settle(registry, first)).state is JobState.SUCCEEDED
    again = await registry.push("q", "item", Item(3), unique="report:42")
    assert again != first


@needs("unique")
@needs("lookup")
async def test_key_is_held_while_a_job_waits_to_retry_and_freed_when_it_fails_for_good(
    app: App, start
) -> None:
    registry = app.registry()
    tries: list[int] = []

    @registry.job("item", retry=1, retry_delay=0.5)
    async def item(job: Job[Item]) -> None:
        tries.append(job.attempt)
        raise ValueError("no")

    first = await registry.push("q", "item", Item(1), unique="k")
    start(registry)
    while (info := await registry.job_info(first)) is None or info.error is None:
        await asyncio.sleep(0.01)  # its first attempt failed: it waits for its retry
    assert info.state in (JobState.DELAYED, JobState.PENDING, JobState.RESERVED)
    assert await registry.push("q", "item", Item(2), unique="k") == first

    assert (await settle(registry, first)).state is JobState.FAILED
    assert tries == [1, 2]
    assert await registry.push("q", "item", Item(3), unique="k") != first


@needs("unique")
@needs("lookup")
async def test_key_of_a_running_job_is_held_and_freed_by_its_cancel(app: App, start) -> None:
    registry = app.registry(lease=1.0)
    first, _ = await running_under_key(registry, start)
    assert await registry.push("q", "item", Item(2), unique="k") == first
    assert await registry.cancel(first)

    assert (await settle(registry, first)).state is JobState.CANCELLED
    assert await registry.push("q", "item", Item(3), unique="k") != first


@needs("unique")
@needs("lookup")
async def test_a_job_released_at_stop_keeps_its_key(app: App, start) -> None:
    registry = app.registry(stop_timeout=0.2)
    first, run = await running_under_key(registry, start)
    await run.stop()

    info = await registry.job_info(first)
    assert info is not None and info.state is JobState.PENDING
    assert await registry.push("q", "item", Item(2), unique="k") == first


@needs("unique")
@needs("lookup")
async def test_a_job_whose_worker_died_holds_its_key_until_it_fails_for_good(
    app: App, start
) -> None:
    registry = app.registry()

    @registry.job("item", retry=0)
    async def item(job: Job[Item]) -> None: ...

    job_id = await registry.push("q", "item", Item(1), unique="k")
    await die_twice(app, job_id)
    assert await registry.push("q", "item", Item(2), unique="k") == job_id
    start(registry)

    assert (await settle(registry, job_id)).state is JobState.FAILED
    fresh = await registry.push("q", "item", Item(3), unique="k")
    assert fresh != job_id
    assert (await settle(registry, fresh)).state is JobState.SUCCEEDED
