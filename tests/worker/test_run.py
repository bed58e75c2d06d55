"""A worker runs handlers, retries failures after their delay and sends the hopeless to failed."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import Job, JobState, Registry, Worker
from tests.backends import eventually, needs

from .conftest import App, Connect, settle


@dataclass
class Item:
    n: int


@needs("lookup")
async def test_async_and_plain_handlers_run_and_succeed(app: App, start) -> None:
    registry = app.registry()
    seen: list[tuple[str, int]] = []

    @registry.job("async.item")
    async def handle_async(job: Job[Item]) -> None:
        seen.append(("async", job.payload.n))

    @registry.job("plain.item")
    def handle_plain(job: Job[Item]) -> None:
        seen.append(("plain", job.payload.n))

    first = await registry.push("q", "async.item", Item(1))
    second = await registry.push("q", "plain.item", Item(2))
    start(registry)
    assert (await settle(registry, first)).state is JobState.SUCCEEDED
    assert (await settle(registry, second)).state is JobState.SUCCEEDED
    assert sorted(seen) == [("async", 1), ("plain", 2)]


@needs("lookup")
async def test_handler_receives_job_identity_and_meta(app: App, start) -> None:
    registry = app.registry(meta={"tenant": "acme"})
    received: list[Job[Item]] = []

    @registry.job("item", retry=4)
    async def handle(job: Job[Item]) -> None:
        received.append(job)

    job_id = await registry.push("q", "item", Item(7), meta={"trace": "t1"})
    start(registry)
    await settle(registry, job_id)
    (job,) = received
    assert (job.id, job.queue, job.name, job.payload) == (job_id, "q", "item", Item(7))
    assert (job.attempt, job.max_attempts) == (1, 5)
    assert job.meta == {"tenant": "acme", "trace": "t1"}
    assert abs(job.created_at.timestamp() - time.time()) < 60


async def test_meta_reaches_each_attempt_as_stored_json_whatever_a_handler_or_pusher_changes(
    app: App, start
) -> None:
    registry = app.registry(meta={"tags": ["base"]})
    seen: list[tuple[str, dict[str, Any]]] = []

    @registry.job("item", retry=1, retry_delay=0)
    async def handle(job: Job[Item]) -> None:
        seen.append((job.id, copy.deepcopy(job.meta)))
        job.meta["tags"].append("changed by a handler")
        job.meta["added"] = True
        if job.attempt == 1 and job.payload.n == 1:
            raise ConnectionError("try again")

    given: dict[str, Any] = {"1": "a key", "pair": (1, 2), "list": ["x"]}  # int keys: refused
    first = await registry.push("q", "item", Item(1), meta=given)
    given["list"].append("changed by the pusher")
    second = await registry.push("q", "item", Item(2))
    await Worker(registry, "w", burst=True).run()

    stored = {"tags": ["base"], "1": "a key", "pair": [1, 2], "list": ["x"]}
    assert [meta for job_id, meta in seen if job_id == first] == [stored, stored]
    assert [meta for job_id, meta in seen if job_id == second] == [{"tags": ["base"]}]


@needs("lookup")
async def test_failure_is_retried_after_retry_delay(app: App, start) -> None:
    registry = app.registry()
    attempts: list[float] = []

    @registry.job("flaky", retry=1, retry_delay=0.3)
    async def flaky(job: Job[Item]) -> None:
        attempts.append(time.monotonic())
        if job.attempt == 1:
            raise ConnectionError("try again")

    job_id = await registry.push("q", "flaky", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.SUCCEEDED
    assert info.attempt == 2
    assert attempts[1] - attempts[0] >= 0.3
    assert info.error is None  # it succeeded; the failed attempt stays in its history
    assert [(e.attempt, e.error.type) for e in info.errors] == [(1, "ConnectionError")]


async def test_exhausted_retries_move_job_to_failed_with_error(app: App, start) -> None:
    registry = app.registry()
    calls = 0

    @registry.job("doomed", retry=2, retry_delay=0)
    async def doomed(job: Job[Item]) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad item {job.payload.n}")

    job_id = await registry.push("q", "doomed", Item(3))
    run = start(registry)
    info = await settle(registry, job_id)
    assert info.state is JobState.FAILED
    assert calls == 3 and info.attempt == 3
    assert info.error.type == "ValueError"
    assert info.error.message == "bad item 3"
    assert "in doomed" in info.error.traceback
    # The worker records its counts just after it settles: a read now could come first.
    # Once stopped, it has recorded them all.
    await run.stop()
    counts = (await registry.worker_info())["w"]
    assert (counts.failed, counts.retried) == (1, 2)


async def test_timeout_cancels_async_handler_and_records_it(app: App, start) -> None:
    registry = app.registry()
    cancelled = asyncio.Event()

    @registry.job("slow", retry=0, timeout=0.2)
    async def slow(job: Job[Item]) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = await registry.push("q", "slow", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert cancelled.is_set()
    assert info.state is JobState.FAILED
    assert info.error.type == "conveyor.errors.JobTimeoutError"
    assert "timeout of 0.2s" in info.error.message


@needs("lookup")
async def test_plain_handler_past_its_timeout_keeps_its_job_and_slot_until_its_thread_returns(
    app: App, start
) -> None:
    # A lease of 0.6 s: the thread outlives several leases, so only renewal keeps the job.
    registry = app.registry(lease=0.6)
    started, let_go = threading.Event(), threading.Event()
    runs: list[tuple[str, int, float, float]] = []  # job name, attempt, start, end

    @registry.job("slow.plain", retry=1, retry_delay=0, timeout=0.2)
    def slow(job: Job[Item]) -> None:
        begun = time.monotonic()
        if job.attempt == 1:
            started.set()
            let_go.wait(10)
        runs.append((job.name, job.attempt, begun, time.monotonic()))

    @registry.job("other")
    def other(job: Job[Item]) -> None:
        runs.append((job.name, job.attempt, time.monotonic(), time.monotonic()))

    job_id = await registry.push("q", "slow.plain", Item(1))
    start(registry)
    await asyncio.to_thread(started.wait, 5)
    rival = app.connect()
    await rival.open()
    deadline = time.monotonic() + 1.5  # well past the timeout and two leases
    while time.monotonic() < deadline:
        assert await rival.reserve(["q"], 10, 5.0, "rival") == []
        await asyncio.sleep(0.05)
    info = await registry.job_info(job_id)
    assert (info.state, info.attempt) == (JobState.RESERVED, 1)
    other_id = await registry.push("q", "other", Item(2))
    await asyncio.sleep(0.3)
    # Concurrency 1: the timed-out thread still holds the only slot.
    assert (await registry.job_info(other_id)).state is JobState.PENDING
    assert runs == []
    let_go.set()
    info = await settle(registry, job_id)
    assert (await settle(registry, other_id)).state is JobState.SUCCEEDED
    assert (info.state, info.attempt) == (JobState.SUCCEEDED, 2)
    assert info.error is None  # it succeeded; the first attempt's error is in its history
    assert [e.error.type for e in info.errors] == ["conveyor.errors.JobTimeoutError"]
    first, second = sorted((r for r in runs if r[0] == "slow.plain"), key=lambda r: r[1])
    assert first[3] <= second[2]  # the retry began only after the first thread returned
    await rival.close()


@needs("lookup")
async def test_plain_handler_past_its_last_timeout_fails_once_its_thread_returns(
    app: App, start
) -> None:
    registry = app.registry()
    started, let_go = threading.Event(), threading.Event()

    @registry.job("slow.plain", retry=0, timeout=0.1)
    def slow(job: Job[Item]) -> None:
        started.set()
        let_go.wait(10)

    job_id = await registry.push("q", "slow.plain", Item(1))
    start(registry)
    await asyncio.to_thread(started.wait, 5)
    await asyncio.sleep(0.4)  # past the timeout: still reserved while the thread runs
    assert (await registry.job_info(job_id)).state is JobState.RESERVED
    let_go.set()
    info = await settle(registry, job_id)
    assert info.state is JobState.FAILED
    assert info.error.type == "conveyor.errors.JobTimeoutError"
    assert "timeout of 0.1s" in info.error.message


async def test_handler_raising_timeout_error_itself_is_an_ordinary_failure(app: App, start) -> None:
    registry = app.registry()

    @registry.job("own.timeout", retry=0, timeout=10)
    async def own(job: Job[Item]) -> None:
        raise TimeoutError("upstream API timed out")

    job_id = await registry.push("q", "own.timeout", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert info.error.type == "TimeoutError"
    assert info.error.message == "upstream API timed out"


@needs("lookup")
async def test_concurrency_limit_is_never_exceeded(app: App, start) -> None:
    registry = app.registry(concurrency=3)
    running = 0
    most = 0

    @registry.job("busy")
    async def busy(job: Job[Item]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1

    ids = await registry.push_many("q", "busy", [Item(n) for n in range(15)])
    start(registry)
    for job_id in ids:
        await settle(registry, job_id)
    assert most == 3


@needs("exact_counts")
async def test_burst_worker_returns_once_queue_is_empty(app: App) -> None:
    registry = app.registry(concurrency=4)
    done: list[int] = []

    @registry.job("item")
    async def item(job: Job[Item]) -> None:
        done.append(job.payload.n)

    await registry.push_many("q", "item", [Item(n) for n in range(20)])
    await registry.push("q", "item", Item(99), delay=0.2)
    worker = Worker(registry, "w", burst=True)
    await asyncio.wait_for(worker.run(), 10)
    assert sorted(done) == [*range(20), 99]
    assert worker.counts.succeeded == 21
    counts = (await registry.queue_info())["q"]
    assert (counts.pending, counts.delayed, counts.reserved, counts.succeeded) == (0, 0, 0, 21)


async def test_idle_worker_wakes_on_push_from_same_process(app: App, start) -> None:
    registry = app.registry(poll_interval=5.0)
    ran = asyncio.Event()

    @registry.job("ping")
    async def ping(job: Job[Item]) -> None:
        ran.set()

    start(registry)
    await asyncio.sleep(0.1)  # let the worker find the queue empty and go idle
    pushed = time.monotonic()
    await registry.push("q", "ping", Item(1))
    await asyncio.wait_for(ran.wait(), 4)
    assert time.monotonic() - pushed < 3.0  # woken by the push, not by its 5 s poll


async def test_a_running_worker_says_it_is_alive_and_a_clean_stop_forgets_it(
    app: App, start
) -> None:
    registry = app.registry()

    @registry.job("item")
    async def item(job: Job[Item]) -> None: ...

    await registry.push("q", "item", Item(1))
    run = start(registry)

    async def alive() -> bool:
        return [p.identity for p in await registry.workers_alive()] == [run.worker.identity]

    await eventually(alive)
    [presence] = await registry.workers_alive()
    assert presence.worker == "w" and presence.started_at <= presence.seen_at
    await run.stop()
    assert await registry.workers_alive() == []


async def test_a_backlog_on_one_backend_never_holds_back_the_queue_of_another(
    connect: Connect, tmp_path: Path
) -> None:
    # Queue "a" on this test's backend holds a backlog; queue "b", on an SQLite file, gets one
    # job of a higher priority, pushed first. A worker that always asked the backend of its
    # first queue first filled every freed slot from "a" and ran b's job last of all.
    registry = Registry()
    registry.queue("a", driver=connect(), workers=["w"])
    registry.queue("b", driver=f"sqlite:///{tmp_path / 'b.db'}", workers=["w"])
    registry.worker("w", concurrency=2, poll_interval=0.05, prefetch=0)
    order: list[str] = []

    @registry.job("note")
    async def note(job: Job[dict[str, int]]) -> None:
        order.append(job.queue)
        await asyncio.sleep(0.01)

    await registry.push("b", "note", {"n": 0}, priority=10)
    await registry.push_many("a", "note", [{"n": n} for n in range(30)])
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 20)
    await registry.close()

    assert sorted(order) == ["a"] * 30 + ["b"]
    assert order.index("b") < 4, order
