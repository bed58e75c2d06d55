"""Helpers for your own test suite: a registry switched to memory, its jobs run on demand, and
assertions on what was pushed; or switched to a fresh sync driver, each job run inside its push
(`use_sync`). Your application's code stays as it is. docs/testing.md shows both.

    from conveyor.testing import use_memory
    from myapp.jobs import Welcome, registry, send_welcome

    @pytest.fixture
    def queues():
        with use_memory(registry) as queues:
            yield queues

    async def test_signup_sends_a_welcome_mail(queues):
        await signup("ada@example.com")                 # pushes send_welcome
        queues.assert_pushed(send_welcome, Welcome(to="ada@example.com"))
        assert queues.pushed(send_welcome) == [Welcome(to="ada@example.com")]
        await queues.run_all()                          # runs it now, retries included

While switched, every queue of the registry keeps its jobs in one fresh in-memory driver,
whatever driver it was registered or configured with (the sync driver too), and gets its own
back when the `with` block ends. Nothing runs by itself: `run_all()` runs the jobs, one at a
time, in the order a worker would take them, with their handlers, timeouts and retries.
Delays and retry delays are not waited for: every job is due at once (its `delay` is kept on
the record `pushes()` returns). A paused queue's jobs wait, as for a worker. A push with
`connection=` is stored at once: the memory driver has no transaction to join, so a rollback
does not take the job back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload
from unittest.mock import ANY

from conveyor.drivers.base import Release
from conveyor.drivers.memory import MemoryDriver
from conveyor.drivers.sync import SyncDriver
from conveyor.errors import UnknownJobError
from conveyor.hooks import started
from conveyor.job import FINISHED_STATES, JobInfo, JobState, NewJob
from conveyor.worker import Worker

if TYPE_CHECKING:
    from conveyor.core import RegistryCore
    from conveyor.handle import JobHandle

__all__ = [
    "MemoryQueues",
    "PushedJob",
    "RecordingDriver",
    "RecordingSyncDriver",
    "use_memory",
    "use_sync",
]

T = TypeVar("T")

_ENDED = (
    "run_all() was called after its `with use_memory(...)` (or use_sync) block ended: call it "
    "inside the block"
)

#: How many attempts `run_all()` makes before it decides that jobs keep pushing jobs.
RUN_ALL_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class PushedJob(Generic[T]):
    """One job as pushed: its payload decoded to the job's type, and the resolved options."""

    id: str
    queue: str
    name: str
    payload: T
    #: Seconds the push asked to wait (not waited for under `use_memory`).
    delay: float
    unique: str | None
    priority: int
    max_attempts: int
    meta: dict[str, Any] = field(default_factory=dict)


class RecordingDriver(MemoryDriver):
    """The memory driver, recording every job it stores, with every job due at once."""

    kind = "memory"
    # What the memory driver can do (cancel, pause, results, schedules), and connection=
    # besides, so that code pushing in its own transaction runs unchanged in tests; the job
    # is stored at once (see the module docstring).
    capabilities = replace(MemoryDriver.capabilities, transactional=True)
    retries_at_once = True

    def __init__(self) -> None:
        super().__init__()
        #: Every job stored, by id, in push order; a unique push that stored nothing is absent.
        self.pushed: dict[str, NewJob] = {}

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        due_now = [replace(job, delay=min(job.delay, 0.0)) for job in jobs]
        ids = await super().push_many(due_now)
        for job, job_id in zip(jobs, ids, strict=True):
            if job_id == job.id:
                self.pushed.setdefault(job_id, job)
        return ids

    async def release(self, releases: Sequence[Release]) -> set[str]:
        return await super().release([replace(item, delay=0.0) for item in releases])


class RecordingSyncDriver(RecordingDriver, SyncDriver):
    """The sync driver, recording every job it stores: each job runs inside its push."""

    kind = "sync"
    capabilities = replace(SyncDriver.capabilities, transactional=True)


