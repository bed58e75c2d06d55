"""The sync driver: every job runs inside the `push` that made it, for tests and debugging.

Storage is the memory driver's, so failed jobs, counts and lookups work as usual. The core
sees the `inline` capability and runs the queue right after each push; delays are ignored and
retries run at once, so `push` returns only when the job has succeeded or failed for good. A
job pushed by a running job runs inside that push, before the rest of its pusher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from conveyor.drivers.base import Capabilities, Release
from conveyor.drivers.memory import MemoryDriver
from conveyor.job import NewJob


class SyncDriver(MemoryDriver):
    """A memory driver whose jobs are due at once and run by the core inside `push`."""

    kind = "sync"
    capabilities = Capabilities(inline=True, control=True, schedules=True)
    retries_at_once = True

    def __init__(self, *, raises: bool = False) -> None:
        """With `raises` (what `conveyor.testing.use_sync` makes), a push during which a job
        failed for good (its own, or one its job pushed) raises JobFailedError with the job's
        error and traceback once all ran, as Celery's `task_eager_propagates` and Sidekiq's
        `inline!` do; a push made by a running job never raises for it. By default a failure
        is recorded on the job and logged, as a worker would, and `push` returns its id."""
        super().__init__()
        self.raises = raises

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        due_now = [replace(job, delay=0.0) for job in jobs]
        return await super().push_many(due_now, connection=connection)

    async def release(self, releases: Sequence[Release]) -> set[str]:
        return await super().release([replace(item, delay=0.0) for item in releases])
