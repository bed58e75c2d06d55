"""Lifecycle hooks see every event of a job's life and a worker's; middleware wraps the
handler; a hook that raises breaks neither a push nor a job."""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pytest

import conveyor.hooks
from conveyor import Job, JobState
from conveyor.hooks import CallNext, Event
from tests.backends import eventually

from .conftest import App, settle

# Each case waits for jobs by looking them up: a driver without lookup cannot be watched.
pytestmark = pytest.mark.needs("lookup")


@dataclass
class Item:
    n: int


async def test_hooks_see_each_outcome_in_order(app: App, start) -> None:
    registry = app.registry(retry=1, retry_delay=0.0)
    events: list[Event] = []

    @registry.hook()
    async def record(event: Event) -> None:
        events.append(event)

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        if job.payload.n == 1 and job.attempt == 1:
            raise ValueError("first try fails")
        if job.payload.n == 2:
            raise RuntimeError("always fails")

    ok = await registry.push("q", "item", Item(0))
    retried = await registry.push("q", "item", Item(1))
    failed = await registry.push("q", "item", Item(2))
    running = start(registry)
    for job_id in (ok, retried, failed):
        await settle(registry, job_id)
    await running.stop()

    def kinds(job_id: str) -> list[str]:
        return [e.kind for e in events if e.job_id == job_id]

    assert kinds(ok) == ["pushed", "started", "succeeded"]
    assert kinds(retried) == ["pushed", "started", "retried", "started", "succeeded"]
    assert kinds(failed) == ["pushed", "started", "retried", "started", "failed"]
    fail = next(e for e in events if e.job_id == failed and e.kind == "failed")
    assert fail.error is not None and "always fails" in fail.error.message
    assert fail.duration is not None and fail.duration >= 0
    start_event = next(e for e in events if e.job_id == ok and e.kind == "started")
    assert start_event.wait is not None and start_event.wait >= 0
    assert start_event.queue == "q" and start_event.name == "item" and start_event.attempt == 1
    worker_kinds = [e.kind for e in events if e.kind.startswith("worker_")]
    assert worker_kinds == ["worker_started", "worker_stopped"]
    assert events[-1].queues == ("q",)
    # Every event a worker raises names it the same way: its identity, as worker_started does.
    identity = next(e.worker for e in events if e.kind == "worker_started")
    assert ":" in identity
    assert {e.worker for e in events if e.kind != "pushed"} == {identity}


async def test_cancel_is_its_own_event(app: App, start) -> None:
    registry = app.registry(lease=0.4)  # a cancel is seen at the next renewal
    seen: list[str] = []
    registry.hook("cancelled", "succeeded", "failed")(lambda event: seen.append(event.kind))
    begun = asyncio.Event()

    @registry.job("slow")
    async def slow(job: Job[Item]) -> None:
        begun.set()
        await asyncio.sleep(30)

    job_id = await registry.push("q", "slow", Item(0))
    start(registry)
    await asyncio.wait_for(begun.wait(), 10)
    assert await registry.cancel(job_id)
    assert (await settle(registry, job_id)).state is JobState.CANCELLED

    async def cancelled_seen() -> bool:
        return seen == ["cancelled"]

    await eventually(cancelled_seen)


async def test_a_hook_that_raises_breaks_nothing(
    app: App, start, caplog: pytest.LogCaptureFixture
) -> None:
    registry = app.registry()
    after: list[str] = []

    @registry.hook()
    def broken(event: Event) -> None:
        raise RuntimeError(f"hook broken on {event.kind}")

    registry.hook("succeeded")(lambda event: after.append(event.job_id))

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    with caplog.at_level(logging.ERROR, logger="conveyor.hooks"):
        job_id = await registry.push("q", "item", Item(0))
        start(registry)
        assert (await settle(registry, job_id)).state is JobState.SUCCEEDED

        async def succeeded_seen() -> bool:
            return after == [job_id]

        await eventually(succeeded_seen)
    assert "hook broken on pushed" in caplog.text
    assert "hook broken on succeeded" in caplog.text


@pytest.mark.parametrize("raised", [SystemExit(2), KeyboardInterrupt()], ids=repr)
async def test_a_hook_raising_system_exit_or_keyboard_interrupt_stops_no_worker(
    app: App, start, raised: BaseException
) -> None:
    # Before, either escaped the task that ran the hook: the worker's event loop ended, and
    # the jobs it held stayed reserved until their lease ran out.
    registry = app.registry()

    @registry.hook("started", "succeeded")
    def bails(event: Event) -> None:
        raise raised

    @registry.job("item")
    async def handle(job: Job[Item]) -> None: ...

    ids = [await registry.push("q", "item", Item(n)) for n in range(3)]
    running = start(registry)
    assert [(await settle(registry, job_id)).state for job_id in ids] == [JobState.SUCCEEDED] * 3
    await running.stop()
    assert running.worker.counts.succeeded == 3