class MemoryQueues:
    """What `use_memory` and `use_sync` yield: the pushes made since, and `run_all()` to run
    them."""

    def __init__(self, registry: RegistryCore, driver: RecordingDriver) -> None:
        self.registry = registry
        #: The in-memory driver every queue uses: `await queues.driver.counts([...])`.
        self.driver = driver
        # False once the `with` block ended and the registry has its own drivers back.
        self._switched = True

    # -- what was pushed ---------------------------------------------------------------------

    @overload
    def pushes(
        self, job: JobHandle[T], *, queue: str | None = None
    ) -> list[PushedJob[T]]: ...  # fmt: skip

    @overload
    def pushes(
        self, job: str | None = None, *, queue: str | None = None
    ) -> list[PushedJob[Any]]: ...  # fmt: skip

    def pushes(
        self, job: JobHandle[Any] | str | None = None, *, queue: str | None = None
    ) -> list[PushedJob[Any]]:
        """Every job pushed (of `job`, a handle or a job name; to `queue`), in push order."""
        name = self._known(job, queue)
        return [
            self._decoded(new)
            for new in self.driver.pushed.values()
            if (name is None or new.name == name) and (queue is None or new.queue == queue)
        ]

    @overload
    def pushed(self, job: JobHandle[T], *, queue: str | None = None) -> list[T]: ...

    @overload
    def pushed(self, job: str, *, queue: str | None = None) -> list[Any]: ...

    def pushed(self, job: JobHandle[Any] | str, *, queue: str | None = None) -> list[Any]:
        """The payloads `job` was pushed with (to `queue`), in push order, of the job's type."""
        return [pushed.payload for pushed in self.pushes(job, queue=queue)]

    @overload
    def assert_pushed(
        self, job: JobHandle[T], payload: T = ..., *, queue: str | None = None,
        times: int | None = None,
    ) -> list[PushedJob[T]]: ...  # fmt: skip

    @overload
    def assert_pushed(
        self, job: str, payload: Any = ..., *, queue: str | None = None,
        times: int | None = None,
    ) -> list[PushedJob[Any]]: ...  # fmt: skip

    def assert_pushed(
        self, job: JobHandle[Any] | str, payload: Any = ANY, *, queue: str | None = None,
        times: int | None = None,
    ) -> list[PushedJob[Any]]:  # fmt: skip
        """Assert that `job` was pushed (with a payload equal to `payload`, to `queue`, when
        given): at least once, or exactly `times` times. Returns the matching pushes, to look
        at their options: `[push] = queues.assert_pushed(send, times=1); push.delay`."""
        self._known(job, queue)
        every = self.pushes(job)
        matching = [
            p for p in every if payload == p.payload and (queue is None or p.queue == queue)
        ]
        if (times is None and matching) or len(matching) == times:
            return matching
        wanted = ("" if payload is ANY else f" with payload {payload!r}") + (
            "" if queue is None else f" to queue {queue!r}"
        )
        expected = "at least once" if times is None else f"{times} time(s)"
        raise AssertionError(
            f"expected job {_name_of(job)!r} pushed{wanted} {expected}, found it "
            f"{len(matching)} time(s); its pushes:{_listed(every)}"
        )

    @overload
    def assert_not_pushed(
        self, job: JobHandle[T], payload: T = ..., *, queue: str | None = None
    ) -> None: ...  # fmt: skip

    @overload
    def assert_not_pushed(
        self, job: str, payload: Any = ..., *, queue: str | None = None
    ) -> None: ...  # fmt: skip

    def assert_not_pushed(
        self, job: JobHandle[Any] | str, payload: Any = ANY, *, queue: str | None = None
    ) -> None:
        """Assert that `job` was never pushed (with `payload`, to `queue`, when given)."""
        self.assert_pushed(job, payload, queue=queue, times=0)

    def assert_nothing_pushed(self) -> None:
        """Assert that no job at all was pushed."""
        if self.driver.pushed:
            raise AssertionError(f"expected no job pushed; pushed:{_listed(self.pushes())}")

    def _known(self, job: JobHandle[Any] | str | None, queue: str | None) -> str | None:
        """The job's name; UnknownJobError or UnknownQueueError for a name the registry does
        not have (a typo would make `assert_not_pushed("mail.sned")` pass whatever ran)."""
        name = None if job is None else _name_of(job)
        if name is not None and name not in self.registry.jobs:
            raise UnknownJobError(name)
        if queue is not None:
            self.registry.freeze()  # the implicit queues exist from then on
            self.registry.queue_spec(queue)
        return name

    def _decoded(self, new: NewJob) -> PushedJob[Any]:
        payload = self.registry.jobs[new.name].codec.decode(new.payload)
        return PushedJob(
            new.id, new.queue, new.name, payload, new.delay, new.unique, new.priority,
            new.max_attempts, dict(new.meta),
        )  # fmt: skip

    # -- running them ------------------------------------------------------------------------

    async def run_all(self, *, check: bool = True, limit: int = RUN_ALL_LIMIT) -> list[JobInfo]:
        """Run every due job now, one at a time, until none is left: retries at once, and the
        jobs these jobs push. Returns the jobs that finished, in the order they did.

        With `check` (the default), a job that failed for good raises AssertionError with its
        error and traceback, once the rest have run; `check=False` to look at failures
        yourself. After `limit` attempts with jobs still due, AssertionError: a job that
        pushes itself for ever."""
        if not self._switched:  # before the registry opens its own backend to find out
            raise RuntimeError(_ENDED)
        runs = _Runs(self.registry, self.driver)
        finished: list[JobInfo] = []
        try:
            while (info := await runs.run_next()) is not None:
                if info.state in FINISHED_STATES:
                    finished.append(info)
                if runs.attempts >= limit and await runs.any_due():
                    raise AssertionError(
                        f"run_all() made {limit} attempts and jobs are still due: does a job "
                        "push itself for ever? Allow more with run_all(limit=...)"
                    )
        finally:
            await runs.close()
        failed = [info for info in finished if info.state is JobState.FAILED]
        if check and failed:
            raise AssertionError(_failures(failed))
        return finished


