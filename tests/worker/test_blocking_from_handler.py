"""A plain handler runs in a thread beside the worker's event loop: it pushes follow-up jobs
through the blocking facade, on the drivers the worker's loop opened."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from conveyor import Job, JobState
from conveyor.drivers.base import WorkerCounts
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


@needs("lookup")
async def test_plain_handler_pushes_a_follow_up_job_through_the_blocking_facade(
    app: App, start
) -> None:
    registry = app.registry()
    pushed: list[str] = []
    seen: list[int] = []

    @registry.job("first", retry=0)
    def first(job: Job[Item]) -> None:
        pushed.append(registry.blocking.push("q", "second", Item(job.payload.n + 1)))

    @registry.job("second", retry=0)
    def second(job: Job[Item]) -> None:
        seen.append(job.payload.n)

    job_id = await registry.push("q", "first", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.SUCCEEDED, info.error
    assert (await settle(registry, pushed[0])).state is JobState.SUCCEEDED
    assert seen == [2]
    assert (await registry.queue_info())["q"].succeeded == 2


@needs("lookup")
async def test_async_api_on_a_loop_of_its_own_in_a_plain_handler_is_refused_naming_the_facade(
    app: App, start
) -> None:
    # The worker's drivers belong to its loop: used from a second loop (asyncio.run in the
    # handler's thread), redis's pool kept connections of that loop, closed once it ended,
    # and the worker's next settle failed on them ("Event loop is closed").
    registry = app.registry(concurrency=2)

    @registry.job("own-loop", retry=0)
    def own_loop(job: Job[Item]) -> None:
        asyncio.run(registry.push("q", "second", Item(job.payload.n + 1)))

    @registry.job("second", retry=0)
    async def second(job: Job[Item]) -> None: ...

    refused = await registry.push("q", "own-loop", Item(1))
    running = start(registry)
    info = await settle(registry, refused)
    assert (info.state, info.error.type) == (JobState.FAILED, "conveyor.errors.RegistryError")
    assert "registry.blocking" in info.error.message
    after = [await registry.push("q", "second", Item(n)) for n in range(5)]
    assert [(await settle(registry, job_id)).state for job_id in after] == [JobState.SUCCEEDED] * 5
    await running.stop()
    assert running.worker.counts == WorkerCounts(processed=6, succeeded=5, failed=1)
    assert (await registry.queue_info())["q"].succeeded == 5
