"""The sync driver's inline run: a pushed job run to completion inside `push`, by a worker
object of the queue's first worker, without its loops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.drivers.sync import SyncDriver
from conveyor.errors import JobFailedError
from conveyor.job import JobInfo, JobState
from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.core import RegistryCore

__all__ = ["run_inline"]


async def run_inline(registry: RegistryCore, queue: str, pushed: Sequence[str] = ()) -> None:
    """Run `queue`'s jobs one by one until none is due: what the `sync` driver does on push.
    On a sync driver made with `raises=True`, JobFailedError once they ran if one of the
    `pushed` ids (the push's own jobs) failed for good."""
    worker = Worker(registry, registry.queue_spec(queue).workers[0])
    driver = await registry.driver_of(queue)
    try:
        while jobs := await driver.reserve([queue], 1, worker.spec.lease, worker.identity):
            outcome = await worker.runner.attempt(jobs[0], driver)
            await worker.settler.settle(driver, [outcome])
        await worker.settler.save_stats()
    finally:
        worker.runner.close()
    if isinstance(driver, SyncDriver) and driver.raises:
        found = [await driver.get(job_id) for job_id in pushed]
        failed = [info for info in found if info is not None and info.state is JobState.FAILED]
        if failed:
            raise JobFailedError(_failed_in_push(failed))


def _failed_in_push(failed: list[JobInfo]) -> str:
    """What JobFailedError says: the first failed job, its error and traceback."""
    info = failed[0]
    more = f" (and {len(failed) - 1} more of this push)" if len(failed) > 1 else ""
    error = info.error
    reason = "no error recorded" if error is None else f"{error.type}: {error.message}"
    trace = "" if error is None or not error.traceback else f"\nits traceback:\n{error.traceback}"
    return (
        f"job {info.id} ({info.name}, queue {info.queue!r}) failed for good inside its push, "
        f"after {info.attempt} attempt(s){more}: {reason}{trace}"
    )