def use_memory(registry: RegistryCore) -> contextlib.AbstractContextManager[MemoryQueues]:
    """Switch every queue of `registry` to one fresh in-memory driver for the `with` block,
    whatever drivers they were registered or configured with; see the module docstring."""
    return _substituted(registry, RecordingDriver())


def use_sync(
    registry: RegistryCore, *, check: bool = True
) -> contextlib.AbstractContextManager[MemoryQueues]:
    """Switch every queue of `registry` to one fresh sync driver for the `with` block: each
    job runs inside the push that made it, with its retries (at once) and the jobs it pushes
    (inside its own pushes); delays are not waited for. With `check` (the default), a push
    during which a job failed for good, its own or one pushed by it, raises JobFailedError
    with the job's error and traceback once all ran (a push made by a running job never
    raises: the job goes on, as in production); `check=False` only records the failure, as
    the sync driver does. What was pushed is listed as under `use_memory`."""
    driver = RecordingSyncDriver()
    driver.raises = check
    return _substituted(registry, driver)


@contextlib.contextmanager
def _substituted(registry: RegistryCore, driver: RecordingDriver) -> Iterator[MemoryQueues]:
    previous = registry.substitute_driver(driver)
    queues = MemoryQueues(registry, driver)
    try:
        yield queues
    finally:
        queues._switched = False
        registry.substitute_driver(previous)


class _Runs:
    """Runs reserved jobs one at a time, each with the runner of its queue's first worker,
    as the sync driver's inline run does (`conveyor.inline.run_inline`)."""

    def __init__(self, registry: RegistryCore, driver: RecordingDriver) -> None:
        self.registry = registry
        self.driver = driver
        self.attempts = 0
        self._workers: dict[str, Worker] = {}
        self._identity = f"conveyor.testing:{os.getpid()}"

    async def run_next(self) -> JobInfo | None:
        """Reserve the next due job of any queue, run it, settle it; its record after, or
        None when no job is due."""
        self.registry.freeze()
        driver = await self.registry.driver_of(next(iter(self.registry.queues)))  # opens it
        if driver is not self.driver:
            raise RuntimeError(_ENDED)
        queues = await self._queues()
        if not queues:
            return None
        lease = max(spec.lease for spec in self.registry.workers.values())
        jobs = await driver.reserve(queues, 1, lease, self._identity)
        if not jobs:
            return None
        job = jobs[0]
        worker = self._worker_of(job.queue)
        if self.registry.hooks.active:  # as a worker tells them, before each attempt
            await self.registry.hooks.emit(started(job, worker.identity))
        outcome = await worker.runner.attempt(job, driver)
        await worker.settler.settle(driver, [outcome])
        self.attempts += 1
        return await driver.get(job.id)

    async def any_due(self) -> bool:
        counts = await self.driver.counts(await self._queues())
        return any(count.pending for count in counts.values())

    async def close(self) -> None:
        for worker in self._workers.values():
            await worker.settler.save_stats()
            worker.runner.close()

    async def _queues(self) -> list[str]:
        """The queues a worker would take jobs from: every one not paused."""
        self.registry.freeze()
        queues = list(self.registry.queues)
        paused = await self.driver.paused(queues)
        return [queue for queue in queues if queue not in paused]

    def _worker_of(self, queue: str) -> Worker:
        name = self.registry.queue_spec(queue).workers[0]
        if name not in self._workers:
            self._workers[name] = Worker(self.registry, name)
        return self._workers[name]


def _name_of(job: JobHandle[Any] | str) -> str:
    return job if isinstance(job, str) else job.name


def _listed(pushes: list[PushedJob[Any]]) -> str:
    lines = [f"\n- {p.name!r} to queue {p.queue!r}: {p.payload!r}" for p in pushes]
    return "".join(lines) or " none"


def _failures(failed: list[JobInfo]) -> str:
    lines = [f"{len(failed)} job(s) failed for good (run_all(check=False) to allow it):"]
    for info in failed:
        error = info.error
        reason = "no error recorded" if error is None else f"{error.type}: {error.message}"
        lines.append(f"- job {info.id} ({info.name}, queue {info.queue!r}) after "
                     f"{info.attempt} attempt(s): {reason}")  # fmt: skip
    first = failed[0].error
    if first is not None and first.traceback:
        lines.append(f"the first one's traceback:\n{first.traceback}")
    return "\n".join(lines)
