"""The in-process driver: the reference semantics every other driver must match.

Jobs live in this process only and vanish with it; use it for tests and development. All state
is changed from the event loop's thread without awaiting in between, so every method is atomic.
Its clock is this process's `time.time()`: the backend and the worker are one process.
"""

from __future__ import annotations

import heapq
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from conveyor.drivers.base import (
    Capabilities,
    Failure,
    QueueCounts,
    Release,
    Reservation,
    Throughput,
    Tick,
)
from conveyor.drivers.local import LocalWakeup, LocalWorkerRecords
from conveyor.job import (
    FINISHED_STATES,
    MAX_ERRORS,
    ErrorInfo,
    FailedAttempt,
    JobInfo,
    JobState,
    NewJob,
)

UniqueKey = tuple[str, str, str]


def _own(meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of `meta` that shares nothing with it, as stored JSON read back would be."""
    copied: dict[str, Any] = json.loads(json.dumps(meta)) if meta else {}
    return copied


class MemoryDriver(LocalWorkerRecords):
    """Jobs in a dict; per queue, a heap of due jobs by priority and a heap of jobs waiting for
    their time (delayed jobs, and reserved jobs until their lease runs out)."""

    kind = "memory"
    capabilities = Capabilities(control=True, schedules=True)

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, JobInfo] = {}
        # Per queue: due jobs as (-priority, due time, seq, id), and jobs not yet due as
        # (due time, seq, id); the due time is a reserved job's lease end, else available_at
        # (see _due). Entries go stale when a job changes; they are skipped when
        # they no longer match their job, so a change only has to push a new entry.
        self._ready: dict[str, list[tuple[int, float, int, str]]] = {}
        self._waiting: dict[str, list[tuple[float, int, str]]] = {}
        self._unique: dict[UniqueKey, str] = {}
        self._paused: set[str] = set()
        self._ticks: dict[str, Tick] = {}
        self._seq = itertools.count()
        self._pushed = LocalWakeup()

    async def close(self) -> None:
        """Nothing to release: the jobs stay for as long as this object lives."""

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        self.check_connection(connection)
        ids = [self._push_one(job) for job in jobs]
        self._pushed.notify()
        return ids

    def _push_one(self, job: NewJob) -> str:
        if job.id in self._jobs:
            # A push retried after its reply was lost: the job is stored already, keep it,
            # even if another job holds its unique key by now.
            return job.id
        key = self._unique_key(job.queue, job.name, job.unique)
        if key is not None and key in self._unique:
            return self._unique[key]
        now = time.time()
        info = JobInfo(
            id=job.id,
            queue=job.queue,
            name=job.name,
            payload=job.payload,
            state=JobState.PENDING,
            attempt=0,
            max_attempts=job.max_attempts,
            priority=job.priority,
            created_at=now,
            available_at=now + job.delay,
            timeout=job.timeout,
            retry_delay=job.retry_delay,
            unique=job.unique,
            meta=_own(job.meta),
        )
        self._jobs[job.id] = info
        if key is not None:
            self._unique[key] = job.id
        self._schedule(info)
        return job.id

    async def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> list[JobInfo]:
        self._pushed.forget()  # a push from here on wakes the next `wait`
        now = time.time()
        token = uuid.uuid4().hex
        reserved: list[JobInfo] = []
        while len(reserved) < limit:
            job_id = self._pop_due(queues, now)
            if job_id is None:
                break
            job = self._jobs[job_id]
            rescue = job.state is JobState.RESERVED  # its worker stopped renewing its lease
            job = replace(
                job,
                state=JobState.RESERVED,
                attempt=job.attempt + (0 if rescue and not job.alone else 1),
                rescued=job.rescued + (1 if rescue else 0),
                alone=False,
                reservation=token,
                worker=worker,
                reserved_at=now,
                lease_expires_at=now + lease,
            )
            self._jobs[job_id] = job
            self._schedule(job)  # an expired lease makes it due again
            # Its own meta, as a driver that reads it from storage gives: a handler's changes
            # stay out of the stored job and its next attempt.
            reserved.append(replace(job, meta=_own(job.meta)) if job.meta else job)
        return reserved

    def _pop_due(self, queues: Sequence[str], now: float) -> str | None:
        """The id of the best due job across `queues`, removed from its heap; None if none."""
        best: tuple[int, float, int, str] | None = None
        best_queue = ""
        for queue in queues:
            self._promote(queue, now)
            heap = self._ready.get(queue)
            while heap and not self._entry_is_current(heap[0]):
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best):
                best, best_queue = heap[0], queue
        if best is None:
            return None
        heapq.heappop(self._ready[best_queue])
        return best[3]

    def _promote(self, queue: str, now: float) -> None:
        """Move the queue's jobs whose time has come from the waiting heap to the ready heap."""
        waiting = self._waiting.get(queue)
        while waiting and waiting[0][0] <= now:
            due, seq, job_id = heapq.heappop(waiting)
            job = self._jobs.get(job_id)
            if job is not None and self._is_current(job, due):
                ready = self._ready.setdefault(queue, [])
                heapq.heappush(ready, (-job.priority, due, seq, job_id))

    def _entry_is_current(self, entry: tuple[int, float, int, str]) -> bool:
        job = self._jobs.get(entry[3])
        return job is not None and -job.priority == entry[0] and self._is_current(job, entry[1])

    @staticmethod
    def _is_current(job: JobInfo, due: float) -> bool:
        return job.state in (JobState.PENDING, JobState.RESERVED) and _due(job) == due

    def _schedule(self, job: JobInfo) -> None:
        seq = next(self._seq)
        due = _due(job)
        if due <= time.time():
            ready = self._ready.setdefault(job.queue, [])
            heapq.heappush(ready, (-job.priority, due, seq, job.id))
        else:
            waiting = self._waiting.setdefault(job.queue, [])
            heapq.heappush(waiting, (due, seq, job.id))

    def _held(self, reservation: Reservation) -> JobInfo | None:
        """The job if it is still reserved under this token (the fencing check)."""
        job = self._jobs.get(reservation.id)
        if (
            job is None
            or job.state is not JobState.RESERVED
            or job.reservation != reservation.token
        ):
            return None
        return job

    async def renew(
        self, reservations: Sequence[Reservation], lease: float, *, alone: bool = False
    ) -> set[str]:
        until = time.time() + lease
        renewed: set[str] = set()
        for reservation in reservations:
            job = self._held(reservation)
            if job is not None:
                self._jobs[job.id] = job = replace(
                    job, lease_expires_at=until, alone=job.alone or alone
                )
                self._schedule(job)
                renewed.add(job.id)
        return renewed

    async def ack(self, reservations: Sequence[Reservation]) -> set[str]:
        done: set[str] = set()
        for reservation in reservations:
            job = self._held(reservation)
            if job is not None:
                self._finish(job, JobState.SUCCEEDED, job.error, reservation.result)
                done.add(job.id)
        return done

    async def release(self, releases: Sequence[Release]) -> set[str]:
        now = time.time()
        released: set[str] = set()
        for item in releases:
            job = self._held(Reservation(item.id, item.token))
            if job is None:
                continue
            job = replace(
                job,
                state=JobState.PENDING,
                available_at=now + item.delay,
                lease_expires_at=None,
                attempt=job.attempt if item.count_attempt else job.attempt - 1,
                error=item.error or job.error,
                errors=_with_error(job, item.error, now),
            )
            self._jobs[job.id] = job
            self._schedule(job)
            released.add(job.id)
        if released:
            self._pushed.notify()
        return released

    async def fail(self, failures: Sequence[Failure]) -> set[str]:
        failed: set[str] = set()
        for item in failures:
            job = self._held(Reservation(item.id, item.token))
            if job is not None:
                state = JobState.CANCELLED if item.cancelled else JobState.FAILED
                self._finish(job, state, item.error, record=True)
                failed.add(job.id)
        return failed

    def _finish(
        self,
        job: JobInfo,
        state: JobState,
        error: ErrorInfo | None,
        result: str | None = None,
        *,
        record: bool = False,
    ) -> None:
        """Finish the job; with `record`, `error` is its attempt's and joins its history."""
        now = time.time()
        errors = _with_error(job, error, now) if record else job.errors
        self._jobs[job.id] = replace(
            job, state=state, finished_at=now, error=error, result=result, errors=errors
        )
        key = self._unique_key(job.queue, job.name, job.unique)
        if key is not None and self._unique.get(key) == job.id:
            del self._unique[key]

    async def cancel(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for job_id in ids:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINISHED_STATES:
                continue
            if job.state is JobState.RESERVED:
                self._jobs[job_id] = replace(job, cancel_requested=True)
            else:
                self._finish(job, JobState.CANCELLED, job.error)
            found.add(job_id)
        return found

    async def cancelling(self, reservations: Sequence[Reservation]) -> set[str]:
        return {
            job.id
            for job in map(self._held, reservations)
            if job is not None and job.cancel_requested
        }

    async def pause(self, queue: str, paused: bool = True) -> None:
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)

    async def paused(self, queues: Sequence[str]) -> set[str]:
        return self._paused.intersection(queues)

    async def mark_tick(self, schedule: str, tick: float, job_id: str) -> None:
        known = self._ticks.get(schedule)
        if known is None or known.at < tick:
            self._ticks[schedule] = Tick(schedule, tick, job_id)

    async def ticks(self, schedules: Sequence[str]) -> dict[str, Tick]:
        return {name: self._ticks[name] for name in schedules if name in self._ticks}

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        now = time.time()
        tally: dict[str, dict[JobState, int]] = {queue: {} for queue in queues}
        oldest: dict[str, float] = {}
        for job in self._jobs.values():
            if job.queue in tally:
                state = _visible_state(job, now)
                tally[job.queue][state] = tally[job.queue].get(state, 0) + 1
                if state is JobState.PENDING:
                    oldest[job.queue] = min(oldest.get(job.queue, now), job.available_at)
        return {
            queue: QueueCounts(
                pending=by_state.get(JobState.PENDING, 0),
                delayed=by_state.get(JobState.DELAYED, 0),
                reserved=by_state.get(JobState.RESERVED, 0),
                succeeded=by_state.get(JobState.SUCCEEDED, 0),
                failed=by_state.get(JobState.FAILED, 0),
                oldest_pending_age=now - oldest[queue] if queue in oldest else None,
                cancelled=by_state.get(JobState.CANCELLED, 0),
            )
            for queue, by_state in tally.items()
        }

    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        limit: int = 100,
        offset: int = 0,
        *,
        name: str | None = None,
        after: str | None = None,
    ) -> list[JobInfo]:
        now = time.time()
        matching = sorted(
            (
                self._shown(job, now)
                for job in self._jobs.values()
                if job.queue == queue
                and (name is None or job.name == name)
                and (after is None or job.id > after)
            ),
            key=lambda job: job.id,
        )
        chosen = [job for job in matching if job.state is state]
        return chosen[offset : offset + limit]

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput:
        start = Throughput.start_at(time.time(), minutes)
        counted = [
            (job.state.value, int((job.finished_at - start) // 60), 1)
            for job in self._jobs.values()
            if job.queue == queue and job.finished_at is not None and job.finished_at >= start
        ]
        return Throughput.of(start, minutes, counted)

    async def get(self, job_id: str) -> JobInfo | None:
        job = self._jobs.get(job_id)
        return None if job is None else self._shown(job, time.time())

    @staticmethod
    def _shown(job: JobInfo, now: float) -> JobInfo:
        state = _visible_state(job, now)
        return job if state is job.state else replace(job, state=state)

    async def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        now = time.time()
        moved = 0
        for job in self._select(queue, JobState.FAILED, ids):
            key = self._unique_key(job.queue, job.name, job.unique)
            if key is not None and key in self._unique:
                continue
            job = replace(
                job,
                state=JobState.PENDING,
                attempt=0,
                rescued=0,
                available_at=now,
                finished_at=None,
            )
            self._jobs[job.id] = job
            if key is not None:
                self._unique[key] = job.id
            self._schedule(job)
            moved += 1
        if moved:
            self._pushed.notify()
        return moved

    async def purge(
        self, queue: str, state: JobState = JobState.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        self.check_purgeable(state)
        doomed = self._select(queue, state, ids)
        for job in doomed:
            key = self._unique_key(job.queue, job.name, job.unique)
            if key is not None and self._unique.get(key) == job.id:
                del self._unique[key]
            del self._jobs[job.id]
        return len(doomed)

    async def prune(self, queue: str, older_than: float) -> int:
        before = time.time() - older_than
        doomed = [
            job.id
            for job in self._jobs.values()
            if job.queue == queue
            and job.state in FINISHED_STATES
            and job.finished_at is not None
            and job.finished_at < before
        ]
        for job_id in doomed:
            del self._jobs[job_id]
        return len(doomed)

    def _select(self, queue: str, state: JobState, ids: Sequence[str] | None) -> list[JobInfo]:
        now = time.time()
        wanted = None if ids is None else set(ids)
        return [
            job
            for job in list(self._jobs.values())
            if job.queue == queue
            and _visible_state(job, now) is state
            and (wanted is None or job.id in wanted)
        ]

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        await self._pushed.wait(timeout)

    @staticmethod
    def _unique_key(queue: str, name: str, unique: str | None) -> UniqueKey | None:
        return None if unique is None else (queue, name, unique)


def _with_error(job: JobInfo, error: ErrorInfo | None, now: float) -> tuple[FailedAttempt, ...]:
    """The job's error history with `error` (of its current attempt) added, the oldest
    dropped past MAX_ERRORS; unchanged without an error."""
    if error is None:
        return job.errors
    return (*job.errors, FailedAttempt(job.attempt, now, error))[-MAX_ERRORS:]


def _due(job: JobInfo) -> float:
    """When the job next needs a reserve: a reserved job's lease end, else its due time."""
    if job.state is JobState.RESERVED and job.lease_expires_at is not None:
        return job.lease_expires_at
    return job.available_at


def _visible_state(job: JobInfo, now: float) -> JobState:
    """The state a reader sees: a pending job whose time has not come is `delayed`."""
    if job.state is JobState.PENDING and job.available_at > now:
        return JobState.DELAYED
    return job.state
