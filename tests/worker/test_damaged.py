"""A worker meets damaged records: each is failed with the reason, the rest run, the worker
lives on, and inspection shows the damage (the raw record stays in storage)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from conveyor import Job, JobState, Worker
from tests.backends import Storage, needs

from .conftest import App


@dataclass
class Item:
    n: int


@needs("lookup")
async def test_damaged_jobs_fail_with_the_reason_and_the_rest_run(
    storage: Storage, app: App
) -> None:
    if not storage.damages:
        pytest.skip("this backend keeps Python objects: nothing can be written behind it")
    registry = app.registry(concurrency=4)
    ran: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    good = await registry.push_many("q", "item", [Item(n) for n in range(5)])
    damaged = {}
    for n, damage in enumerate(storage.damages, start=100):
        job_id = await registry.push("q", "item", Item(n), unique=f"k{n}", timeout=9.0)
        await storage.damage(job_id, damage.field, damage.raw)
        damaged[job_id] = damage

    await Worker(registry, "w", burst=True).run()

    assert sorted(n for n in ran if n < 100) == list(range(5))
    for job_id in good:
        assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED
    for job_id, damage in damaged.items():
        info = await registry.job_info(job_id)
        assert info is not None, damage
        if damage.outcome == "tolerate":
            assert info.state is JobState.SUCCEEDED, (damage, info)
            continue
        assert info.state is JobState.FAILED, (damage, info)
        assert info.error is not None and info.error.type == damage.error, (damage, info.error)
        if damage.error.endswith("CorruptJobError"):
            assert damage.field.removesuffix("_key") in info.error.message, info.error.message
            assert info.attempt <= 1
    counts = (await registry.queue_info())["q"]
    assert (counts.pending, counts.delayed, counts.reserved) == (0, 0, 0)
    failed = await registry.list_jobs("q", JobState.FAILED, limit=1000)
    assert {job.id for job in failed} == {
        job_id for job_id, damage in damaged.items() if damage.outcome == "fail"
    }
