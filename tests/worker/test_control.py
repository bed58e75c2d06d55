"""Job control as workers see it: cancelling pending and running jobs (from another connection,
as another process would), pausing and resuming queues, and results kept for a waiting caller."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from conveyor import Job, JobFailedError, JobState, Registry
from conveyor.chain import page_id
from tests.backends import eventually, needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


def other_process(app: App, registry: Registry) -> Registry:
    """A second registry on the same storage and a connection of its own (for memory, the same
    instance: all the sharing it offers), with the job names registered."""
    other = app.registry()
    for name in registry.jobs:
        other.job(name)(_noop)
    return other


async def _noop(job: Job[Item]) -> None: ...


@needs("lookup")
async def test_cancel_of_pending_and_delayed_jobs_keeps_them_from_running(app: App, start) -> None:
    registry = app.registry()
    ran: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    pending = await registry.push("q", "item", Item(1))
    delayed = await registry.push("q", "item", Item(2), delay=0.3)
    kept = await registry.push("q", "item", Item(3))
    assert await registry.cancel(pending) and await registry.cancel(delayed)
    start(registry)

    assert (await settle(registry, kept)).state is JobState.SUCCEEDED
    await asyncio.sleep(0.5)
    assert ran == [3]
    for job_id in (pending, delayed):
        assert (await registry.job_info(job_id)).state is JobState.CANCELLED
    assert (await registry.queue_info())["q"].cancelled == 2
    assert not await registry.cancel(kept)  # finished: nothing to cancel


@needs("lookup")
async def test_cancel_of_a_running_async_job_stops_it_at_the_next_renewal(app: App, start) -> None:
    registry = app.registry(lease=0.4)  # renewed every 0.2 s
    started = asyncio.Event()
    stopped: list[str] = []

    @registry.job("item", retry=3)
    async def item(job: Job[Item]) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append(job.id)
            raise

    job_id = await registry.push("q", "item", Item(1))
    start(registry)
    await asyncio.wait_for(started.wait(), 5)
    began = time.monotonic()

    assert await other_process(app, registry).cancel(job_id)

    info = await settle(registry, job_id)
    assert time.monotonic() - began < 3
    assert (info.state, stopped) == (JobState.CANCELLED, [job_id])
    assert info.error.type == "conveyor.errors.JobCancelledError" and info.attempt == 1


@needs("lookup")
async def test_a_plain_handler_sees_job_cancelled_and_its_job_ends_cancelled(
    app: App, start
) -> None:
    registry = app.registry(lease=0.4)
    started = threading.Event()
    saw: list[bool] = []

    @registry.job("item")
    def item(job: Job[Item]) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        saw.append(job.cancelled)

    job_id = await registry.push("q", "item", Item(1))
    start(registry)
    await asyncio.to_thread(started.wait, 5)

    assert await registry.cancel(job_id)

    assert (await settle(registry, job_id)).state is JobState.CANCELLED
    assert saw == [True]


@needs("control")
async def test_a_chain_page_cancelled_while_it_runs_pushes_no_next_page(app: App, start) -> None:
    # The cancel was seen at the next renewal (lease/2) alone: a page that returned before
    # then succeeded and pushed the next page, and the chain went on though cancel said True.
    registry = app.registry()  # renewed every 15 s: long after the page returns
    running, go = asyncio.Event(), asyncio.Event()

    @registry.job("page", queue="q", chain=True)
    async def page(job: Job[Item]) -> int:
        running.set()
        await go.wait()
        return job.page + 1

    chain_id = await registry.start_chain("page", Item(1))
    start(registry)
    await asyncio.wait_for(running.wait(), 5)
    first = page_id(chain_id, 0)
    assert await other_process(app, registry).cancel(first)
    go.set()

    assert (await settle(registry, first)).state is JobState.CANCELLED
    info = await registry.chain_info(chain_id)
    assert info is not None and (info.pages, info.state) == (1, "cancelled")


@needs("lookup")
async def test_a_paused_queue_runs_nothing_until_resumed(app: App, start) -> None:
    registry = app.registry()
    ran: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    await registry.pause("q")
    assert await registry.paused_queues() == {"q"}
    job_id = await registry.push("q", "item", Item(1))
    start(registry)
    await asyncio.sleep(0.4)  # several poll intervals
    assert ran == [] and (await registry.job_info(job_id)).state is JobState.PENDING

    await other_process(app, registry).resume("q")

    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    assert await registry.paused_queues() == set()


@needs("control")
async def test_a_worker_of_a_paused_queue_holding_jobs_waits_between_looks(app: App, start) -> None:
    # A push through the worker's own driver (a web app and its worker in one process) ended
    # each wait at once until the next reserve, which never came while the queue was paused
    # (memory, sqlite, mysql; on MySQL the due job did too): the worker went round its loop
    # for as long as the pause lasted, a whole core.
    registry = app.registry(poll_interval=0.2)
    registry.job("item")(_noop)
    await registry.pause("q")
    job_id = await registry.push("q", "item", Item(1))
    start(registry)
    await asyncio.sleep(0.3)  # started, and waiting
    began = time.process_time()
    await asyncio.sleep(1.0)  # five poll intervals

    assert time.process_time() - began < 0.3  # this process's CPU: others' load counts not
    assert (await registry.job_info(job_id)).state is JobState.PENDING


@needs("control")
async def test_result_of_a_job_that_keeps_it_reaches_a_waiting_caller(app: App, start) -> None:
    registry = app.registry()

    @registry.job("total", keep_result=True)
    async def total(job: Job[Item]) -> dict[str, int]:
        return {"total": job.payload.n * 2}

    job_id = await registry.push("q", "total", Item(21))
    waiting = asyncio.create_task(other_process(app, registry).result(job_id, timeout=10))
    start(registry)

    assert await waiting == {"total": 42}


@needs("control")
async def test_result_of_a_failed_job_raises_with_its_error(app: App, start) -> None:
    registry = app.registry()

    @registry.job("boom", retry=0, keep_result=True)
    async def boom(job: Job[Item]) -> int:
        raise ValueError("no total")

    job_id = await registry.push("q", "boom", Item(1))
    start(registry)

    with pytest.raises(JobFailedError, match="no total"):
        await registry.result(job_id, timeout=10)


@needs("control")
async def test_a_result_over_the_payload_limit_fails_its_job_and_holds_back_no_other(
    app: App, start
) -> None:
    # Before, it was stored as is: on MySQL a result past max_allowed_packet failed the ack of
    # its whole batch again and again, and the job never ended, nor did the jobs beside it.
    registry = app.registry(concurrency=2)
    limit = registry.max_payload_bytes

    @registry.job("huge", retry=0, keep_result=True)
    async def huge(job: Job[Item]) -> str:
        return "r" * limit  # with its quotes, 2 bytes over

    @registry.job("small", keep_result=True)
    async def small(job: Job[Item]) -> int:
        return job.payload.n

    over = await registry.push("q", "huge", Item(1))
    beside = await registry.push("q", "small", Item(2))
    start(registry)

    with pytest.raises(JobFailedError, match=f"{limit + 2} bytes, over the limit of {limit}"):
        await registry.result(over, timeout=10)
    assert await registry.result(beside, timeout=10) == 2


@needs("control")
async def test_a_result_or_cursor_holding_nan_or_infinity_fails_its_job(app: App, start) -> None:
    # Before, pydantic wrote them as the tokens NaN and Infinity, which are no JSON: the result
    # was stored so, and a chain went on with a cursor no JSON reader (jq, --json) could read.
    registry = app.registry(concurrency=2)

    @registry.job("nan", retry=0, keep_result=True)
    async def nan(job: Job[Item]) -> dict[str, list[float]]:
        return {"rows": [1.0, float("nan")]}

    @registry.job("words", keep_result=True)
    async def words(job: Job[Item]) -> str:
        return "NaN and Infinity"  # as text, they are JSON

    @registry.job("page", queue="q", retry=0, chain=True)
    async def page(job: Job[Item]) -> float:
        return float("inf")

    refused = await registry.push("q", "nan", Item(1))
    kept = await registry.push("q", "words", Item(2))
    chain_id = await registry.start_chain("page", Item(3))
    start(registry)

    with pytest.raises(JobFailedError, match=r"is nan at rows\.1, which JSON cannot carry"):
        await registry.result(refused, timeout=10)
    assert await registry.result(kept, timeout=10) == "NaN and Infinity"
    first = await settle(registry, page_id(chain_id, 0))
    assert first.state is JobState.FAILED and first.error is not None
    assert "is inf, which JSON cannot carry" in first.error.message
    assert await registry.job_info(page_id(chain_id, 1)) is None


@needs("control")
async def test_result_waits_no_longer_than_its_timeout(app: App) -> None:
    registry = app.registry()
    registry.job("item", keep_result=True)(_noop)
    job_id = await registry.push("q", "item", Item(1))

    with pytest.raises(TimeoutError):
        await registry.result(job_id, timeout=0.2)


@needs("lookup")
async def test_a_job_not_keeping_results_has_none(app: App, start) -> None:
    registry = app.registry()

    @registry.job("item")
    async def item(job: Job[Item]) -> int:
        return 7

    job_id = await registry.push("q", "item", Item(1))
    start(registry)

    async def done() -> bool:
        info = await registry.job_info(job_id)
        return info is not None and info.state is JobState.SUCCEEDED

    await eventually(done)
    assert await registry.result(job_id) is None
