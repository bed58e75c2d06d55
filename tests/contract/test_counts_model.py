"""Every count a user reads stays exact whatever happens: a seeded, random run of operations
against a plain model of each job's state.

Pushes (single, batches, unique keys refused, ids pushed again, delayed), reserves from two
connections (as two processes), renewals, acks (with a chain's next job pushed), releases
(due now or later), fails (as failed or cancelled), settles by a stale worker whose lease
another took over (refused, changing nothing), cancels, pauses, `failed retry` and `purge`
(one job, all, by name), prune, and damaged records: after each step the driver's `counts`
(the oldest pending job's age too) must equal the model's, and every few steps so must
`list_jobs` of every state, `get` and `throughput`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field, replace

import pytest

from conveyor.drivers.base import Driver, Failure, QueueCounts, Release, Reservation
from conveyor.job import ErrorInfo, JobInfo, JobState, NewJob, new_id
from tests.backends import needs

from .helpers import LONG_LEASE, PAST_SHORT_LEASE, SHORT_LEASE, Storage, make_job, reservation

QUEUES = ("a", "b")
NAMES = ("x", "y")
KEYS = ("k1", "k2", None, None, None)
#: A delay that never runs out during a run: its job stays delayed.
LATER = 3600.0
#: Steps of one run, and how often every job is read back (list_jobs, get, throughput).
STEPS = 150
FULL_CHECK_EVERY = 8
#: How far a backend's stored times may be rounded (SQLite keeps milliseconds).
AGE_TOLERANCE = 0.005
#: The fields the model's damage overwrites: none of them places the job (queue, state, due
#: time, unique key, id).
DAMAGEABLE = {"meta", "error", "payload", "attempt", "rescued", "max_attempts", "priority",
              "created_at", "timeout", "retry_delay", "rank", "worker"}  # fmt: skip
LIVE = ("pending", "delayed", "reserved")
FINISHED = ("succeeded", "failed", "cancelled")
ERROR = ErrorInfo("ValueError", "boom")


@dataclass
class Job:
    """What the model knows of one stored job."""

    queue: str
    name: str
    unique: str | None
    state: str
    #: While pending: monotonic times before and after the step that made it due.
    due: tuple[float, float] | None = None


@dataclass
class Model:
    """Every stored job's state, and the reservations a worker would still hold."""

    jobs: dict[str, Job] = field(default_factory=dict)
    held: dict[str, JobInfo] = field(default_factory=dict)  # current reservations by job id
    stale: list[JobInfo] = field(default_factory=list)  # reservations no longer current

    def holder(self, queue: str, name: str, unique: str | None) -> str | None:
        """The unfinished job holding this unique key, if any."""
        if unique is None:
            return None
        for job_id, job in self.jobs.items():
            if (job.queue, job.name, job.unique) == (queue, name, unique) and job.state in LIVE:
                return job_id
        return None

    def push(self, job: NewJob) -> str:
        if job.id in self.jobs:
            return job.id
        holder = self.holder(job.queue, job.name, job.unique)
        if holder is not None:
            return holder
        state = "delayed" if job.delay > 0 else "pending"
        self.jobs[job.id] = Job(job.queue, job.name, job.unique, state)
        return job.id

    def leave(self, job_id: str, state: str) -> None:
        """The job leaves the reserved state for `state`; its reservation goes stale."""
        self.jobs[job_id].state = state
        self.stale.append(self.held.pop(job_id))

    def take(self, got: JobInfo) -> None:
        """`reserve` handed out `got`: a job held before goes stale."""
        if got.id in self.held:
            self.stale.append(self.held.pop(got.id))
        self.jobs[got.id].state = "reserved"
        self.held[got.id] = got

    def delete(self, job_id: str) -> None:
        del self.jobs[job_id]

    def ids(self, queue: str, state: str, name: str | None = None) -> list[str]:
        return sorted(
            i
            for i, j in self.jobs.items()
            if j.queue == queue and j.state == state and name in (None, j.name)
        )

    def counts(self, queue: str) -> QueueCounts:
        return QueueCounts(**{state: len(self.ids(queue, state)) for state in LIVE + FINISHED})


