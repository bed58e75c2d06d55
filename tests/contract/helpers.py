"""Small builders and checks shared by the contract tests. Everything goes through `Driver`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pytest

from conveyor import Job, Registry
from conveyor.drivers.base import Driver, Failure, Release, Reservation
from conveyor.job import ErrorInfo, JobInfo, NewJob, new_id
from tests.backends import Storage, eventually

D = TypeVar("D", bound=Driver)

__all__ = ["Storage"]  # re-exported: the contract tests take storage from here

#: How far a stored time may drift from the float pushed. Times are floats everywhere, but a
#: backend may keep them at microsecond precision (timestamptz, DATETIME(6)); a millisecond is
#: loose enough for that and tight enough to catch whole-second truncation.
TIME_TOLERANCE = 1e-3

#: A lease long enough that it never runs out during a test.
LONG_LEASE = 30.0

#: A lease short enough to let run out with a short sleep, and the sleep that outlasts it.
SHORT_LEASE = 0.05
PAST_SHORT_LEASE = 0.15

#: A delay long enough that a push and a reserve on a loaded machine surely finish before
#: the job falls due (SHORT_LEASE is not: two round trips may take longer than 50 ms).
SHORT_DELAY = 0.5


def make_job(queue: str = "q", name: str = "j", **overrides: Any) -> NewJob:
    """A job due now with a fresh id; any `NewJob` field can be overridden."""
    job = NewJob(id=new_id(), queue=queue, name=name, payload="{}")
    return replace(job, **overrides)


def reservation(job: JobInfo) -> Reservation:
    """The reservation a worker holds for a job `reserve` handed out."""
    assert job.reservation is not None, f"reserved job {job.id} has no token"
    return Reservation(job.id, job.reservation)


def release_of(job: JobInfo, delay: float = 0.0, **overrides: Any) -> Release:
    """A `Release` of a reserved job, due now unless `delay` says otherwise."""
    return replace(Release(job.id, reservation(job).token, delay), **overrides)


def failure_of(job: JobInfo, error: ErrorInfo | None = None) -> Failure:
    """A `Failure` of a reserved job with `error` (a plain ValueError by default)."""
    return Failure(job.id, reservation(job).token, error or ErrorInfo("ValueError", "boom"))


async def push_and_reserve(
    driver: Driver, job: NewJob | None = None, lease: float = LONG_LEASE, worker: str = "w1"
) -> JobInfo:
    """Push one job to an otherwise empty queue and reserve it."""
    job = job or make_job()
    await driver.push(job)
    reserved = await driver.reserve([job.queue], 1, lease, worker)
    assert [r.id for r in reserved] == [job.id]
    return reserved[0]


async def reserve_all_one_by_one(
    driver: Driver, queues: Sequence[str], lease: float = LONG_LEASE
) -> list[str]:
    """Ids in the order `reserve(limit=1)` hands them out, acking each, until nothing is due.

    One at a time so that the order of taking is all this tests (the order of a batch's list,
    best first on an `ordered` driver, is test_reserve_lists_its_jobs_best_first's); acked,
    as a worker running one job at a time would.
    """
    order: list[str] = []
    while batch := await driver.reserve(queues, 1, lease, "w1"):
        assert len(batch) == 1
        order.append(batch[0].id)
        assert await driver.ack([reservation(batch[0])]) == {batch[0].id}
    return order


async def state_of(driver: Driver, job_id: str) -> str | None:
    """The job's visible state as text, or None when the driver has no such job."""
    job = await driver.get(job_id)
    return None if job is None else job.state.value


def assert_time(actual: float | None, expected: float) -> None:
    """A stored time equals the one given, within `TIME_TOLERANCE`."""
    assert actual is not None
    assert actual == pytest.approx(expected, abs=TIME_TOLERANCE)


def assert_between(actual: float | None, low: float, high: float) -> None:
    """A stored time lies in [low, high], widened by `TIME_TOLERANCE`."""
    assert actual is not None
    assert low - TIME_TOLERANCE <= actual <= high + TIME_TOLERANCE, (low, actual, high)


def push_from_threads(push: Callable[[str], str], threads: int, each: int) -> list[list[str]]:
    """`push(text)` called `each` times from each of `threads` threads started together; the
    ids each thread got, in order. Raises the first error a thread met."""
    start = threading.Barrier(threads)
    ids: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def pusher(n: int) -> None:
        try:
            start.wait()
            for k in range(each):
                ids[n].append(push(f"{n}-{k}"))
        except BaseException as error:  # raised below, in the test's thread
            errors.append(error)

    running = [threading.Thread(target=pusher, args=(n,)) for n in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    if errors:
        raise errors[0]
    return ids


@dataclass
class Mail:
    """The payload of the blocking-push tests' one job kind, "mail"."""

    to: str


def mail_registry(driver: Driver) -> Registry:
    """A registry whose queue "q" (served by worker "w", retry 2) is on `driver`, with one job
    kind, "mail", that is only pushed, never run."""
    registry = Registry()
    registry.queue("q", driver=driver, workers=["w"], retry=2)
    registry.worker("w")

    @registry.job("mail")
    async def mail(job: Job[Mail]) -> None:
        """Never run here: only pushed."""

    return registry


def queue_driver(registry: Registry, kind: type[D]) -> D:
    """The opened driver of `registry`'s queue "q", checked to be a `kind`."""
    driver = registry._resolve_driver(registry.queues["q"].driver)
    assert isinstance(driver, kind)
    return driver


def stored_alike(info: JobInfo | None, other: JobInfo | None) -> tuple[object, ...]:
    """What two jobs stored alike have in common (all but id, times and unique key's holder),
    as a pair of tuples to compare."""
    assert info is not None and other is not None
    fields = ("queue", "name", "payload", "state", "attempt", "max_attempts", "priority")
    fields += ("timeout", "retry_delay", "unique", "meta")
    return tuple(getattr(info, f) for f in fields), tuple(getattr(other, f) for f in fields)


async def cancelled_push_is_still_stored(driver: Driver) -> None:
    """A push cancelled while it waits for the server's answer (the SQL drivers wait on the
    socket in the caller's own task; cancelled there, the push moves to a task and goes on): the
    caller gets CancelledError at once, the job is stored all the same, and the connection goes
    back to the pool in order."""
    await driver.push(make_job())  # a pooled connection, prepared
    job = make_job()
    pushing = asyncio.create_task(driver.push(job))
    await asyncio.sleep(0)  # sent; waiting for the answer
    pushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pushing

    async def stored() -> bool:
        return await driver.get(job.id) is not None

    await eventually(stored, 5)
    assert await driver.push(make_job())
