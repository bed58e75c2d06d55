"""`shielded`, the way the postgres and mysql adapters run a call: its first step in the caller,
the rest in a task that a cancelled caller does not stop. The adapters' own tests
(test_cancelled_call_still_completes) show the same against the real servers."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.drivers.sql.shielded import shielded


async def test_work_that_never_waits_runs_whole_in_the_caller() -> None:
    caller = asyncio.current_task()
    ran_in: list[asyncio.Task[object] | None] = []

    async def work() -> int:
        ran_in.append(asyncio.current_task())
        return 7

    assert await shielded(work()) == 7
    assert ran_in == [caller]


async def test_first_step_runs_before_shielded_yields_and_the_rest_in_a_task() -> None:
    gate = asyncio.Event()
    steps: list[str] = []
    tasks: list[asyncio.Task[object] | None] = []

    async def work() -> str:
        steps.append("sent")
        tasks.append(asyncio.current_task())
        await gate.wait()
        tasks.append(asyncio.current_task())
        return "answer"

    call = asyncio.ensure_future(shielded(work()))
    await asyncio.sleep(0)
    assert steps == ["sent"]
    gate.set()

    assert await call == "answer"
    assert tasks[0] is call  # the first step: in the caller's task
    assert tasks[1] is not call and tasks[1] is not None  # the rest: a task of its own


async def test_a_cancelled_caller_stops_waiting_and_the_work_runs_to_its_end() -> None:
    gate = asyncio.Event()
    finished = asyncio.Event()

    async def work() -> None:
        await gate.wait()
        finished.set()

    call = asyncio.ensure_future(shielded(work()))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not finished.is_set()

    gate.set()
    await asyncio.wait_for(finished.wait(), 5)


async def test_an_error_of_the_work_reaches_the_caller_before_and_after_it_waits() -> None:
    async def fails_at_once() -> None:
        raise ValueError("first step")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("after waiting")

    with pytest.raises(ValueError, match="first step"):
        await shielded(fails_at_once())
    with pytest.raises(ValueError, match="after waiting"):
        await shielded(fails_later())
