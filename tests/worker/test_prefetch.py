"""Prefetch: while a backlog of short jobs lasts, a worker holds jobs reserved beyond its
concurrency, ready for the next free slot; never for long jobs, never past `prefetch`, and a
stop gives them back at once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor.errors import RegistryError
from conveyor.worker import PREFETCH_BELOW
from tests.backends import needs

from .conftest import App


@dataclass
class Item:
    n: int


@dataclass
class Seen:
    """The most jobs a worker had running and waiting at once, and each n it ran."""

    running: int = 0
    waiting: int = 0
    ran: list[int] = field(default_factory=list)


def watched(registry: Registry, worker: list[Worker], *, sleep: float = 0.0) -> Seen:
    """Register job "item", which records what `Seen` holds as it runs."""
    seen = Seen()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        seen.running = max(seen.running, worker[0].running)
        seen.waiting = max(seen.waiting, worker[0].waiting)
        seen.ran.append(job.payload.n)
        await asyncio.sleep(sleep)

    return seen


async def test_a_backlog_of_short_jobs_is_held_ahead_but_never_run_past_concurrency(
    app: App,
) -> None:
    registry = app.registry(concurrency=4, prefetch=6)
    holder: list[Worker] = []
    seen = watched(registry, holder)
    await registry.push_many("q", "item", [Item(n) for n in range(300)])
    holder.append(Worker(registry, "w", burst=True))
    stopped = await asyncio.wait_for(holder[0].run(), 60)
    assert stopped.clean
    assert sorted(seen.ran) == list(range(300))
    assert seen.running == 4
    if (await registry.driver_of("q")).capabilities.timed_leases:
        assert 0 < seen.waiting <= 6
    else:  # amqp prefetches at the broker: the worker holds nothing more
        assert seen.waiting == 0


@needs("ordered")
async def test_jobs_held_ahead_run_earliest_due_first(app: App) -> None:
    # One at a time, as a worker of concurrency 1 runs them: jobs due in the reverse of the
    # order they were pushed run in due order, the ones held ahead (prefetch) too.
    registry = app.registry(concurrency=1, prefetch=1)
    holder: list[Worker] = []
    seen = watched(registry, holder)
    # Due times 0.1 s apart from one moment on, however long each push takes (a loaded
    # machine's push may take longer than the gap): job n is due at start + (JOBS - n) * GAP.
    # The moment leaves 1.5 s for the pushes; where they took longer (under a load of 11 in a
    # CI run, 0.5 s for 40 did, and once 1.5 s for 12), a job pushed after it is due when it
    # arrives, so the round is run through and tried again with three times the time.
    # The gap outlasts how much one push's trip to the server may differ from the next's
    # (the backend dates a job as the push reaches it: at 20 ms, under a load of 11, two
    # pushes' trips differed by more, and two jobs ran out of their due order).
    jobs, gap = 12, 0.1
    for margin in (1.5, 4.5, 13.5):
        start = time.monotonic() + margin
        for n in range(jobs):
            delay = start + (jobs - n) * gap - time.monotonic()
            await registry.push("q", "item", Item(n), delay=delay)
        in_time = time.monotonic() < start
        await asyncio.sleep(max(0.0, start + (jobs + 1) * gap - time.monotonic()))  # all due
        holder[:] = [Worker(registry, "w", burst=True)]
        await asyncio.wait_for(holder[0].run(), 60)
        if in_time:
            break
        seen.ran.clear()
    assert in_time, "the pushes outran 13.5 s three times"
    assert seen.ran == list(reversed(range(jobs)))


@pytest.mark.parametrize(("prefetch", "sleep"), [(None, PREFETCH_BELOW * 1.5), (0, 0.0)])
async def test_long_jobs_or_prefetch_0_hold_nothing_ahead(
    app: App, prefetch: int | None, sleep: float
) -> None:
    registry = app.registry(concurrency=2, prefetch=prefetch)
    holder: list[Worker] = []
    seen = watched(registry, holder, sleep=sleep)
    jobs = 12 if sleep else 100
    await registry.push_many("q", "item", [Item(n) for n in range(jobs)])
    holder.append(Worker(registry, "w", burst=True))
    await asyncio.wait_for(holder[0].run(), 60)
    assert sorted(seen.ran) == list(range(jobs))
    assert (seen.running, seen.waiting) == (2, 0)


@needs("lookup")
async def test_a_stop_gives_jobs_held_ahead_back_at_once_with_their_attempt(app: App) -> None:
    registry = app.registry(concurrency=2, prefetch=4, stop_timeout=5)
    holder: list[Worker] = []
    release = asyncio.Event()
    ran: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)
        # Short, but not instant: while the slots are busy the worker holds jobs ahead. (An
        # instant job left nothing held when reserves were slow, on a busy server.)
        await asyncio.sleep(0.005)
        if len(ran) > 40 and holder[0].waiting and not release.is_set():
            # Jobs are held ahead now: the stop must give them back. (Once: a second stop
            # would cut the running jobs short.)
            holder[0].stop()
            release.set()
            await asyncio.sleep(0.05)

    ids = await registry.push_many("q", "item", [Item(n) for n in range(200)])
    holder.append(Worker(registry, "w"))
    task = asyncio.create_task(holder[0].run())
    stopped = await asyncio.wait_for(task, 10)
    assert stopped.clean  # the held jobs never ran: none was cut short
    infos = [await registry.job_info(job_id) for job_id in ids]
    succeeded = [info for info in infos if info.state is JobState.SUCCEEDED]
    pending = [info for info in infos if info.state is JobState.PENDING]
    assert len(succeeded) == len(ran) and len(succeeded) + len(pending) == 200
    assert all(info.attempt == 0 for info in pending)  # given back, not charged


def test_prefetch_must_be_a_whole_number_of_at_least_0() -> None:
    registry = Registry()
    with pytest.raises(RegistryError, match="prefetch must be a whole number >= 0"):
        registry.worker("w", prefetch=-1)
    with pytest.raises(RegistryError, match="prefetch must be a whole number >= 0"):
        registry.worker("v", prefetch=1.5)  # type: ignore[arg-type]


@needs("control")
@needs("lookup")
async def test_a_job_cancelled_while_held_ahead_never_runs(app: App) -> None:
    registry = app.registry(concurrency=1, prefetch=5)
    holder: list[Worker] = []
    blocking, release = asyncio.Event(), asyncio.Event()
    ran: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)
        if job.payload.n == 2:
            blocking.set()
            await release.wait()

    ids = await registry.push_many("q", "item", [Item(n) for n in range(8)])
    holder.append(Worker(registry, "w", burst=True))
    task = asyncio.create_task(holder[0].run())
    await asyncio.wait_for(blocking.wait(), 10)
    # Job 2 runs and holds the only slot; job 3 is reserved ahead, waiting for it.
    assert holder[0].waiting > 0
    assert (await registry.job_info(ids[3])).state is JobState.RESERVED
    assert await registry.cancel(ids[3])
    await holder[0].renew()  # what the renewal loop does every lease/2
    release.set()
    await asyncio.wait_for(task, 10)
    assert sorted(ran) == [0, 1, 2, 4, 5, 6, 7]
    assert (await registry.job_info(ids[3])).state is JobState.CANCELLED
