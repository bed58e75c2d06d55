"""Lifecycle hooks where jobs run without a worker's loops: the sync driver (inside each push),
`conveyor.testing`'s `use_sync` and `use_memory(...).run_all()`; and the decorator's forms."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from conveyor import Job, Registry, Worker
from conveyor import metrics as conveyor_metrics
from conveyor.hooks import Event
from conveyor.testing import use_memory, use_sync


def make_registry() -> Registry:
    registry = Registry(default_driver="sync")
    registry.queue("q", workers=["w"], retry=1, retry_delay=0.0)
    registry.worker("w")
    return registry


def flaky(registry: Registry) -> None:
    @registry.job("flaky")
    async def handler(job: Job[dict[str, int]]) -> None:
        if job.attempt == 1:
            raise ValueError("first attempt fails")


async def test_the_sync_driver_tells_started_before_each_attempt() -> None:
    # Before, the inline run called the runner directly: no "started" event, so a hook never
    # saw an attempt begin and conveyor_job_wait_seconds stayed empty under the sync driver.
    registry = make_registry()
    flaky(registry)
    events: list[Event] = []
    registry.hook()(events.append)
    metrics = conveyor_metrics.install(registry)

    job_id = await registry.push("q", "flaky", {"n": 1})

    assert [(e.kind, e.attempt) for e in events] == [
        ("pushed", 0), ("started", 1), ("retried", 1), ("started", 2), ("succeeded", 2),
    ]  # fmt: skip
    assert {e.job_id for e in events} == {job_id}
    started = [e for e in events if e.kind == "started"]
    assert all(e.wait is not None and e.wait >= 0 and e.worker for e in started)
    text = (await metrics.exposition()).decode()
    assert 'conveyor_job_wait_seconds_count{job="flaky",queue="q"} 2.0' in text
    assert 'conveyor_job_run_seconds_count{job="flaky",queue="q"} 2.0' in text
    await registry.close()


Helper = Callable[[Registry], AbstractContextManager[Any]]


@pytest.mark.parametrize("helper", [use_sync, use_memory], ids=["use_sync", "use_memory"])
async def test_conveyor_testing_tells_started_before_each_attempt(helper: Helper) -> None:
    registry = make_registry()
    flaky(registry)
    kinds: list[str] = []
    registry.hook("started", "retried", "succeeded")(lambda event: kinds.append(event.kind))
    with helper(registry) as queues:
        await registry.push("q", "flaky", {"n": 1})
        if helper is use_memory:
            await queues.run_all()
    assert kinds == ["started", "retried", "started", "succeeded"]
    await registry.close()


async def test_hook_without_parentheses_is_called_for_every_event() -> None:
    # Before, `@registry.hook` (no parentheses, as `@registry.middleware` is written) took the
    # function for an event's name: nothing was registered, and the name was bound to the
    # decorator's inner function, without a word.
    registry = make_registry()
    flaky(registry)
    seen: list[str] = []

    @registry.hook
    def record(event: Event) -> None:
        seen.append(event.kind)

    await registry.push("q", "flaky", {"n": 1})
    assert seen == ["pushed", "started", "retried", "started", "succeeded"]
    assert record.__name__ == "record"  # the function itself, still callable by its name
    await registry.close()


async def test_a_hook_that_raises_is_named_with_the_job_or_worker_it_was_told_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, a worker event's line read "hook <function ...> raised on worker_started of job "
    # (a job with no id): whose error it was, and about what, was left to guess.
    registry = Registry(default_driver="memory://")
    registry.queue("q", workers=["w"])
    registry.worker("w", poll_interval=0.01)

    @registry.job("item")
    async def item(job: Job[dict[str, int]]) -> None: ...

    @registry.hook("pushed", "worker_started")
    def broken(event: Event) -> None:
        raise RuntimeError("the hook's own fault")

    with caplog.at_level(logging.ERROR, logger="conveyor.hooks"):
        job_id = await registry.push("q", "item", {"n": 1})
        worker = Worker(registry, "w", burst=True)
        await worker.run()
    lines = [r.getMessage() for r in caplog.records]
    where = "test_a_hook_that_raises_is_named_with_the_job_or_worker_it_was_told_of.<locals>"
    assert lines == [
        f"lifecycle hook {where}.broken raised on pushed of job {job_id} (item) (ignored: the"
        " job and the worker go on)",
        f"lifecycle hook {where}.broken raised on worker_started of worker {worker.identity}"
        " (ignored: the job and the worker go on)",
    ]
    assert all(r.exc_text and "the hook's own fault" in r.exc_text for r in caplog.records)
    assert worker.counts.succeeded == 1
    await registry.close()


async def test_a_hook_naming_an_event_twice_is_called_once_for_it() -> None:
    # Before, each name added the hook again: registry.hook(*ALERTS, "failed") with "failed"
    # among ALERTS was called twice for every failure (an alert sent twice).
    registry = make_registry()
    flaky(registry)
    seen: list[str] = []
    registry.hook("retried", "succeeded", "retried")(lambda event: seen.append(event.kind))
    await registry.push("q", "flaky", {"n": 1})
    assert seen == ["retried", "succeeded"]
    await registry.close()
