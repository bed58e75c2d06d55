"""wait: it returns at its timeout when nothing is pushed, and soon after a push, or a release
or retry that makes a job due now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from conveyor.drivers.base import Driver

from .helpers import (
    LONG_LEASE,
    Storage,
    failure_of,
    make_job,
    push_and_reserve,
    release_of,
    reservation,
)

#: A timeout that makes "returned soon" and "returned at the timeout" impossible to confuse.
LONG_WAIT = 5.0
SOON = 2.0  # generous for a loaded machine, and still far short of LONG_WAIT
SHORT_WAIT = 0.2


async def idle_worker_loop_step(driver: Driver) -> None:
    """What a worker does before it waits: a reserve that finds nothing."""
    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []


async def started(task: asyncio.Task[None]) -> None:
    """Yield to the loop until the task is suspended inside its await."""
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()


def notified(pair: tuple[Driver, Driver], changes: str) -> tuple[Driver, Driver]:
    """`pair` (waiting side first), or a skip where the driver has no notify capability: then
    only its own `changes` wake its wait."""
    if not pair[0].capabilities.notify:
        pytest.skip(f"{pair[0].kind} has no notify capability: only its own {changes} wake it")
    return pair


async def test_wait_returns_after_timeout_when_nothing_is_pushed(driver: Driver) -> None:
    await idle_worker_loop_step(driver)
    begin = time.monotonic()

    await driver.wait(["q"], SHORT_WAIT)

    assert SHORT_WAIT * 0.75 <= time.monotonic() - begin < SHORT_WAIT + SOON


async def test_wait_returns_soon_after_push_in_concurrent_task(driver: Driver) -> None:
    await idle_worker_loop_step(driver)
    begin = time.monotonic()
    waiter = asyncio.create_task(driver.wait(["q"], LONG_WAIT))
    await started(waiter)

    await driver.push(make_job())

    await asyncio.wait_for(waiter, LONG_WAIT + SOON)
    assert time.monotonic() - begin < SOON


async def test_wait_wakes_on_a_push_after_the_driver_is_opened_again_on_another_loop(
    storage: Storage,
) -> None:
    """A driver closed and opened again on a new event loop (a web application's lifespan run
    a second time, as each `with TestClient(app)` does) still wakes its wait on a push."""
    driver = storage.connect()

    async def one_run() -> float:
        await driver.open()
        try:
            await idle_worker_loop_step(driver)
            begin = time.monotonic()
            waiter = asyncio.create_task(driver.wait(["q"], LONG_WAIT))
            await started(waiter)
            await driver.push(make_job())
            await waiter
            took = time.monotonic() - begin
            [job] = await driver.reserve(["q"], 1, LONG_LEASE, "w1")
            assert await driver.ack([reservation(job)]) == {job.id}  # none left for the next
            return took
        finally:
            await driver.close()

    for _ in range(2):  # each run on a loop of its own, in a thread, as a test client does
        assert await asyncio.to_thread(asyncio.run, one_run()) < SOON


async def test_wait_returns_soon_after_push_many_in_concurrent_task(driver: Driver) -> None:
    await idle_worker_loop_step(driver)
    begin = time.monotonic()
    waiter = asyncio.create_task(driver.wait(["q"], LONG_WAIT))
    await started(waiter)

    await driver.push_many([make_job(), make_job()])

    await asyncio.wait_for(waiter, LONG_WAIT + SOON)
    assert time.monotonic() - begin < SOON


async def test_wait_returns_soon_after_push_made_since_last_reserve(driver: Driver) -> None:
    # A push between a worker's empty reserve and its wait must not be lost until the timeout.
    await idle_worker_loop_step(driver)
    await driver.push(make_job())
    begin = time.monotonic()

    await asyncio.wait_for(driver.wait(["q"], LONG_WAIT), LONG_WAIT + SOON)

    assert time.monotonic() - begin < SOON


async def test_wait_returns_soon_after_push_from_other_connection(
    driver_pair: tuple[Driver, Driver],
) -> None:
    waiting, pushing = notified(driver_pair, "pushes")
    await idle_worker_loop_step(waiting)
    begin = time.monotonic()
    waiter = asyncio.create_task(waiting.wait(["q"], LONG_WAIT))
    await started(waiter)

    await pushing.push(make_job())

    await asyncio.wait_for(waiter, LONG_WAIT + SOON)
    assert time.monotonic() - begin < SOON


async def quiet(driver: Driver) -> None:
    """An idle worker's reserve and a short wait, twice: a wake-up left over from the pushes
    before (a notification still on its way) is spent, so only what comes next can wake it."""
    for _ in range(2):
        await idle_worker_loop_step(driver)
        await driver.wait(["q"], SHORT_WAIT)
    await idle_worker_loop_step(driver)


async def woken_by(waiting: Driver, change: Callable[[], Awaitable[object]]) -> float:
    """Seconds from the start of `waiting`'s wait to its end, `change` made while it waits."""
    await quiet(waiting)
    begin = time.monotonic()
    waiter = asyncio.create_task(waiting.wait(["q"], LONG_WAIT))
    await started(waiter)
    await change()
    await asyncio.wait_for(waiter, LONG_WAIT + SOON)
    return time.monotonic() - begin


async def test_wait_returns_soon_after_release_in_concurrent_task(driver: Driver) -> None:
    # The job is held meanwhile, so the waiting worker's reserve finds nothing before.
    job = await push_and_reserve(driver)

    assert await woken_by(driver, lambda: driver.release([release_of(job)])) < SOON


async def test_wait_returns_soon_after_release_from_other_connection(
    driver_pair: tuple[Driver, Driver],
) -> None:
    waiting, releasing = notified(driver_pair, "releases")
    job = await push_and_reserve(releasing)

    assert await woken_by(waiting, lambda: releasing.release([release_of(job)])) < SOON


async def test_wait_returns_soon_after_retry_from_other_connection(
    driver_pair: tuple[Driver, Driver],
) -> None:
    waiting, retrying = notified(driver_pair, "retries")
    # Failed by the waiting side: on amqp a driver that reserved holds a consumer, which the
    # broker may hand the retried job to; the retrying side, as `conveyor failed retry`, has none.
    job = await push_and_reserve(waiting)
    assert await waiting.fail([failure_of(job)]) == {job.id}

    assert await woken_by(waiting, lambda: retrying.retry_failed("q")) < SOON
