"""The sync driver's inline run: a pushed job run to completion inside `push`, by a worker
object of the queue's first worker, without its loops; and, as no worker runs a sync driver's
queues, the prune a worker would make of them every PRUNE_EVERY seconds."""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.drivers.sync import SyncDriver
from conveyor.errors import JobFailedError
from conveyor.hooks import started
from conveyor.job import JobInfo, JobState
from conveyor.upkeep import PRUNE_EVERY
from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.core import RegistryCore
    from conveyor.drivers.base import Driver

__all__ = ["run_inline"]


@dataclass
class _Watch:
    """A raising sync driver's pushes under way (a job's pushes run inside its own), and the
    jobs that failed for good since the first of them began."""

    running: int = 0
    failed: list[str] = field(default_factory=list)


_watches: weakref.WeakKeyDictionary[SyncDriver, _Watch] = weakref.WeakKeyDictionary()
#: When each driver's queues were last pruned by a push (time.monotonic()).
_pruned: weakref.WeakKeyDictionary[Driver, dict[str, float]] = weakref.WeakKeyDictionary()


async def run_inline(registry: RegistryCore, queue: str) -> None:
    """Run `queue`'s jobs one by one until none is due: what the `sync` driver does on push.

    On a sync driver made with `raises=True`, the outermost push (the one no running job
    made) raises JobFailedError once they all ran if a job run inside it failed for good, its
    own or one a job pushed. A push made by a running job never raises for it: its pusher
    goes on as it would in production, where the push only stores the job."""
    driver = await registry.driver_of(queue)
    if not (isinstance(driver, SyncDriver) and driver.raises):
        await _run(registry, queue, driver, None)
        # Not a raising driver's (conveyor.testing's, fresh per test): its push reads its failures.
        await _prune(registry, queue, driver)
        return
    watch = _watches.setdefault(driver, _Watch())
    watch.running += 1
    try:
        await _run(registry, queue, driver, watch)
    finally:
        watch.running -= 1
        failed, outermost = watch.failed, watch.running == 0
        if outermost:
            watch.failed = []
    if outermost and failed:
        found = [await driver.get(job_id) for job_id in failed]
        raise JobFailedError(_failed_in_push([info for info in found if info is not None]))


async def _run(registry: RegistryCore, queue: str, driver: Driver, watch: _Watch | None) -> None:
    worker = Worker(registry, registry.queue_spec(queue).workers[0])
    try:
        while jobs := await driver.reserve([queue], 1, worker.spec.lease, worker.identity):
            if registry.hooks.active:  # as a worker tells them, before each attempt
                await registry.hooks.emit(started(jobs[0], worker.identity))
            outcome = await worker.runner.attempt(jobs[0], driver)
            await worker.settler.settle(driver, [outcome])
            if watch is not None:
                info = await driver.get(jobs[0].id)
                if info is not None and info.state is JobState.FAILED:
                    watch.failed.append(info.id)
        await worker.settler.save_stats()
    finally:
        worker.runner.close()


async def _prune(registry: RegistryCore, queue: str, driver: Driver) -> None:
    """Prune `queue` past its retention, at most every PRUNE_EVERY seconds (or every
    retention, when shorter). Before, nothing pruned a sync driver's queues: their finished
    jobs were kept for ever, and a process pushing for days grew without end."""
    retention = registry.queue_spec(queue).retention
    if retention is None:
        return
    last, now = _pruned.setdefault(driver, {}), time.monotonic()
    if now - last.get(queue, -math.inf) >= min(PRUNE_EVERY, retention):
        last[queue] = now
        await registry.prune(queue)


def _failed_in_push(failed: list[JobInfo]) -> str:
    """What JobFailedError says: the first failed job, its error and traceback."""
    info = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    error = info.error
    reason = "no error recorded" if error is None else f"{error.type}: {error.message}"
    trace = "" if error is None or not error.traceback else f"\nits traceback:\n{error.traceback}"
    return (
        f"job {info.id} ({info.name}, queue {info.queue!r}) failed for good inside a push, "
        f"after {info.attempt} attempt(s){more}: {reason}{trace}"
    )
