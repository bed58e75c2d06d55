"""How a job is written into, and read back from, its Redis hash.

A job is one hash of text fields. Times are `repr(float)`, which reads back as the same float,
so stored times are exact. Fields for unset options are absent rather than empty, so "no
unique key" and an empty unique key stay different. Two fields are the driver's own:

- `rank`: 16 hex digits, `2**63 - 1 - priority`, so that a smaller rank is a higher priority
  and ranks compare correctly as text (Lua in Redis has only doubles, which cannot hold it).
- `ukey`: the job's key in the queue's unique hash, JSON `[name, unique]`.

The member of a due job in the queue's pending set is `rank`, then its time as 20 characters
(`%020.6f`, written only by the Lua scripts), then its id: compared bytewise, members order by
priority, then time, then id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from conveyor.job import ErrorInfo, JobInfo, JobState, NewJob

__all__ = [
    "FIELDS",
    "MEMBER_ID_OFFSET",
    "Reserved",
    "Values",
    "error_text",
    "job_info",
    "push_entry",
    "push_jobs",
    "rank",
    "unique_key",
]

#: Where the id starts in a pending member: after 16 rank digits and 20 time characters.
MEMBER_ID_OFFSET = 36

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def rank(priority: int) -> str:
    """The sortable text of a priority: a higher priority gives a smaller rank. Priorities
    beyond 64 bits order as the nearest 64-bit value (they are still stored exactly)."""
    clamped = min(max(priority, _INT64_MIN), _INT64_MAX)
    return f"{_INT64_MAX - clamped:016x}"


def unique_key(job: NewJob) -> str:
    """The job's field in the unique hash, or '' when it has no unique key."""
    if job.unique is None:
        return ""
    return json.dumps([job.name, job.unique], ensure_ascii=False)


def push_entry(job: NewJob) -> list[str]:
    """What push.lua takes for one job: id, time, rank, unique key, then its hash."""
    ukey = unique_key(job)
    available_at = repr(float(job.available_at))
    fields = [
        "id", job.id,
        "queue", job.queue,
        "name", job.name,
        "payload", job.payload,
        "state", JobState.PENDING.value,
        "attempt", "0",
        "max_attempts", str(job.max_attempts),
        "priority", str(job.priority),
        "rank", rank(job.priority),
        "created_at", repr(float(job.created_at)),
        "available_at", available_at,
    ]  # fmt: skip
    if job.timeout is not None:
        fields += ["timeout", repr(float(job.timeout))]
    if job.retry_delay is not None:
        fields += ["retry_delay", job.retry_delay]
    if job.unique is not None:
        fields += ["unique", job.unique, "ukey", ukey]
    if job.meta:
        fields += ["meta", json.dumps(job.meta, ensure_ascii=False)]
    return [job.id, available_at, rank(job.priority), ukey, *fields]


def push_jobs(jobs: Iterable[NewJob]) -> str:
    """The jobs as push.lua's one JSON argument."""
    return json.dumps([push_entry(job) for job in jobs], ensure_ascii=False)


def error_text(error: ErrorInfo | None) -> str:
    """The stored form of an error; '' for none."""
    return "" if error is None else json.dumps(error.to_dict(), ensure_ascii=False)


#: The fields read back into a JobInfo, in the order of its constructor's arguments.
FIELDS = (
    "id", "queue", "name", "payload", "state", "attempt", "max_attempts", "priority",
    "created_at", "available_at", "timeout", "retry_delay", "unique", "meta", "reservation",
    "worker", "finished_at", "error",
)  # fmt: skip

Values = Sequence[str | None]
#: What reserve.lua did to a job: (token, worker, lease end).
Reserved = tuple[str, str, float]


def job_info(values: Values, now: float, reserved: Reserved | None = None) -> JobInfo:
    """The JobInfo of a job's FIELDS (as HMGET reads them), in the state a reader sees at
    `now`: a pending job whose time has not come is delayed.

    `reserved` is what reserve.lua just did to the job, whose fields it read before: the
    new token, worker and lease end, and the attempt is one more."""
    (id_, queue, name, payload, state, attempt, max_attempts, priority, created_at,
     available_at, timeout, retry_delay, unique, meta, reservation, worker, finished_at,
     error) = values  # fmt: skip
    assert id_ is not None and queue is not None and name is not None and payload is not None
    assert state is not None and attempt is not None and max_attempts is not None
    assert priority is not None and created_at is not None and available_at is not None
    tries = int(attempt)
    available = float(available_at)
    if reserved is not None:
        shown = JobState.RESERVED
        tries += 1
        reservation, worker, available = reserved
    else:
        shown = JobState(state)
        if shown is JobState.PENDING and available > now:
            shown = JobState.DELAYED
    return JobInfo(
        id_,
        queue,
        name,
        payload,
        shown,
        tries,
        int(max_attempts),
        int(priority),
        float(created_at),
        available,
        None if timeout is None else float(timeout),
        retry_delay,
        unique,
        {} if meta is None else json.loads(meta),
        reservation,
        worker,
        None if finished_at is None else float(finished_at),
        None if error is None else ErrorInfo.from_dict(json.loads(error)),
    )
