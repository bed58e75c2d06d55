"""A handler decides for itself: `raise Retry(delay=...)` runs the job again after that delay
(not the queue's retry delay), counting the attempt; `raise Fail(...)` fails it at once, with
attempts left. On every driver."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from conveyor import ConfigError, Fail, Job, JobState, Registry, Retry
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


async def _ran(registry: Registry, start: Any, name: str, payload: Item) -> Any:
    """Push job `name` to queue "q", run a worker until it finished; its record."""
    job_id = await registry.push("q", name, payload)
    running = start(registry)
    info = await settle(registry, job_id)
    await running.stop()
    return info


@needs("lookup")
async def test_retry_runs_the_job_again_after_the_delay_it_asks_for(app: App, start) -> None:
    registry = app.registry(retry=3, retry_delay=30)  # the queue's own delay would outlast the test
    started: list[float] = []

    @registry.job("flaky")
    async def flaky(job: Job[Item]) -> None:
        started.append(time.monotonic())
        if job.attempt == 1:
            raise Retry("rate limited", delay=0.5)

    info = await _ran(registry, start, "flaky", Item(1))
    assert info.state is JobState.SUCCEEDED
    assert info.attempt == 2
    assert started[1] - started[0] >= 0.4  # never early (the backend's clock; a little slack)
    [first] = info.errors
    assert first.attempt == 1
    assert first.error.type == "conveyor.retry.Retry"
    assert first.error.message == "rate limited"


@needs("lookup")
async def test_retry_on_the_last_attempt_fails_the_job(app: App, start) -> None:
    registry = app.registry(retry=1, retry_delay=30)

    @registry.job("again")
    async def again(job: Job[Item]) -> None:
        raise Retry(delay=0)

    info = await _ran(registry, start, "again", Item(1))
    assert info.state is JobState.FAILED
    assert info.attempt == 2
    assert info.error.message == "the handler asked to run it again after 0s"


@pytest.mark.parametrize("plain", [False, True], ids=["async", "plain"])
async def test_fail_fails_the_job_at_once_with_attempts_left(app: App, start, plain: bool) -> None:
    registry = app.registry(retry=5, retry_delay=0)

    def declined(job: Job[Item]) -> None:
        raise Fail(f"card {job.payload.n} declined")

    async def declined_async(job: Job[Item]) -> None:
        declined(job)

    registry.job("charge", payload=Item)(declined if plain else declined_async)
    info = await _ran(registry, start, "charge", Item(7))
    assert info.state is JobState.FAILED
    assert info.attempt == 1
    assert info.error.type == "conveyor.retry.Fail"
    assert info.error.message == "card 7 declined"


def test_a_retry_delay_out_of_range_is_refused_where_it_is_raised() -> None:
    with pytest.raises(ConfigError, match=r"Retry\(delay=\) must be"):
        Retry(delay=-1)


async def _in_task_group(error: BaseException) -> None:
    """Raise `error` from a task of an asyncio.TaskGroup, which raises it in an ExceptionGroup."""

    async def child() -> None:
        raise error

    async with asyncio.TaskGroup() as group:
        group.create_task(child())


@needs("lookup")
async def test_fail_inside_a_task_group_fails_the_job_at_once(app: App, start) -> None:
    # Before, the ExceptionGroup a TaskGroup raises hid the Fail: the job was retried.
    registry = app.registry(retry=5, retry_delay=0)

    @registry.job("charge")
    async def charge(job: Job[Item]) -> None:
        await _in_task_group(Fail(f"card {job.payload.n} declined"))

    info = await _ran(registry, start, "charge", Item(7))
    assert info.state is JobState.FAILED
    assert info.attempt == 1
    assert info.error.type == "ExceptionGroup"
    # What the task raised, in the message the log line, `conveyor failed list` and the
    # dashboard show (before: only "unhandled errors in a TaskGroup (1 sub-exception)").
    assert info.error.message == (
        "unhandled errors in a TaskGroup (1 sub-exception): conveyor.retry.Fail: card 7 declined"
    )


class Throttled(Retry):
    delay = 0.5  # the default of its instances


class Later(Retry):
    def __init__(self) -> None:
        super().__init__("later")
        self.delay = timedelta(seconds=0.5)  # set after it was made: never checked there


async def _from_a_task_group() -> None:
    await _in_task_group(Retry("rate limited", delay=0.5))


async def _throttled() -> None:
    raise Throttled()


async def _later() -> None:
    raise Later()


@needs("lookup")
@pytest.mark.parametrize(
    "retry_it",
    [_from_a_task_group, _throttled, _later],
    ids=["task-group", "class-default", "set-after"],
)
async def test_a_retry_in_other_forms_waits_the_delay_it_asks_for(
    app: App, start, retry_it: Callable[[], Awaitable[None]]
) -> None:
    # Before, the ExceptionGroup a TaskGroup raises hid the Retry, and Throttled's class
    # attribute was overwritten with None: both waited the queue's retry delay (30 s). Later's
    # timedelta reached the driver, which could not write it: the job was failed for good
    # with a DriverError, attempts left.
    registry = app.registry(retry=3, retry_delay=30)
    started: list[float] = []

    @registry.job("flaky")
    async def flaky(job: Job[Item]) -> None:
        started.append(time.monotonic())
        if job.attempt == 1:
            await retry_it()

    info = await _ran(registry, start, "flaky", Item(1))
    assert info.state is JobState.SUCCEEDED
    assert info.attempt == 2
    assert started[1] - started[0] >= 0.4


@needs("lookup")
async def test_a_plain_handler_s_retry_and_fail_are_logged_and_told_as_they_were(
    app: App, start, caplog: pytest.LogCaptureFixture
) -> None:
    registry = app.registry(retry=5, retry_delay=30)
    told: list[tuple[str, str | None]] = []
    registry.hook("retried", "failed")(
        lambda event: told.append((event.kind, event.error and event.error.type))
    )

    @registry.job("sync.call")
    def call(job: Job[Item]) -> None:  # runs on a thread
        if job.attempt == 1:
            raise Retry("rate limited", delay=timedelta(seconds=0.5))
        raise Fail("gone")

    caplog.set_level(logging.INFO, "conveyor.worker")
    info = await _ran(registry, start, "sync.call", Item(1))
    assert (info.state, info.attempt) == (JobState.FAILED, 2)
    assert told == [("retried", "conveyor.retry.Retry"), ("failed", "conveyor.retry.Fail")]
    lines = [r.getMessage() for r in caplog.records if getattr(r, "id", None) == info.id]
    assert "attempt 1 of 6 failed, retrying in 0.5s: conveyor.retry.Retry: rate limited" in lines[0]
    assert "failed for good after attempt 2: conveyor.retry.Fail: gone" in lines[1]
