"""The Redis driver's command deadlines (deadline.py): one timer for all calls in flight,
giving each what `asyncio.timeout` would. Plain asyncio, no server: the calls here sleep
where a command would wait for Redis (tests/drivers/test_silent.py has the real server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.drivers.redis.deadline import Deadlines

#: Seconds a deadline may fire late on a loaded machine.
SLACK = 0.5


async def call(deadlines: Deadlines, seconds: float) -> str:
    async with deadlines.call():
        await asyncio.sleep(seconds)
    return "done"


async def test_a_call_past_its_deadline_raises_timeout_error_on_time() -> None:
    deadlines = Deadlines(0.2)
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        await call(deadlines, 5)

    assert 0.2 <= time.monotonic() - started < 0.2 + SLACK
    assert not deadlines._calls


async def test_calls_in_time_finish_and_a_later_one_still_gets_its_own_deadline() -> None:
    deadlines = Deadlines(0.3)
    first = asyncio.create_task(call(deadlines, 0.2))
    await asyncio.sleep(0.15)
    started = time.monotonic()
    second = asyncio.create_task(call(deadlines, 5))

    assert await first == "done"  # the timer, due at its deadline, found it gone
    with pytest.raises(TimeoutError):
        await second
    assert 0.3 <= time.monotonic() - started < 0.3 + SLACK


async def test_every_call_past_its_deadline_is_cancelled_and_none_other() -> None:
    deadlines = Deadlines(0.2)
    slow = [asyncio.create_task(call(deadlines, 5)) for _ in range(5)]
    quick = [asyncio.create_task(call(deadlines, 0.05)) for _ in range(5)]

    outcomes = await asyncio.gather(*slow, *quick, return_exceptions=True)

    assert [type(outcome) for outcome in outcomes[:5]] == [TimeoutError] * 5
    assert outcomes[5:] == ["done"] * 5


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines(5)
    task = asyncio.create_task(call(deadlines, 5))
    await asyncio.sleep(0.05)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._calls


async def test_a_cancellation_from_outside_after_the_deadline_is_not_swallowed() -> None:
    deadlines = Deadlines(0.1)

    async def stubborn() -> None:
        async with deadlines.call():
            try:
                await asyncio.sleep(5)
            finally:  # the deadline's cancel arrives here; an outside one comes on top
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await stubborn()


async def test_no_timer_is_left_once_no_call_is_in_flight() -> None:
    deadlines = Deadlines(0.1)
    assert await call(deadlines, 0) == "done"
    assert deadlines._timer is not None  # due at that call's deadline

    await asyncio.sleep(0.1 + SLACK)

    assert deadlines._timer is None
    assert await call(deadlines, 0) == "done"  # and the next call sets one again
    assert deadlines._timer is not None


def test_deadlines_follow_a_driver_onto_another_event_loop() -> None:
    deadlines = Deadlines(0.1)
    assert asyncio.run(call(deadlines, 0)) == "done"

    with pytest.raises(TimeoutError):
        asyncio.run(call(deadlines, 5))
