"""A worker stopped while its backend does not answer returns within stop_timeout plus the final
settle, itself given up after stop_timeout (docs/reliability.md, "Plain handlers, timeouts and
stopping"): every call still waiting on the backend then is cut at that deadline, whatever the
call's own `timeout`, and so is the last heartbeat.

Before, each call after the stop ran to its own deadline: the release in flight, the same
release tried once more, then the "stopping" heartbeat, one after the other. With stop_timeout
2 and timeout=3 a `conveyor work` process took 11 to 13 s to exit on postgres, mysql and redis
whose server was killed or frozen (SIGSTOP), and a plain handler's thread ran on long past its
job's lease, while another worker could take the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from conveyor import Job, JobState, Registry, Worker
from conveyor.drivers.base import Failure, Release, Reservation, WorkerCounts
from conveyor.drivers.memory import MemoryDriver
from conveyor.errors import BackendUnavailableError

#: What each call waits, once the backend is silent, before its own deadline fails it.
CALL_DEADLINE = 3.0
STOP_TIMEOUT = 0.5


class SilentDriver(MemoryDriver):
    """Once `silent`, every write waits CALL_DEADLINE seconds, then fails as a call past its
    deadline does; the jobs stay as they were."""

    def __init__(self) -> None:
        super().__init__()
        self.silent = False
        self.calls: list[str] = []

    async def _no_answer(self, what: str) -> None:
        self.calls.append(what)
        await asyncio.sleep(CALL_DEADLINE)
        raise BackendUnavailableError(f"no answer to {what} within {CALL_DEADLINE}s")

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        if self.silent:
            await self._no_answer("ack")
        return await super().ack(reservations)

    async def release(self, releases: Sequence[Release]) -> set[str]:
        if self.silent:
            await self._no_answer("release")
        return await super().release(releases)

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        if self.silent:
            await self._no_answer("fail")
        return await super().fail(failures)

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        if self.silent:
            await self._no_answer("renew")
        return await super().renew(reservations, lease, alone=alone)

    async def beat(self, identity: str, worker: str, *, stopping: bool = False) -> None:
        if self.silent:
            await self._no_answer("beat")
        await super().beat(identity, worker, stopping=stopping)

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        if self.silent:
            await self._no_answer("record_stats")
        await super().record_stats(worker, counts)


async def test_a_stop_while_the_backend_is_silent_returns_within_stop_timeout_twice() -> None:
    driver = SilentDriver()
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"])
    registry.worker("w", concurrency=2, stop_timeout=STOP_TIMEOUT, poll_interval=0.01)
    started = asyncio.Event()

    @registry.job("long")
    async def long(job: Job[dict[str, Any]]) -> None:
        started.set()
        await asyncio.sleep(60)

    ids = [await registry.push("q", "long", {}) for _ in range(2)]
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    while worker.running < 2:
        await asyncio.sleep(0.01)
    driver.silent = True
    stopping = time.monotonic()
    worker.stop()
    stopped = await asyncio.wait_for(task, 30)
    took = time.monotonic() - stopping
    # stop_timeout for the jobs, as long again (at least 1 s) for the release and the
    # heartbeat, and a margin; before, 3 calls' deadlines more (10.5 s).
    assert took < STOP_TIMEOUT + max(STOP_TIMEOUT, 1.0) + 0.5, (took, driver.calls)
    assert sorted(stopped.released) == sorted(ids)
    # Nothing was written: the jobs are still reserved, and run again after their lease.
    driver.silent = False
    for job_id in ids:
        info = await registry.job_info(job_id)
        assert info is not None and info.state is JobState.RESERVED
    await registry.close()
