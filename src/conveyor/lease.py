"""Leases: keeping the jobs a worker holds, and letting go of those it must.

Every lease/2 the worker renews the lease of every job it holds (running, rescued and waiting
to run alone, or finished with its outcome not written yet); a running job whose lease was
taken over is stopped, since another worker runs it now. At the same renewal it asks which
of them someone cancelled, and stops those. Before it runs a rescued job alone it marks the job
alone, so that a death now is charged to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.attempt import Outcome, cancelled
from conveyor.drivers.base import Driver, Reservation
from conveyor.errors import DriverError
from conveyor.job import JobInfo
from conveyor.settle import by_driver, token

if TYPE_CHECKING:
    from conveyor.attempt import Runner
    from conveyor.settle import Settler
    from conveyor.spec import WorkerSpec

log = logging.getLogger("conveyor.worker")

__all__ = ["Held", "Leases"]


@dataclass(slots=True)
class Held:
    """A reserved job this worker holds: running in `task` (since `started`, monotonic), or
    not started yet (no task): a rescued job waiting to run alone, or a job waiting for a
    slot (prefetched). Either way its lease is renewed."""

    job: JobInfo
    driver: Driver
    task: asyncio.Task[None] | None = None
    started: float = 0.0
    #: Why we cancelled the task ourselves: "stop" (shutdown) or "lost" (lease taken over).
    cancel_reason: str | None = None


class Leases:
    """The worker's part that renews leases, learns of cancels and marks jobs alone."""

    spec: WorkerSpec
    runner: Runner
    settler: Settler
    _running: dict[str, Held]
    _rescued: deque[Held]
    _slot_freed: asyncio.Event

    async def _renew_loop(self) -> None:
        # Every lease/2; after a failure, again soon (a tenth of the lease), so that one lost
        # round trip does not let the leases of running jobs run out.
        pause = self.spec.lease / 2
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(pause)
            self._warn_if_blocked(time.monotonic() - asleep)
            try:
                renewed = await self.renew()
            except Exception:  # never let a fault end renewal: leases would lapse
                log.exception("renewing leases failed; will try again")
                renewed = False
            pause = self.spec.lease / 2 if renewed else self.spec.lease / 10

    def _warn_if_blocked(self, slept: float) -> None:
        """Leases run out unrenewed while the event loop is blocked (time.sleep or CPU-bound
        work in an async def): other workers may then be running the same jobs."""
        if slept <= self.spec.lease:
            return
        log.warning(
            "the event loop was blocked for %.1fs, longer than the lease (%gs): the leases of "
            "the jobs running then ran out, so another worker may run them too; an async def "
            "handler must not block (time.sleep, CPU-bound work, a blocking client): await "
            "instead, or make it a plain def, which runs in a thread; nor may a lifecycle hook, "
            "plain def or async, which runs on the event loop: hand slow work to a task",
            slept, self.spec.lease,
        )  # fmt: skip

    async def renew(self) -> bool:
        """Extend the lease of every running job, and of every finished job whose outcome is
        not written yet; cancel any running job whose lease was taken over. False when a
        backend could not be reached."""
        # A lost job whose thread still runs keeps its slot, but there is no lease to renew.
        # A cancelled job whose plain handler still runs keeps its lease until the thread ends,
        # and so does one a stop cancelled whose handler goes on (it caught the cancel).
        held = [r for r in self._running.values() if r.cancel_reason != "lost"]
        # Finished jobs whose outcome is not written yet (behind a slow hook or write) are
        # ours still: a lapsed lease would let a reserve take them back and run them again.
        ids = {r.job.id for r in held}
        ours: list[Held | Outcome] = [*held]
        ours += [o for o in self.settler.unwritten() if o.job.id not in ids]
        reached = True
        for driver, group in by_driver(ours):
            try:
                kept = await driver.renew(
                    [Reservation(r.job.id, token(r.job)) for r in group], self.spec.lease
                )
            except DriverError as exc:
                log.warning("could not renew leases (%s); will try again", exc)
                reached = False
                continue
            running = [r for r in group if isinstance(r, Held)]
            for one in running:
                if one.job.id not in kept and self._running.get(one.job.id) is one:
                    self._lost(one)
            if driver.capabilities.control:
                await self._learn_cancels(driver, [r for r in running if r.job.id in kept])
        return reached

    async def _learn_cancels(self, driver: Driver, group: list[Held]) -> None:
        """Stop the running jobs someone cancelled (`registry.cancel`), at every renewal: an
        async handler's task is cancelled, a plain handler sees `job.cancelled`."""
        try:
            asked = await driver.cancelling([Reservation(r.job.id, token(r.job)) for r in group])
        except DriverError as exc:
            log.warning("could not ask which running jobs were cancelled (%s)", exc)
            return
        for running in group:
            if running.job.id in asked and running.cancel_reason is None:
                self._cancel(running)

    def _cancel(self, running: Held) -> None:
        log.info("job %s (%s): cancelled while running; stopping it", running.job.id,
                 running.job.name)  # fmt: skip
        running.cancel_reason = "cancel"
        self.runner.cancel(running.job.id)
        if running.task is None:  # held (rescued or prefetched): it never started
            del self._running[running.job.id]
            self.settler.add(cancelled(running.job, running.driver, "before it could run"))
            self._slot_freed.set()
        elif not self.runner.in_thread(running.job.id):
            running.task.cancel()

    def _lost(self, running: Held) -> None:
        running.cancel_reason = "lost"
        if running.task is None:  # held (rescued or prefetched): it never started
            log.warning("job %s: lease lost while it waited to run", running.job.id)
            del self._running[running.job.id]
            self._slot_freed.set()
            return
        if self.runner.in_thread(running.job.id):
            # Its thread cannot be stopped: it keeps its slot until it returns, so the worker
            # never runs more threads than its concurrency.
            log.warning(
                "job %s: lease lost while its plain handler runs in a thread; another worker "
                "may run it now; its slot stays taken until the thread returns", running.job.id,
            )  # fmt: skip
            return
        log.warning("job %s: lease lost while running; cancelling it", running.job.id)
        if running.task:
            running.task.cancel()

    async def _mark_alone(self, held: Held) -> bool:
        """Mark a rescued job as running alone, so that a death now is charged to it; False
        (the job given up) when its lease was taken over meanwhile."""
        reservation = Reservation(held.job.id, token(held.job))
        if await held.driver.renew([reservation], self.spec.lease, alone=True):
            return True
        self._rescued.popleft()
        self._lost(held)
        return False
