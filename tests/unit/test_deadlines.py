"""Job timeouts on one timer per worker behave as `asyncio.timeout`: each job is cancelled at
its own deadline whatever the others' timeouts, a cancellation from elsewhere stays a
cancellation, and a job that ends in time is never touched."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.deadlines import Deadlines


async def _sleep_within(deadlines: Deadlines, timeout: float | None, sleep: float) -> float:
    """Seconds until the sleep was cut by its deadline; raises if it was not."""
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.within(timeout):
        await asyncio.sleep(sleep)
    return time.monotonic() - started


async def test_each_job_ends_at_its_own_deadline_whatever_the_others() -> None:
    deadlines = Deadlines()
    long = asyncio.create_task(_sleep_within(deadlines, 0.6, 5))
    await asyncio.sleep(0.01)  # the timer is set for the long one first
    short = asyncio.create_task(_sleep_within(deadlines, 0.1, 5))
    same = [asyncio.create_task(_sleep_within(deadlines, 0.3, 5)) for _ in range(3)]
    assert 0.09 <= await short < 0.3
    assert all(0.29 <= took < 0.55 for took in await asyncio.gather(*same))
    assert 0.58 <= await long < 1.0


async def test_a_job_that_ends_in_time_is_left_alone() -> None:
    deadlines = Deadlines()
    with deadlines.within(0.05) as deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # past the deadline: nothing cancels this task now
    assert not deadline.expired()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_no_timeout_never_expires() -> None:
    with Deadlines().within(None) as deadline:
        await asyncio.sleep(0.05)
    assert not deadline.expired()


async def test_a_handlers_own_timeout_error_is_not_the_deadlines() -> None:
    deadlines = Deadlines()
    with pytest.raises(TimeoutError, match="its own") as caught, deadlines.within(5) as deadline:
        raise TimeoutError("its own")
    assert not deadline.expired() and caught.value.__cause__ is None


async def test_a_cancel_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines()

    async def run() -> None:
        with deadlines.within(0.05):
            try:
                await asyncio.sleep(5)
            finally:
                await asyncio.sleep(0.1)  # the deadline passes while it is being cancelled

    task = asyncio.create_task(run())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
