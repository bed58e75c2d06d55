"""The sync driver keeps its finished jobs for the queue's retention, as a worker would:
no worker runs its queues, so its pushes prune them."""

from __future__ import annotations

import asyncio

from conveyor import Job, JobState, Registry

RETENTION = 0.05


def sync_registry(retention: float | None) -> Registry:
    registry = Registry(default_driver="sync://")
    registry.queue("q", workers=["main"], retention=retention)
    registry.worker("main")
    registry.configure(environ={})
    return registry


async def test_a_push_prunes_the_jobs_finished_longer_ago_than_the_retention() -> None:
    """Before, a sync driver's finished jobs were kept for ever whatever the retention: a
    process pushing for days grew without end, as no worker pruned them."""
    registry = sync_registry(RETENTION)

    @registry.job("ping", queue="q")
    async def ping(job: Job[dict[str, int]]) -> None:
        pass

    old = await ping.push({"n": 1})
    await asyncio.sleep(RETENTION * 2)  # `old` finished longer ago than the retention
    new = await ping.push({"n": 2})

    assert await registry.job_info(old) is None
    info = await registry.job_info(new)
    assert info is not None and info.state is JobState.SUCCEEDED
    await registry.close()


async def test_a_queue_without_retention_keeps_its_finished_jobs() -> None:
    registry = sync_registry(None)

    @registry.job("ping", queue="q")
    async def ping(job: Job[dict[str, int]]) -> None:
        pass

    old = await ping.push({"n": 1})
    await asyncio.sleep(RETENTION * 2)
    await ping.push({"n": 2})

    info = await registry.job_info(old)
    assert info is not None and info.state is JobState.SUCCEEDED
    assert (await registry.queue_info())["q"].succeeded == 2
    await registry.close()
