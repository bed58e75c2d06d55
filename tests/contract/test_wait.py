"""wait: it returns at its timeout when nothing is pushed, and soon after a push."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.drivers.base import Driver

from .helpers import LONG_LEASE, Storage, make_job, reservation

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
    waiting, pushing = driver_pair
    if not waiting.capabilities.notify:
        pytest.skip(f"{waiting.kind} has no notify capability: only its own pushes wake it")
    await idle_worker_loop_step(waiting)
    begin = time.monotonic()
    waiter = asyncio.create_task(waiting.wait(["q"], LONG_WAIT))
    await started(waiter)

    await pushing.push(make_job())

    await asyncio.wait_for(waiter, LONG_WAIT + SOON)
    assert time.monotonic() - begin < SOON
