"""An outcome the backend refuses, every time, holds back no other (settle.py): the outcomes
batched with it are written one by one, and it is written as a failure of its job naming the
refusal; a failure refused as well is given up, its job left to come back after its lease.
On the memory driver, its writes refused for one job."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.base import Failure, Reservation
from conveyor.drivers.memory import MemoryDriver
from conveyor.errors import DriverError


class RefusingDriver(MemoryDriver):
    """Refuses every ack that holds the poison job (and its failure too, if told to), as a
    backend refuses a value it cannot store."""

    def __init__(self, *, refuse_failure: bool = False) -> None:
        super().__init__()
        self.poison = ""
        self.refuse_failure = refuse_failure
        self.refusals = 0

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        if any(r.id == self.poison for r in reservations):
            self.refusals += 1
            raise DriverError("value too long for column result")
        return await super().ack(reservations)

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        if self.refuse_failure and any(f.id == self.poison for f in failures):
            self.refusals += 1
            raise DriverError("no room for this error")
        return await super().fail(failures)


async def run_together(
    driver: RefusingDriver, *, until_refusals: int = 0
) -> tuple[Registry, list[str], Worker]:
    """Four jobs finishing together (one batch of acks), the last one the poison; a burst
    worker runs them to the end, or a worker until the driver refused that many writes."""
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"], retry=0)
    registry.worker("w", concurrency=4, poll_interval=0.01, lease=60)
    go = asyncio.Event()

    @registry.job("j")
    async def j(job: Job[dict[str, Any]]) -> None:
        await go.wait()

    ids = [await registry.push("q", "j", {"n": n}) for n in range(4)]
    driver.poison = ids[-1]
    worker = Worker(registry, "w", burst=not until_refusals)
    task = asyncio.create_task(worker.run())
    while worker.running < 4:
        await asyncio.sleep(0.01)
    go.set()
    if until_refusals:
        while driver.refusals < until_refusals:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # no more refusals come: the failure was given up
        worker.stop()
    await asyncio.wait_for(task, 10)  # before: the batch was refused for ever
    return registry, ids, worker


async def test_an_outcome_refused_every_time_fails_its_job_and_holds_back_no_other() -> None:
    driver = RefusingDriver()
    registry, ids, worker = await run_together(driver)

    for job_id in ids[:-1]:
        assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    poison = await registry.job_info(ids[-1])
    assert poison is not None and poison.state is JobState.FAILED
    assert poison.error is not None
    assert "could not write this attempt's outcome (ack)" in poison.error.message
    assert "value too long for column result" in poison.error.message
    assert driver.refusals == 4  # once in the batch, three times alone
    assert (worker.counts.succeeded, worker.counts.failed) == (3, 1)


async def test_a_failure_refused_as_well_is_given_up_and_its_job_stays_reserved() -> None:
    driver = RefusingDriver(refuse_failure=True)
    # The ack refused once in the batch and three times alone, then the failure three times.
    registry, ids, worker = await run_together(driver, until_refusals=7)

    for job_id in ids[:-1]:
        assert (await registry.job_info(job_id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    poison = await registry.job_info(ids[-1])
    assert poison is not None and poison.state is JobState.RESERVED  # back after its lease
    assert (
        driver.refusals == 7
    )  # the ack once in the batch and three times alone, the failure three
    assert worker.counts.succeeded == 3


async def test_a_failure_given_up_leaves_no_trace_of_its_job_in_the_settler() -> None:
    # Before: the job's id stayed in the settler's `_unanswered` for the worker's life, one
    # more per job given up, and every later settle looked its outcomes up in it.
    driver = RefusingDriver(refuse_failure=True)
    *_, worker = await run_together(driver, until_refusals=7)

    settler = worker.settler
    assert (settler._unanswered, settler._alone, settler._replaced) == (set(), {}, set())
    assert settler._telling == {}