@pytest.mark.parametrize("kind", ["started", "succeeded"])
async def test_a_hooks_own_cancelled_error_stops_no_job_and_no_worker(
    app: App, start, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # A hook awaiting a future someone else cancelled raises CancelledError, not its task's
    # cancel. Before, it was raised on as a stop's: on "started" the job was given back
    # unrun, again and again; on "succeeded" it ended the settling task, so no outcome was
    # written after it and the jobs ran again once their leases ran out.
    registry = app.registry()

    @registry.hook(kind)
    async def awaits_a_cancelled_future(event: Event) -> None:
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled

    ran: list[int] = []

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        ran.append(job.payload.n)

    ids = [await registry.push("q", "item", Item(n)) for n in range(3)]
    with caplog.at_level(logging.ERROR, logger="conveyor.hooks"):
        running = start(registry)
        assert [(await settle(registry, job_id)).state for job_id in ids] == [
            JobState.SUCCEEDED
        ] * 3
        await running.stop()
    assert sorted(ran) == [0, 1, 2]
    assert running.worker.counts.succeeded == 3
    assert f"lifecycle hook {awaits_a_cancelled_future.__qualname__} raised on {kind}" in (
        caplog.text
    )


async def test_middleware_wraps_the_handler_outermost_first(app: App, start) -> None:
    registry = app.registry()
    calls: list[str] = []

    @registry.middleware
    async def outer(job: Job[Any], call_next: CallNext) -> Any:
        calls.append(f"outer {job.payload.n}")
        return await call_next(job)

    @registry.middleware
    async def inner(job: Job[Any], call_next: CallNext) -> Any:
        calls.append("inner")
        return await call_next(job)

    @registry.job("plain")
    def handle(job: Job[Item]) -> None:
        calls.append("handler")

    job_id = await registry.push("q", "plain", Item(7))
    start(registry)
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    assert calls == ["outer 7", "inner", "handler"]


async def test_a_plain_handler_sees_the_context_its_middleware_set(app: App, start) -> None:
    # docs/observability.md's middleware example: before, a plain handler's thread ran without
    # the context the middleware set, so it read the variable's default.
    registry = app.registry()
    tenant: ContextVar[str | None] = ContextVar("tenant", default=None)
    seen: list[str | None] = []

    @registry.middleware
    async def with_tenant(job: Job[Any], call_next: CallNext) -> Any:
        token = tenant.set(job.meta.get("tenant"))
        try:
            return await call_next(job)
        finally:
            tenant.reset(token)

    @registry.job("plain")
    def handle(job: Job[Item]) -> None:
        seen.append(tenant.get())

    job_id = await registry.push("q", "plain", Item(1), meta={"tenant": "acme"})
    start(registry)
    assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
    assert seen == ["acme"]


async def test_push_many_raises_one_pushed_event_per_job(app: App) -> None:
    registry = app.registry()
    pushed: list[str] = []
    registry.hook("pushed")(lambda event: pushed.append(event.job_id))

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    ids = await registry.push_many("q", "item", [Item(1), Item(2), Item(3)])
    assert pushed == ids


@pytest.mark.needs("unique")
async def test_a_push_whose_unique_key_is_held_stores_nothing_and_raises_no_pushed_event(
    app: App,
) -> None:
    registry = app.registry()
    pushed: list[str] = []
    registry.hook("pushed")(lambda event: pushed.append(event.job_id))

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    first = await registry.push("q", "item", Item(1), unique="k")
    assert await registry.push("q", "item", Item(2), unique="k") == first
    other = await registry.push("q", "item", Item(3), unique="other")
    assert pushed == [first, other]


def test_an_unknown_event_is_refused(app: App) -> None:
    from conveyor.errors import ConfigError

    registry = app.registry()
    with pytest.raises(ConfigError, match="no lifecycle event is called 'finished'"):
        registry.hook("finished")(lambda event: None)


@pytest.mark.parametrize("now", [False, True], ids=["stop", "stop-now"])
async def test_a_hook_that_hangs_on_an_outcome_is_cut_short_by_the_stop(
    app: App, start, caplog: pytest.LogCaptureFixture, now: bool
) -> None:
    # Before, the settler awaited it for ever: the worker never stopped, not even at once.
    registry = app.registry(stop_timeout=0.5)
    told = asyncio.Event()

    @registry.hook("succeeded")
    async def hangs(event: Event) -> None:
        told.set()
        await asyncio.Event().wait()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None: ...

    job_id = await registry.push("q", "item", Item(0))
    running = start(registry)
    await asyncio.wait_for(told.wait(), 10)
    with caplog.at_level(logging.ERROR, logger="conveyor.worker"):
        await running.stop(now=now)  # fails after 10 s while the hook holds it
    assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED
    assert running.worker.counts.succeeded == 1
    assert (
        f"a lifecycle hook still ran as the worker stopped: cut short (the outcomes of {job_id}"
        in caplog.text
    )


@pytest.mark.parametrize("kind", ["worker_started", "worker_stopped"])
async def test_a_worker_hook_that_hangs_is_cut_short(
    app: App, start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Before, the worker waited for it for ever: it never started working, or never returned.
    monkeypatch.setattr(conveyor.hooks, "WORKER_HOOKS_WITHIN", 0.5)
    registry = app.registry()

    @registry.hook(kind)
    async def hangs(event: Event) -> None:
        await asyncio.Event().wait()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None: ...

    job_id = await registry.push("q", "item", Item(0))
    with caplog.at_level(logging.ERROR, logger="conveyor.hooks"):
        running = start(registry)
        assert (await settle(registry, job_id)).state is JobState.SUCCEEDED
        await running.stop()
    assert f"a {kind} hook of worker {running.worker.identity} ran past 0.5s" in caplog.text
