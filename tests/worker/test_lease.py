"""Leases: a crashed worker's job comes back after its lease; a running job's lease is renewed."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import pytest

from conveyor import Job, JobState
from tests.backends import needs

from .conftest import App, die_twice, settle


@dataclass
class Item:
    n: int


@needs("lookup")
async def test_job_of_crashed_worker_runs_again_after_its_lease(app: App, start) -> None:
    registry = app.registry()
    attempts: list[int] = []

    @registry.job("item", retry=3)
    async def item(job: Job[Item]) -> None:
        attempts.append(job.attempt)

    job_id = await registry.push("q", "item", Item(1))
    # A worker that reserves the job and dies: nobody renews or settles it.
    crashed = app.connect()
    await crashed.open()
    assert [j.id for j in await crashed.reserve(["q"], 1, 0.2, "crashed")] == [job_id]
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.SUCCEEDED
    # The first death is not charged to the job: another job may have caused it.
    assert (attempts, info.rescued) == ([1], 1)
    await crashed.close()


@needs("lookup")
async def test_job_whose_worker_died_on_its_only_attempt_runs_again(app: App, start) -> None:
    registry = app.registry()
    attempts: list[int] = []

    @registry.job("item", retry=0)
    async def item(job: Job[Item]) -> None:
        attempts.append(job.attempt)

    job_id = await registry.push("q", "item", Item(1))
    crashed = app.connect()
    await crashed.open()
    await crashed.reserve(["q"], 1, 0.1, "crashed")
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.SUCCEEDED
    assert attempts == [1]
    await crashed.close()


@needs("lookup")
async def test_job_whose_worker_died_again_on_its_last_attempt_fails(
    app: App, start, caplog: pytest.LogCaptureFixture
) -> None:
    registry = app.registry()
    ran = False

    @registry.job("item", retry=0)
    async def item(job: Job[Item]) -> None:
        nonlocal ran
        ran = True

    job_id = await registry.push("q", "item", Item(1))
    await die_twice(app, job_id)
    start(registry)
    info = await settle(registry, job_id)
    assert not ran
    assert info.state is JobState.FAILED
    assert info.error.type == "conveyor.errors.LeaseExpiredError"
    # Its one attempt (retry=0) died alone; the first death, among others, was not charged.
    assert (
        "stopped answering (crash, kill -9, out of memory) 2 times, the last time while it"
        " ran alone in its last attempt (1 of 1)" in info.error.message
    )
    for _ in range(500):  # the worker logs the outcome once it is stored: maybe after settle
        lines = [r for r in caplog.records if r.levelno == logging.ERROR and job_id in r.message]
        if lines:
            break
        await asyncio.sleep(0.01)
    [line] = lines
    assert "failed for good after attempt 1: conveyor.errors.LeaseExpiredError" in line.message
    assert line.attempt == 1  # type: ignore[attr-defined]
    # The reserve that found it dead charged an attempt 2 that never ran: shown as 1 of 1.
    assert (info.attempt, info.max_attempts) == (1, 1)
    assert [(e.attempt, e.error.type) for e in info.errors] == [
        (1, "conveyor.errors.LeaseExpiredError")
    ]


@needs("lookup")
async def test_renewal_keeps_long_job_from_being_taken(app: App, start) -> None:
    # Renewed every lease/2: a lease of 0.6 s leaves a renewal 0.3 s to be late on a loaded
    # machine before a rival could take the job.
    registry = app.registry(lease=0.6)
    started = asyncio.Event()
    attempts: list[int] = []

    @registry.job("long")
    async def long(job: Job[Item]) -> None:
        attempts.append(job.attempt)
        started.set()
        await asyncio.sleep(1.8)  # three times the lease

    job_id = await registry.push("q", "long", Item(1))
    start(registry)
    await asyncio.wait_for(started.wait(), 5)
    rival = app.connect()
    await rival.open()
    deadline = time.monotonic() + 1.5  # well past the first lease and the second
    while time.monotonic() < deadline:
        assert await rival.reserve(["q"], 10, 5.0, "rival") == []
        await asyncio.sleep(0.05)
    info = await settle(registry, job_id)
    assert info.state is JobState.SUCCEEDED
    assert attempts == [1]
    await rival.close()


@needs("lookup")
async def test_a_rescued_job_runs_alone(app: App, start) -> None:
    # A job taken back from a worker that died runs with nothing beside it: should the worker
    # die again, the job alone was running, and only it is charged.
    registry = app.registry(concurrency=4)
    loop = asyncio.get_running_loop()
    spans: dict[str, tuple[float, float]] = {}

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        begin = loop.time()
        await asyncio.sleep(0.2)
        spans[job.id] = (begin, loop.time())

    rescued = await registry.push("q", "item", Item(0))
    crashed = app.connect()
    await crashed.open()
    await crashed.reserve(["q"], 1, 0.1, "crashed")  # and dies: its lease runs out
    others = await registry.push_many("q", "item", [Item(n) for n in range(1, 8)])
    await asyncio.sleep(0.2)
    start(registry)

    for job_id in [rescued, *others]:
        assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    alone = spans[rescued]
    beside = [job_id for job_id in others if spans[job_id][0] < alone[1] < spans[job_id][1]
              or alone[0] < spans[job_id][0] < alone[1]]  # fmt: skip
    assert beside == [], (alone, {job_id: spans[job_id] for job_id in beside})
    assert max(end for _, end in spans.values()) - min(b for b, _ in spans.values()) < 5
    await crashed.close()


@needs("lookup")
async def test_a_stop_gives_back_a_rescued_job_waiting_to_run_alone(app: App, start) -> None:
    registry = app.registry(concurrency=2)
    release = asyncio.Event()

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        await release.wait()

    rescued = await registry.push("q", "item", Item(0))
    crashed = app.connect()
    await crashed.open()
    await crashed.reserve(["q"], 1, 0.1, "crashed")
    busy = await registry.push("q", "item", Item(1), priority=5)  # reserved first, then runs
    await asyncio.sleep(0.2)
    running = start(registry)
    await asyncio.sleep(0.3)  # both reserved: the rescued job waits for the busy one

    await running.stop(now=True)

    info = await registry.job_info(rescued)
    assert (info.state, info.attempt, info.rescued) == (JobState.PENDING, 1, 1)
    assert (await registry.job_info(busy)).state is JobState.PENDING
    await crashed.close()


@needs("lookup")
async def test_a_handler_blocking_the_event_loop_past_the_lease_is_named(
    app: App, start, caplog: pytest.LogCaptureFixture
) -> None:
    # time.sleep in an async def stops the renewal: the lease runs out, another worker may
    # run the job too. The worker cannot prevent it, but must say why it happened.
    registry = app.registry(lease=1.0, retry=0)

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        time.sleep(1.6)  # the mistake under test

    job_id = await registry.push("q", "item", Item(1))
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        start(registry)
        await settle(registry, job_id)
        for _ in range(500):  # the renewal wakes beside the settle, maybe after it
            said = [r.getMessage() for r in caplog.records]
            if any("event loop was blocked" in message for message in said):
                break
            await asyncio.sleep(0.01)
    blocked = [message for message in said if "event loop was blocked" in message]
    assert blocked and "plain def" in blocked[0]
