"""Job timeouts on one timer per worker behave as `asyncio.timeout`: each job is cancelled at
its own deadline whatever the others' timeouts, a cancellation from elsewhere stays a
cancellation, and a job that ends in time is never touched. The Redis driver keeps every
command's deadline on the same timer: the cases from `call` on are its (the calls sleep where a
command would wait for Redis; tests/drivers/test_silent.py has the real server)."""

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


#: Seconds a deadline may fire late on a loaded machine.
SLACK = 0.5


async def call(deadlines: Deadlines, seconds: float, timeout: float) -> str:
    """A call that waits `seconds` (where a Redis command would wait for the server)."""
    with deadlines.within(timeout):
        await asyncio.sleep(seconds)
    return "done"


async def test_calls_in_time_finish_and_a_later_one_still_gets_its_own_deadline() -> None:
    deadlines = Deadlines()
    first = asyncio.create_task(call(deadlines, 0.2, 0.3))
    await asyncio.sleep(0.15)
    started = time.monotonic()
    second = asyncio.create_task(call(deadlines, 5, 0.3))

    assert await first == "done"  # the timer, due at its deadline, found it gone
    with pytest.raises(TimeoutError):
        await second
    assert 0.3 <= time.monotonic() - started < 0.3 + SLACK


async def test_every_call_past_its_deadline_is_cancelled_and_none_other() -> None:
    deadlines = Deadlines()
    slow = [asyncio.create_task(call(deadlines, 5, 0.2)) for _ in range(5)]
    quick = [asyncio.create_task(call(deadlines, 0.05, 0.2)) for _ in range(5)]

    outcomes = await asyncio.gather(*slow, *quick, return_exceptions=True)

    assert [type(outcome) for outcome in outcomes[:5]] == [TimeoutError] * 5
    assert outcomes[5:] == ["done"] * 5


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    task = asyncio.create_task(call(deadlines, 5, 5))
    await asyncio.sleep(0.05)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.in_flight() == 0


async def test_a_cancellation_from_outside_after_the_deadline_is_not_swallowed() -> None:
    deadlines = Deadlines()

    async def stubborn() -> None:
        with deadlines.within(0.1):
            try:
                await asyncio.sleep(5)
            finally:  # the deadline's cancel arrives here; an outside one comes on top
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await stubborn()


async def test_no_timer_is_left_once_no_call_is_in_flight() -> None:
    deadlines = Deadlines()
    assert await call(deadlines, 0, 0.1) == "done"
    assert deadlines._timer is not None  # due at that call's deadline

    await asyncio.sleep(0.1 + SLACK)

    assert deadlines._timer is None
    assert await call(deadlines, 0, 0.1) == "done"  # and the next call sets one again
    assert deadlines._timer is not None


def test_deadlines_follow_a_driver_onto_another_event_loop() -> None:
    deadlines = Deadlines()
    assert asyncio.run(call(deadlines, 0, 0.1)) == "done"

    with pytest.raises(TimeoutError):
        asyncio.run(call(deadlines, 5, 0.1))


async def test_jobs_that_end_in_time_leave_nothing_behind_whatever_their_timeouts() -> None:
    # Before: each distinct timeout (a per-push `timeout=`) left an empty map behind until the
    # timer next fired, which with long timeouts is hours of jobs: a map per job meanwhile.
    deadlines = Deadlines()
    for n in range(1000):
        with deadlines.within(3600 + n / 1000):
            await asyncio.sleep(0)
    assert deadlines.in_flight() == 0
    assert deadlines._by_timeout == {}
