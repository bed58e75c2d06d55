"""A worker's ack held up by another transaction's lock on its job's row: the shared run of the
SQL drivers' tests that the ack waits the lock out (an outage, retried) rather than being taken
for a refusal and written off, which ran the job again after its lease."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from conveyor import Job, JobState, Registry, Worker
from tests.backends import eventually

#: Takes the lock on the row of `job_id` (of `registry`'s queue "q") on entry, ends the
#: transaction holding it on exit.
Hold = Callable[[Registry, str], AbstractAsyncContextManager[None]]


async def runs_of_a_job_acked_behind(url: str, hold: Hold, *, unique: str | None = None) -> int:
    """How many times one job of a worker on `url` (its timeout 1.5 s) ran, whose ack met the
    lock `hold` kept for 5 s, once the job is seen succeeded (within 15 s)."""
    registry = Registry()
    registry.queue("q", driver=f"{url}&timeout=1.5", workers=["w"])
    registry.worker("w", poll_interval=0.05)
    started, finish = asyncio.Event(), asyncio.Event()
    runs = 0

    @registry.job("held")
    async def held(job: Job[dict[str, int]]) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await finish.wait()

    job_id = await registry.push("q", "held", {"n": 1}, unique=unique)
    worker = Worker(registry, "w")
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with hold(registry, job_id):
            finish.set()
            await asyncio.sleep(5)  # the ack meets the lock wait (1.2 s) a few times meanwhile

        async def succeeded() -> bool:
            info = await registry.job_info(job_id)
            return info is not None and info.state is JobState.SUCCEEDED

        await eventually(succeeded, timeout=15)
    finally:
        worker.stop()
        await running
        await registry.close()
    return runs
