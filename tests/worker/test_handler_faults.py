"""Handlers that misbehave in ways beyond raising an Exception: the job is still settled with
the reason and the worker carries on."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conveyor import Job, JobState
from conveyor.attempt import TRACEBACK_MAX
from conveyor.drivers.base import WorkerCounts
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


@needs("lookup")
async def test_async_handler_blocking_the_loop_past_its_timeout_fails_as_timed_out(
    app: App, start
) -> None:
    # Its timer cannot fire while the loop is blocked; before, the attempt then succeeded,
    # where a plain handler or one catching its cancel past the timeout failed as timed out.
    registry = app.registry()

    @registry.job("blocks", retry=0, timeout=0.2)
    async def blocks(job: Job[Item]) -> None:
        time.sleep(0.5)  # a blocking call in an async handler

    job_id = await registry.push("q", "blocks", Item(1))
    start(registry)
    info = await settle(registry, job_id)
    assert (info.state, info.error.type) == (JobState.FAILED, "conveyor.errors.JobTimeoutError")


class StrRaises(Exception):
    def __str__(self) -> str:
        raise StrRaises()  # the raise inside __str__ fails to print too


class StrNotText(Exception):
    def __str__(self) -> Any:
        return 42


class Surrogates(Exception):
    def __str__(self) -> str:
        return "read \udcff then \ud800"  # what surrogateescape leaves, and a lone one


class Megabyte(Exception):
    def __str__(self) -> str:
        return "body: " + "x" * (1 << 20)


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (StrRaises, "<exception str() failed>"),
        (StrNotText, "<exception str() failed>"),
        (Surrogates, "read \\udcff then \\ud800"),
        (Megabyte, "body: xxx"),
    ],
    ids=["str-raises", "str-not-text", "surrogates", "megabyte"],
)
@pytest.mark.parametrize("plain", [False, True], ids=["async", "plain"])
@needs("lookup")
async def test_exception_whose_text_cannot_be_kept_as_is_still_fails_its_job(
    app: App, start, raised: type[Exception], message: str, plain: bool
) -> None:
    # Before: str() raising ended the job's task unsettled (or recorded the __str__'s error as
    # an internal one), lone surrogates made every settle of the batch fail again and again,
    # and a megabyte of message blocked the event loop for half an hour.
    registry = app.registry(concurrency=3)

    def bad(job: Job[Item]) -> None:
        raise raised()

    async def bad_async(job: Job[Item]) -> None:
        raise raised()

    @registry.job("plain-failure", retry=0)
    async def plain_failure(job: Job[Item]) -> None:
        raise ValueError("an ordinary failure, settled beside the bad one")

    @registry.job("ok")
    async def ok(job: Job[Item]) -> None: ...

    registry.job("bad", retry=0, payload=Item)(bad if plain else bad_async)
    ids = [await registry.push("q", name, Item(1)) for name in ("bad", "plain-failure", "ok")]
    running = start(registry)
    bad_info, failure, good = [await settle(registry, job_id) for job_id in ids]
    assert (bad_info.state, failure.state, good.state) == (
        JobState.FAILED, JobState.FAILED, JobState.SUCCEEDED,
    )  # fmt: skip
    assert bad_info.error.type.endswith(raised.__name__)
    assert bad_info.error.message.startswith(message)
    assert len(bad_info.error.message) <= TRACEBACK_MAX + 100  # the cut's own line
    assert len(bad_info.error.traceback) <= TRACEBACK_MAX + 100
    await running.stop()
    assert running.worker.counts == WorkerCounts(processed=3, succeeded=1, failed=2)


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
