"""The counts a user reads after a worker's run (the queue's, the worker's totals, the jobs
finished per minute) add up to what happened: successes, retries, failures raised, a timeout,
a job whose worker crashed, and a poison job failed after deaths of the workers running it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from conveyor import Fail, Job, Retry
from conveyor.drivers.base import QueueCounts, WorkerCounts
from tests.backends import needs

from .conftest import App, die_twice


@dataclass
class Item:
    kind: str


@needs("lookup")
@needs("exact_counts")
@needs("timed_leases")
async def test_counts_and_worker_totals_add_up_to_what_happened(app: App, start) -> None:
    registry = app.registry(concurrency=4, retry=1, retry_delay=0)
    tries: dict[str, int] = {}

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        kind = job.payload.kind
        tries[job.id] = tries.get(job.id, 0) + 1
        if kind == "bad" or (kind == "flaky" and tries[job.id] == 1):
            raise ValueError(kind)
        if kind == "fail":
            raise Fail("no use trying again")
        if kind == "again" and tries[job.id] == 1:
            raise Retry(delay=0)
        if kind == "slow":
            await asyncio.sleep(5)

    # A poison job: its worker died twice, the second time running it alone (no retry left).
    poison = await registry.push("q", "item", Item("ok"), retry=0)
    await die_twice(app, poison)
    # A job whose worker crashed: its lease runs out, and the worker takes it over.
    crashed = app.connect()
    await crashed.open()
    await registry.push("q", "item", Item("ok"))
    assert len(await crashed.reserve(["q"], 1, 0.1, "crashed")) == 1
    await crashed.close()
    for kind in ("ok", "ok", "flaky", "bad", "fail", "again"):
        await registry.push("q", "item", Item(kind))
    await registry.push("q", "item", Item("slow"), timeout=0.05, retry=0)

    run = start(registry, burst=True)
    await asyncio.wait_for(run.task, 10)

    # succeeded: ok x3 (the crashed one too), flaky, again; retried: flaky, bad, again;
    # failed: bad, fail, slow (timed out), poison.
    assert (await registry.queue_info())["q"] == QueueCounts(succeeded=5, failed=4)
    totals = WorkerCounts(processed=12, succeeded=5, failed=4, retried=3)
    assert run.worker.counts == totals
    assert (await registry.worker_info())["w"] == totals
    throughput = await registry.throughput("q", 5)
    assert throughput is not None
    assert (sum(throughput.succeeded), sum(throughput.failed)) == (5, 4)
    assert poison not in tries  # failed without running again
