"""Handlers that misbehave in ways beyond raising an Exception: the job is still settled with
the reason and the worker carries on."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conveyor import Job, JobState
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Item:
    n: int


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()], ids=repr)
@pytest.mark.parametrize("plain", [False, True], ids=["async", "plain"])
@needs("lookup")
async def test_handler_raising_system_exit_or_keyboard_interrupt_fails_the_job_only(
    app: App, start, raised: BaseException, plain: bool
) -> None:
    registry = app.registry()

    def bail(job: Job[Item]) -> None:
        raise raised

    async def bail_async(job: Job[Item]) -> None:
        raise raised

    @registry.job("ok")
    async def ok(job: Job[Item]) -> None: ...

    registry.job("bail", retry=0, payload=Item)(bail if plain else bail_async)
    bad = await registry.push("q", "bail", Item(1))
    running = start(registry)
    info = await settle(registry, bad)
    assert info.state is JobState.FAILED
    assert info.error.type == type(raised).__name__
    good = await registry.push("q", "ok", Item(2))
    assert (await settle(registry, good)).state is JobState.SUCCEEDED
    await running.stop()


async def test_handler_raising_cancelled_error_itself_counts_as_a_failed_attempt(
    app: App, start
) -> None:
    registry = app.registry()
    calls = 0

    @registry.job("cancels", retry=1, retry_delay=0)
    async def cancels(job: Job[Item]) -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError  # e.g. an awaited future that someone else cancelled

    job_id = await registry.push("q", "cancels", Item(1))
    start(registry)
    info = await settle(registry, job_id, timeout=5)
    assert info.state is JobState.FAILED
    assert (info.attempt, calls) == (2, 2)
    assert info.error.type == "asyncio.exceptions.CancelledError"


def traced(handler: Callable[[Job[Any]], Any]) -> Callable[[Job[Any]], Any]:
    """A decorator as tracing libraries write them: a plain function around the handler."""

    @functools.wraps(handler)
    def wrapper(job: Job[Any]) -> Any:
        return handler(job)

    return wrapper


@needs("lookup")
async def test_handler_that_swallows_its_timeout_still_fails_as_timed_out(app: App, start) -> None:
    # Cancelled at its timeout, it catches the CancelledError and returns: the attempt still
    # ran past its timeout, and is recorded so, not as a success.
    registry = app.registry()
    caught: list[int] = []

    @registry.job("stubborn", retry=1, timeout=0.3)
    async def stubborn(job: Job[Item]) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            caught.append(job.attempt)
            await asyncio.sleep(0.1)  # carries on after the cancel
        return "done"

    job_id = await registry.push("q", "stubborn", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert (info.state, caught) == (JobState.FAILED, [1, 2])
    assert info.error.type == "conveyor.errors.JobTimeoutError"


@needs("lookup")
async def test_async_handler_behind_a_plain_decorator_is_awaited(app: App, start) -> None:
    registry = app.registry()
    seen: list[int] = []

    @registry.job("traced", retry=0)
    @traced
    async def handle(job: Job[Item]) -> None:
        await asyncio.sleep(0)
        seen.append(job.payload.n)
        if job.payload.n == 2:
            raise ValueError("two")

    first = await registry.push("q", "traced", Item(1))
    second = await registry.push("q", "traced", Item(2))
    start(registry)
    assert (await settle(registry, first)).state is JobState.SUCCEEDED
    info = await settle(registry, second)
    assert info.state is JobState.FAILED and info.error.type == "ValueError"
    assert sorted(seen) == [1, 2]
