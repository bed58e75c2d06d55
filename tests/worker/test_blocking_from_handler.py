"""A plain handler runs in a thread beside the worker's event loop: it pushes follow-up jobs
through the blocking facade, on the drivers the worker's loop opened."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor import Job, JobState
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
