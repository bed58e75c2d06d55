"""Each lifecycle event once, with the right attempt, for the outcomes a worker meets beyond a
plain success or failure: a lease lost while the job runs, a job failed as the likely cause of
its worker's deaths."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import pytest

from conveyor import Job, JobState
from conveyor import metrics as conveyor_metrics
from conveyor.chain import page_id
from conveyor.hooks import Event
from tests.backends import eventually

from .conftest import App, die_twice, settle

# Each case waits for jobs by looking them up: a driver without lookup cannot be watched.
pytestmark = pytest.mark.needs("lookup")


@dataclass
class Item:
    n: int


async def test_a_lease_lost_while_the_job_runs_is_told_once(app: App, start) -> None:
    # Before, a renewal that found the lease taken over cancelled the job and told no hook:
    # "started" had no outcome, and conveyor_jobs_total{outcome="lease_lost"} stayed 0 for the
    # commonest loss (a stalled event loop), the one its alert rule is for.
    lease = 0.6
    registry = app.registry(lease=lease)
    events: list[Event] = []
    registry.hook()(events.append)
    metrics = conveyor_metrics.install(registry, cache_for=0.0)
    taken: list[str] = []

    def rival_takes_it() -> None:
        async def take() -> None:
            rival = app.connect()
            await rival.open()
            taken.extend(job.id for job in await rival.reserve(["q"], 1, 60.0, "rival"))
            await rival.close()

        asyncio.run(take())

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        time.sleep(lease * 1.5)  # the event loop stalls past the lease: nothing renews it
        rival = threading.Thread(target=rival_takes_it)
        rival.start()
        rival.join()  # the loop still stalled: another worker reserves the job meanwhile
        await asyncio.sleep(30)  # until the next renewal finds the lease lost

    job_id = await registry.push("q", "item", Item(1))
    running = start(registry)

    async def lost_told() -> bool:
        return any(e.kind == "lease_lost" for e in events)

    await eventually(lost_told)
    assert taken == [job_id]
    await running.stop()
    told = [(e.kind, e.attempt) for e in events if e.job_id == job_id]
    assert told == [("pushed", 0), ("started", 1), ("lease_lost", 1)]
    [lost] = [e for e in events if e.kind == "lease_lost"]
    assert lost.duration is not None and lost.duration >= lease * 1.5
    assert lost.worker == running.worker.identity and lost.error is None
    text = (await metrics.exposition()).decode()
    assert 'conveyor_jobs_total{job="item",outcome="lease_lost",queue="q"} 1.0' in text
    assert 'conveyor_job_run_seconds_count{job="item",queue="q"} 1.0' in text
    assert (await registry.job_info(job_id)).state is JobState.RESERVED  # the rival's now


async def test_a_job_failed_for_its_workers_deaths_is_told_at_its_last_attempt(
    app: App, start
) -> None:
    # Before, the hooks were told attempt 2 of 1 (the reserve that found the job dead counted
    # an attempt that never ran), where the log line and the stored job say 1 of 1.
    registry = app.registry()
    events: list[Event] = []
    registry.hook()(events.append)

    @registry.job("item", retry=0)
    async def item(job: Job[Item]) -> None: ...

    job_id = await registry.push("q", "item", Item(1))
    await die_twice(app, job_id)
    start(registry)
    info = await settle(registry, job_id)
    assert (info.state, info.attempt, info.max_attempts) == (JobState.FAILED, 1, 1)

    async def failed_told() -> bool:
        return any(e.kind == "failed" for e in events)

    await eventually(failed_told)
    told = [(e.kind, e.attempt) for e in events if e.job_id == job_id]
    assert told == [("pushed", 0), ("started", 1), ("failed", 1)]


async def test_each_page_a_chain_pushes_is_told_and_counted_as_pushed(app: App, start) -> None:
    # Before, only the first page (start_chain's push) was told: the pages the worker pushed
    # with the acks of the pages before raised no "pushed", and conveyor_jobs_pushed_total
    # said 1 for a chain of 3 pages that each succeeded.
    registry = app.registry()
    events: list[Event] = []
    registry.hook("pushed", "succeeded")(events.append)
    metrics = conveyor_metrics.install(registry, cache_for=0.0)

    @registry.job("page", queue="q", chain=True)
    async def page(job: Job[Item]) -> int | None:
        return job.page + 1 if job.page < 2 else None

    chain_id = await registry.start_chain("page", Item(1))
    start(registry)
    last = page_id(chain_id, 2)
    assert (await settle(registry, last)).state is JobState.SUCCEEDED

    async def all_told() -> bool:
        return sum(e.kind == "succeeded" for e in events) == 3

    await eventually(all_told)
    pages = [page_id(chain_id, n) for n in range(3)]
    told = [(e.kind, e.job_id) for e in events]
    assert told == [
        ("pushed", pages[0]), ("pushed", pages[1]), ("succeeded", pages[0]),
        ("pushed", pages[2]), ("succeeded", pages[1]), ("succeeded", pages[2]),
    ]  # fmt: skip
    pushes = [e for e in events if e.kind == "pushed"]
    assert [(e.attempt, e.meta["page"], e.meta["cursor"]) for e in pushes] == [
        (0, 0, None), (0, 1, 1), (0, 2, 2),
    ]  # fmt: skip
    text = (await metrics.exposition()).decode()
    assert 'conveyor_jobs_pushed_total{job="page",queue="q"} 3.0' in text


async def test_a_slow_outcome_hook_lets_no_finished_job_run_again(app: App, start) -> None:
    # An outcome waits to be written while the hooks of the batch before it are told. Before,
    # its lease was no longer renewed meanwhile (the job had left the running ones): a hook
    # slower than the lease let the worker's next reserve take the finished job back as a
    # dead worker's, and run it a second time.
    lease = 1.0
    registry = app.registry(lease=lease)
    ran: list[int] = []

    @registry.hook("succeeded")
    async def slow(event: Event) -> None:
        if event.meta.get("slow"):
            await asyncio.sleep(lease * 2)  # a chat message, a call to a slow service

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    first = await registry.push("q", "item", Item(0), meta={"slow": True})
    second = await registry.push("q", "item", Item(1))
    start(registry)
    assert (await settle(registry, first)).state is JobState.SUCCEEDED
    info = await settle(registry, second, timeout=lease * 5)
    assert (info.state, info.rescued, info.attempt) == (JobState.SUCCEEDED, 0, 1)
    assert ran == [0, 1]


async def test_a_plain_hook_blocking_the_event_loop_is_named_as_a_cause(
    app: App, start, caplog: pytest.LogCaptureFixture
) -> None:
    # A plain def hook runs on the event loop, not in a thread as a plain def handler does (a
    # chat message sent with a blocking client, say). Before, the warning named only handlers.
    registry = app.registry(lease=1.0)

    @registry.hook("started")
    def blocks(event: Event) -> None:
        time.sleep(1.6)  # the mistake under test

    @registry.job("item")
    async def item(job: Job[Item]) -> None: ...

    job_id = await registry.push("q", "item", Item(1))
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        start(registry)
        await settle(registry, job_id)

        async def warned() -> bool:
            return "event loop was blocked" in caplog.text

        await eventually(warned)
    assert "nor may a lifecycle hook, plain def or async, which runs on the event loop" in (
        caplog.text
    )
