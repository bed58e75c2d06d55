"""Plain handlers run on conveyor's own daemon threads, never more than the worker's
concurrency, and a job keeps its slot while its handler's thread runs, whatever happens to
its lease."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.base import Reservation
from conveyor.drivers.memory import MemoryDriver
from conveyor.threads import HandlerThreads


async def test_threads_are_daemons_and_never_more_than_their_size() -> None:
    threads = HandlerThreads(2, "test")
    let_go = threading.Event()
    names: set[str] = set()

    def work(n: int) -> int:
        names.add(threading.current_thread().name)
        assert threading.current_thread().daemon
        let_go.wait(5)
        return n * 2

    calls = [threads.submit(work, n) for n in range(5)]
    await asyncio.sleep(0.1)
    assert sum(call.running for call in calls) == 2  # the other three wait their turn
    let_go.set()
    await asyncio.wait_for(asyncio.gather(*(call.finished for call in calls)), 5)
    assert [call.result() for call in calls] == [0, 2, 4, 6, 8]
    assert len(names) == 2
    threads.close()


async def test_a_call_cancelled_before_a_thread_takes_it_never_runs() -> None:
    threads = HandlerThreads(1, "test")
    let_go, ran = threading.Event(), []
    busy = threads.submit(lambda _: let_go.wait(5), None)
    queued = threads.submit(ran.append, "queued")
    assert queued.cancel()
    let_go.set()
    await asyncio.wait_for(busy.finished, 5)
    await asyncio.sleep(0.05)
    assert ran == [] and not busy.cancel()  # a call that ran cannot be cancelled
    threads.close()


async def test_the_handlers_exception_comes_back_to_the_loop() -> None:
    threads = HandlerThreads(1, "test")

    def fail(_: Any) -> None:
        raise KeyError("boom")

    call = threads.submit(fail, None)
    await asyncio.wait_for(call.finished, 5)
    with pytest.raises(KeyError, match="boom"):
        call.result()
    threads.close()


class LosingDriver(MemoryDriver):
    """While `losing`, every renewal finds the lease taken over, as after a long outage; counts
    them. Marking a rescued job to run alone works as on the memory driver."""

    def __init__(self) -> None:
        super().__init__()
        self.renewed: list[str] = []
        self.losing = True

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        if alone or not self.losing:
            return await super().renew(reservations, lease, alone=alone)
        self.renewed += [r.id for r in reservations]
        return set()


async def test_a_lost_lease_does_not_free_the_slot_of_a_running_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = LosingDriver()
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=1, lease=0.2, poll_interval=0.01)
    started, let_go = threading.Event(), threading.Event()
    ran: list[str] = []

    @registry.job("hold")
    def hold(job: Job[dict[str, Any]]) -> None:
        started.set()
        let_go.wait(10)
        ran.append("hold")

    @registry.job("next")
    def after(job: Job[dict[str, Any]]) -> None:
        ran.append("next")

    held = await registry.push("q", "hold", {})
    caplog.set_level(logging.WARNING, "conveyor.worker")
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.to_thread(started.wait, 5)
    waiting = await registry.push("q", "next", {})
    async with asyncio.timeout(5):
        while "its slot stays taken" not in caplog.text:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # several renewal periods
    assert driver.renewed == [held]  # not renewed again once lost
    assert ran == [] and worker.running == 1  # concurrency 1: "next" waits for the thread
    assert (await registry.job_info(waiting)).state is JobState.PENDING
    driver.losing = False  # the outage is over: "next" keeps its lease however slowly it runs
    let_go.set()
    async with asyncio.timeout(5):
        while (await registry.job_info(waiting)).state is not JobState.SUCCEEDED:
            await asyncio.sleep(0.01)
    # The lost lease ran out in storage, so "hold" may run again once its slot is free
    # (at-least-once); "next" never ran while the first thread held the slot.
    assert ran[0] == "hold" and "next" in ran
    worker.stop()
    await asyncio.wait_for(task, 5)
