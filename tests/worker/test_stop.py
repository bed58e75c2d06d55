"""Stopping: running jobs get stop_timeout to finish; the rest go back without losing an attempt."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import pytest

from conveyor import Job, JobState, Worker
from conveyor.drivers.base import WorkerCounts
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


@needs("lookup")
async def test_graceful_stop_lets_running_job_finish(app: App, start) -> None:
    registry = app.registry(stop_timeout=5)
    started, finish = asyncio.Event(), asyncio.Event()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        started.set()
        await finish.wait()

    job_id = await registry.push("q", "item", Item(1))
    run = start(registry)
    await asyncio.wait_for(started.wait(), 5)
    run.worker.stop()
    await asyncio.sleep(0.05)
    assert not run.task.done()  # still waiting for the job
    finish.set()
    stopped = await asyncio.wait_for(run.task, 5)
    assert stopped.clean and (stopped.released, stopped.left) == ((), ())
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED


@needs("lookup")
async def test_stop_timeout_releases_unfinished_job_giving_attempt_back(
    app: App, start, caplog: pytest.LogCaptureFixture
) -> None:
    registry = app.registry(stop_timeout=0.2)
    started = asyncio.Event()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        started.set()
        await asyncio.sleep(30)

    job_id = await registry.push("q", "item", Item(1))
    run = start(registry)
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.INFO, logger="conveyor"):
        await run.stop()
    info = await registry.job_info(job_id)
    assert info.state is JobState.PENDING
    assert info.attempt == 0
    assert not run.task.result().clean and run.task.result().released == (job_id,)
    # Its log line says how long it ran before it was given back (it said 0.000s).
    released = [r for r in caplog.records if getattr(r, "outcome", None) == "released"]
    assert [r.id for r in released] == [job_id]  # type: ignore[attr-defined]
    assert released[0].duration >= 0.2  # type: ignore[attr-defined]


@needs("lookup")
async def test_second_stop_does_not_wait_for_stop_timeout(app: App, start) -> None:
    registry = app.registry(stop_timeout=60)
    started = asyncio.Event()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = await registry.push("q", "item", Item(1))
    run = start(registry)
    await asyncio.wait_for(started.wait(), 5)
    run.worker.stop()
    await asyncio.sleep(0.05)
    run.worker.stop()
    await asyncio.wait_for(run.task, 5)
    assert (await registry.job_info(job_id)).state is JobState.PENDING


@needs("lookup")
async def test_handler_going_on_after_the_stop_cancels_it_keeps_its_lease(app: App, start) -> None:
    # A handler that catches the stop's CancelledError (a bare except) runs on: until it
    # returns, the job is still ours, so another worker must not take it over.
    stopping = app.registry(lease=1.0, stop_timeout=0.1)
    other = app.registry(lease=1.0)
    started: list[str] = []
    for registry, name in ((stopping, "stopping"), (other, "other")):

        @registry.job("item")
        async def item(job: Job[Item], name: str = name) -> None:
            started.append(name)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(2.5)  # on, past the lease

    job_id = await stopping.push("q", "item", Item(1))
    run = start(stopping)
    while not started:
        await asyncio.sleep(0.01)
    start(other)
    await run.stop(now=True)
    info = await settle(stopping, job_id)
    assert (started, info.state) == (["stopping"], JobState.SUCCEEDED)


@needs("lookup")
async def test_stopped_worker_reserves_nothing_more(app: App, start) -> None:
    registry = app.registry()
    ran: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    run = start(registry)
    await run.stop()
    job_id = await registry.push("q", "item", Item(1))
    await asyncio.sleep(0.1)
    assert ran == []
    assert (await registry.job_info(job_id)).state is JobState.PENDING


@needs("lookup")
async def test_stop_leaves_a_running_plain_handlers_job_reserved_until_its_lease_runs_out(
    app: App, start
) -> None:
    # Python cannot stop the thread: released at the stop, the job would start elsewhere
    # while it still runs here. Left reserved and no longer renewed, it comes back after
    # its lease; `conveyor work` exits meanwhile, ending the thread with the process.
    registry = app.registry(stop_timeout=0.2, lease=1.0)
    started, let_go = threading.Event(), threading.Event()

    @registry.job("item")
    def item(job: Job[Item]) -> None:
        started.set()
        let_go.wait(10)

    job_id = await registry.push("q", "item", Item(1))
    run = start(registry)
    await asyncio.to_thread(started.wait, 5)
    stopping = time.monotonic()
    await run.stop()
    assert time.monotonic() - stopping < 0.2 + 1.0  # stop_timeout, and a margin for settling
    info = await registry.job_info(job_id)
    assert (info.state, info.attempt) == (JobState.RESERVED, 1)
    rival = app.connect()
    await rival.open()
    assert await rival.reserve(["q"], 1, 5.0, "rival") == []
    async with asyncio.timeout(5):  # its lease, no longer renewed, runs out within 1 s
        while not (taken := await rival.reserve(["q"], 1, 5.0, "rival")):
            await asyncio.sleep(0.05)
    assert [job.id for job in taken] == [job_id]
    let_go.set()
    await rival.close()


async def test_a_job_given_back_at_stop_is_not_counted_processed(app: App, start) -> None:
    """The worker's totals count attempts that came to an outcome: a job given back by a stop
    runs again, and is counted once, where it finishes."""
    registry = app.registry(stop_timeout=0.1)
    started, first = asyncio.Event(), True

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        nonlocal first
        started.set()
        if first:
            first = False
            await asyncio.sleep(30)

    await registry.push("q", "item", Item(1))
    run = start(registry)
    await asyncio.wait_for(started.wait(), 5)
    await run.stop()
    assert run.worker.counts == WorkerCounts()
    again = start(registry, burst=True)
    await asyncio.wait_for(again.task, 10)

    assert (await registry.worker_info())["w"] == WorkerCounts(processed=1, succeeded=1)


@pytest.mark.parametrize("ended", ["stop", "burst"])
async def test_a_stopped_worker_holds_back_no_job_from_another_process(
    app: App, start, ended: str
) -> None:
    """A worker that stopped while its registry stays open (an app that still pushes, a burst
    run that returned) holds none of its queue's jobs: another process's worker runs every job
    pushed after, and the one it retries. On amqp the stopped worker's consumers went on taking
    deliveries, which sat unacknowledged, run by no one, until its connection closed."""
    stopped, other = app.registry(concurrency=4), app.registry(concurrency=4)
    done: list[int] = []
    tries: list[int] = []
    ran = asyncio.Event()

    async def item(job: Job[Item]) -> None:
        done.append(job.payload.n)
        ran.set()

    async def flaky(job: Job[Item]) -> None:
        tries.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("first try fails")

    for registry in (stopped, other):
        registry.job("item")(item)
        registry.job("flaky", retry=1, retry_delay=0)(flaky)
    await stopped.push("q", "item", Item(-1))
    if ended == "burst":
        await asyncio.wait_for(Worker(stopped, "w", burst=True).run(), 10)
    else:
        run = start(stopped)
        await asyncio.wait_for(ran.wait(), 5)  # it reserved, so it consumes on amqp
        await run.stop()

    await stopped.push_many("q", "item", [Item(n) for n in range(12)])
    await stopped.push("q", "flaky", Item(0))
    await asyncio.wait_for(Worker(other, "w", burst=True).run(), 10)

    assert sorted(done) == list(range(-1, 12))
    assert tries == [1, 2]


async def test_a_registry_closed_without_its_worker_stopping_holds_back_no_job(app: App) -> None:
    """A registry closed while its driver still reserved (no worker said it stopped): the
    jobs pushed before the close go to another process's worker, none kept by the closed one
    (on amqp, `close` gives back what its consumers were sent and never handed out)."""
    closed, other = app.registry(concurrency=4), app.registry(concurrency=4)
    done: list[int] = []

    async def item(job: Job[Item]) -> None:
        done.append(job.payload.n)

    for registry in (closed, other):
        registry.job("item")(item)
    driver = await closed.driver_of("q")
    assert await driver.reserve(["q"], 4, 30.0, "w") == []  # as a worker would: it consumes
    await closed.push_many("q", "item", [Item(n) for n in range(12)])
    await closed.close()

    await asyncio.wait_for(Worker(other, "w", burst=True).run(), 10)

    assert sorted(done) == list(range(12))