class Run:
    """One seeded run: `step()` does one random operation, then `check()` compares."""

    def __init__(self, seed: int, drivers: tuple[Driver, Driver], storage: Storage) -> None:
        self.rng = random.Random(seed)
        self.drivers = drivers
        self.storage = storage
        self.model = Model()
        self.log: list[str] = []  # what happened, shown when a check fails

    def driver(self) -> Driver:
        return self.rng.choice(self.drivers)

    def new_job(self, **overrides: object) -> NewJob:
        rng = self.rng
        job = make_job(
            rng.choice(QUEUES),
            rng.choice(NAMES),
            unique=rng.choice(KEYS),
            delay=LATER if rng.random() < 0.2 else 0.0,
            priority=rng.choice((0, 0, 1)),
        )
        return replace(job, **overrides)

    def some(self, items: list[str], most: int = 3) -> list[str]:
        """A few of `items`, now and then one of them twice (a batch naming a job twice)."""
        picked = self.rng.sample(items, self.rng.randint(0, min(most, len(items))))
        return picked + picked[:1] if self.rng.random() < 0.1 else picked

    async def step(self) -> None:
        operations = [
            (self.push, 20), (self.push_many, 8), (self.push_again, 3), (self.reserve, 16),
            (self.renew, 3), (self.ack, 10), (self.release, 8), (self.fail, 8),
            (self.stale_settle, 6), (self.cancel, 4), (self.retry_failed, 6), (self.purge, 5),
            (self.prune, 1), (self.rescue, 1), (self.ack_and_push, 3), (self.pause, 2),
            (self.damage, 2),
        ]  # fmt: skip
        [operation] = self.rng.choices(
            [op for op, _ in operations], weights=[w for _, w in operations]
        )
        began = time.monotonic()
        await operation()
        for job in self.model.jobs.values():
            if job.state != "pending":
                job.due = None
            elif job.due is None:
                job.due = (began, time.monotonic())

    async def push(self) -> None:
        job = self.new_job()
        self.log.append(f"push {job.id} {job.queue}/{job.name} key={job.unique} +{job.delay}")
        assert await self.driver().push(job) == self.model.push(job)

    async def push_many(self) -> None:
        jobs = [self.new_job() for _ in range(self.rng.randint(1, 5))]
        if self.model.jobs and self.rng.random() < 0.3:  # a batch sent again, in part
            jobs.append(self.again())
        self.log.append(f"push_many {[(j.id, j.queue, j.name, j.unique) for j in jobs]}")
        ids = await self.driver().push_many(jobs)
        assert ids == [self.model.push(job) for job in jobs]

    async def push_again(self) -> None:
        """A push retried after a lost reply: its id is stored already."""
        if not self.model.jobs:
            return
        job = self.again()
        self.log.append(f"push again {job.id}")
        assert await self.driver().push(job) == job.id

    def again(self) -> NewJob:
        """A stored job pushed again, to its own queue (on redis, an id is its queue's)."""
        job_id = self.rng.choice(list(self.model.jobs))
        return self.new_job(id=job_id, queue=self.model.jobs[job_id].queue)

    async def reserve(self, lease: float = LONG_LEASE) -> None:
        queues = self.some(list(QUEUES), 2) or ["a"]
        limit = self.rng.randint(1, 4)
        got = await self.driver().reserve(queues, limit, lease, "w")
        self.log.append(f"reserve {queues} {limit}: {[job.id for job in got]}")
        due = {i for q in queues for i in self.model.ids(q, "pending")}
        assert {job.id for job in got} <= due
        assert len(got) == min(limit, len(due))
        for job in got:
            self.model.take(job)

    def held(self) -> list[JobInfo]:
        return [self.model.held[i] for i in self.some(list(self.model.held))]

    async def renew(self) -> None:
        jobs = self.held() + self.rng.sample(self.model.stale, min(1, len(self.model.stale)))
        renewed = await self.driver().renew([reservation(j) for j in jobs], LONG_LEASE)
        self.log.append(f"renew {[j.id for j in jobs]}: {renewed}")
        assert renewed == {j.id for j in jobs if self.model.held.get(j.id) is j}

    async def ack(self) -> None:
        jobs = self.held()
        acked = await self.driver().ack([reservation(job) for job in jobs])
        self.log.append(f"ack {[job.id for job in jobs]}: {acked}")
        assert acked == {job.id for job in jobs}
        for job_id in dict.fromkeys(job.id for job in jobs):
            self.model.leave(job_id, "succeeded")

    async def ack_and_push(self) -> None:
        """A chain's page acked with its next page pushed in one step."""
        jobs, successor = self.held(), self.new_job(unique=None)
        acked = await self.driver().ack_and_push([reservation(j) for j in jobs], [successor])
        self.log.append(f"ack_and_push {[j.id for j in jobs]} + {successor.id}: {acked}")
        assert acked == {job.id for job in jobs}
        for job_id in dict.fromkeys(job.id for job in jobs):
            self.model.leave(job_id, "succeeded")
        self.model.push(successor)

    async def release(self) -> None:
        jobs, later = self.held(), self.rng.random() < 0.3
        error = ERROR if self.rng.random() < 0.7 else None
        count = self.rng.random() < 0.8
        releases = [
            Release(j.id, reservation(j).token, LATER if later else 0.0, error, count) for j in jobs
        ]
        released = await self.driver().release(releases)
        self.log.append(f"release {[j.id for j in jobs]} later={later}: {released}")
        assert released == {job.id for job in jobs}
        for job_id in dict.fromkeys(job.id for job in jobs):
            self.model.leave(job_id, "delayed" if later else "pending")

    async def fail(self) -> None:
        jobs, cancelled = self.held(), self.rng.random() < 0.2
        failures = [Failure(j.id, reservation(j).token, ERROR, cancelled) for j in jobs]
        failed = await self.driver().fail(failures)
        self.log.append(f"fail {[job.id for job in jobs]} cancelled={cancelled}: {failed}")
        assert failed == {job.id for job in jobs}
        for job_id in dict.fromkeys(job.id for job in jobs):
            self.model.leave(job_id, "cancelled" if cancelled else "failed")

    async def stale_settle(self) -> None:
        """A worker whose reservation is no longer current (its lease was taken over, or it
        settled already) settles again: refused, nothing changes."""
        if not self.model.stale:
            return
        job = self.rng.choice(self.model.stale)
        token = reservation(job).token
        verb = self.rng.choice(("ack", "release", "fail", "cancel_fail", "renew"))
        self.log.append(f"stale {verb} {job.id}")
        driver = self.driver()
        if verb == "ack":
            done = await driver.ack([Reservation(job.id, token)])
        elif verb == "release":
            done = await driver.release([Release(job.id, token, 0.0, ERROR)])
        elif verb == "renew":
            done = await driver.renew([Reservation(job.id, token)], LONG_LEASE)
        else:
            failure = Failure(job.id, token, ERROR, cancelled=verb == "cancel_fail")
            done = await driver.fail([failure])
        assert done == set()

    async def cancel(self) -> None:
        ids = self.some(list(self.model.jobs)) + ([new_id()] if self.rng.random() < 0.2 else [])
        found = await self.driver().cancel(ids)
        self.log.append(f"cancel {ids}: {found}")
        live = {i for i in ids if i in self.model.jobs and self.model.jobs[i].state in LIVE}
        assert found == live
        for job_id in live:
            if self.model.jobs[job_id].state != "reserved":
                self.model.jobs[job_id].state = "cancelled"

    async def retry_failed(self) -> None:
        queue, how = self.rng.choice(QUEUES), self.rng.choice(("one", "all", "name"))
        driver = self.driver()
        if how == "all":
            ids, moved = self.model.ids(queue, "failed"), await driver.retry_failed(queue)
        elif how == "one":
            ids = self.some(self.model.ids(queue, "failed"), 1) + self.some(self.others(), 1)
            moved = await driver.retry_failed(queue, ids)
        else:
            name, ids, moved = self.rng.choice(NAMES), [], 0
            async for page in driver.named_ids(queue, JobState.FAILED, name, 2):
                ids += page
                moved += await driver.retry_failed(queue, page)
            assert ids == self.model.ids(queue, "failed", name)
        self.log.append(f"retry_failed {queue} {how} {ids}: {moved}")
        expected = 0
        for job_id in sorted(ids):
            job = self.model.jobs.get(job_id)
            if job is None or job.state != "failed" or job.queue != queue:
                continue
            if self.model.holder(queue, job.name, job.unique) is None:
                job.state, expected = "pending", expected + 1
        assert moved == expected

    def others(self) -> list[str]:
        """Ids an operation on some jobs may name besides: of any job (in another state or
        queue, which it leaves alone), or of none."""
        return [*self.model.jobs, new_id()]

    async def purge(self) -> None:
        queue = self.rng.choice(QUEUES)
        state = self.rng.choice(
            ("failed", "failed", "succeeded", "cancelled", "pending", "delayed")
        )
        how, driver = self.rng.choice(("one", "all", "name")), self.driver()
        if how == "all":
            doomed = self.model.ids(queue, state)
            deleted = await driver.purge(queue, JobState(state))
        elif how == "one":
            ids = self.some(self.model.ids(queue, state), 2) + self.some(self.others(), 1)
            doomed = [i for i in dict.fromkeys(ids) if i in self.model.ids(queue, state)]
            deleted = await driver.purge(queue, JobState(state), ids)
        else:
            name, doomed, deleted = self.rng.choice(NAMES), [], 0
            async for page in driver.named_ids(queue, JobState(state), name, 2):
                doomed += page
                deleted += await driver.purge(queue, JobState(state), page)
            assert doomed == self.model.ids(queue, state, name)
        self.log.append(f"purge {queue} {state} {how} {doomed}: {deleted}")
        assert deleted == len(set(doomed))
        for job_id in set(doomed):
            self.model.delete(job_id)

    async def prune(self) -> None:
        """Every finished job of a queue is older than none: all are pruned."""
        queue = self.rng.choice(QUEUES)
        assert await self.driver().prune(queue, LATER) == 0
        await asyncio.sleep(0.01)  # past the last finish, at a clock's millisecond
        doomed = [i for state in FINISHED for i in self.model.ids(queue, state)]
        pruned = await self.driver().prune(queue, 0.0)
        self.log.append(f"prune {queue}: {pruned} of {doomed}")
        assert pruned == len(doomed)
        for job_id in doomed:
            self.model.delete(job_id)

    async def rescue(self) -> None:
        """Jobs reserved under a short lease that runs out, then taken over by a reserve of
        the other connection, with every due job: their first reservation goes stale."""
        before = set(self.model.held)
        await self.reserve(lease=SHORT_LEASE)
        short = set(self.model.held) - before
        await asyncio.sleep(PAST_SHORT_LEASE)
        got = await self.drivers[1].reserve(list(QUEUES), 1000, LONG_LEASE, "w")
        self.log.append(f"rescue {sorted(short)}: {[job.id for job in got]}")
        due = {i for queue in QUEUES for i in self.model.ids(queue, "pending")}
        assert {job.id for job in got} == due | short
        for job in got:
            self.model.take(job)

    async def pause(self) -> None:
        queue = self.rng.choice(QUEUES)
        paused = self.rng.random() < 0.5
        self.log.append(f"pause {queue} {paused}")
        driver = self.driver()
        if driver.capabilities.control:
            await driver.pause(queue, paused)

    async def damage(self) -> None:
        """A field of a stored job overwritten behind the driver's back (one that says
        nothing of where the job is): it is still counted, listed and settled as before."""
        wanted = [d for d in self.storage.damages if d.field in DAMAGEABLE]
        if not wanted or not self.model.jobs:
            return
        job_id, damage = self.rng.choice(list(self.model.jobs)), self.rng.choice(wanted)
        self.log.append(f"damage {job_id} {damage.field}={damage.raw!r}")
        await self.storage.damage(job_id, damage.field, damage.raw)

    async def check(self, full: bool) -> None:
        driver = self.driver()
        began = time.monotonic()
        counts = await driver.counts(list(QUEUES))
        ended = time.monotonic()
        for queue in QUEUES:
            assert counts[queue] == self.model.counts(queue), queue
            self.check_age(queue, counts[queue].oldest_pending_age, began, ended)
        if full:
            await self.check_records(driver)

    def check_age(self, queue: str, age: float | None, began: float, ended: float) -> None:
        """The oldest pending job's age lies between the least and the most time that can
        have passed since the earliest made due of the queue's pending jobs became due."""
        due = [self.model.jobs[i].due for i in self.model.ids(queue, "pending")]
        if not due:
            assert age is None, queue
            return
        assert age is not None, queue
        least = max(began - after for _, after in filter(None, due))
        most = max(ended - before for before, _ in filter(None, due))
        assert least - AGE_TOLERANCE <= age <= most + AGE_TOLERANCE, (queue, least, age, most)

    async def check_records(self, driver: Driver) -> None:
        for queue in QUEUES:
            for state in LIVE + FINISHED:
                listed = await driver.list_jobs(queue, JobState(state), 1000)
                assert [job.id for job in listed] == self.model.ids(queue, state), (queue, state)
            throughput = await driver.throughput(queue, 10)
            assert sum(throughput.succeeded) == len(self.model.ids(queue, "succeeded"))
            assert sum(throughput.failed) == len(self.model.ids(queue, "failed"))
        for job_id, job in self.model.jobs.items():
            got = await driver.get(job_id)
            assert got is not None and got.state.value == job.state, job_id


@needs("exact_counts")
@needs("lookup")
@pytest.mark.parametrize("seed", [1])
async def test_counts_match_a_model_through_random_operations(
    seed: int, storage: Storage, driver_pair: tuple[Driver, Driver]
) -> None:
    run = Run(seed, driver_pair, storage)
    try:
        for n in range(STEPS):
            await run.step()
            await run.check(full=n % FULL_CHECK_EVERY == 0 or n == STEPS - 1)
    except AssertionError:
        print("\n".join(run.log[-30:]))
        raise
