"""Unique keys: a duplicate push while the first job is unfinished returns the first's id."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor import Job, JobState
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


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
