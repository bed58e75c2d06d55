"""How a job is written into, and read back from, its Redis hash.

A job is one hash of text fields. Times are written by the Lua scripts from the server's clock
(TIME), to the microsecond. Fields for unset options are absent rather than empty, so "no
unique key" and an empty unique key stay different. Two fields are the driver's own:

- `rank`: 16 hex digits, `2**63 - 1 - priority`, so that a smaller rank is a higher priority
  and ranks compare correctly as text (Lua in Redis has only doubles, which cannot hold it).
- `ukey`: the job's key in the queue's unique hash, JSON `[name, unique]`.

The member of a due job in the queue's pending set is `rank`, then its time as 20 characters
(`%020.6f`, written only by the Lua scripts), then its id: compared bytewise, members order by
priority, then time, then id.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from conveyor.drivers.base import QueueCounts
from conveyor.drivers.record import read_job
from conveyor.job import ErrorInfo, JobBatch, JobInfo, JobState, NewJob

__all__ = [
    "FIELDS",
    "Values",
    "counts_from",
    "error_text",
    "job_info",
    "push_jobs",
    "push_one",
    "push_run",
    "rank",
    "score_pairs",
    "stored",
    "unique_key",
]

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


def push_run(job: NewJob) -> list[Any]:
    """push.lua's run for `job` and the jobs alike it but for id and payload: delay, rank,
    unique key, the hash's fields without the times, id and payload, then an empty list for
    the ids and payloads of its jobs (the script stamps the times from the server's clock)."""
    fields = [
        "queue", job.queue,
        "name", job.name,
        "state", JobState.PENDING.value,
        "attempt", "0",
        "max_attempts", str(job.max_attempts),
        "priority", str(job.priority),
        "rank", rank(job.priority),
    ]  # fmt: skip
    if job.timeout is not None:
        fields += ["timeout", repr(float(job.timeout))]
    if job.retry_delay is not None:
        fields += ["retry_delay", job.retry_delay]
    ukey = unique_key(job)
    if job.unique is not None:
        fields += ["unique", job.unique, "ukey", ukey]
    if job.meta:
        fields += ["meta", json.dumps(job.meta, ensure_ascii=False)]
    return [repr(float(job.delay)), rank(job.priority), ukey, fields, []]


def push_jobs(jobs: Iterable[NewJob]) -> str:
    """The jobs as push.lua's one JSON argument: runs of consecutive jobs alike but for id and
    payload (a batch from `push_many` is one run), so what they share is turned into strings
    once; meta dicts are told apart by identity, a batch's jobs sharing one dict. A job with
    a unique key is a run of its own."""
    if isinstance(jobs, JobBatch):
        run = push_run(jobs.template)
        run[4] = [value for pair in zip(jobs.ids, jobs.payloads, strict=True) for value in pair]
        return json.dumps([run], ensure_ascii=False)
    runs: list[list[Any]] = []
    last: tuple[object, ...] | None = None
    items: list[str] = []
    for job in jobs:
        key = (job.queue, job.name, job.delay, job.max_attempts, job.priority, job.timeout,
               job.retry_delay, id(job.meta))  # fmt: skip
        if job.unique is not None or key != last:
            run = push_run(job)
            runs.append(run)
            items = run[4]
            last = None if job.unique is not None else key
        items += (job.id, job.payload)
    return json.dumps(runs, ensure_ascii=False)


def push_one(job: NewJob) -> list[str] | None:
    """push_one.lua's ARGV after the key prefix for `job` (id, payload, delay, rank, the other
    fields), or None for a job with meta or a unique key, which push.lua stores (a dict is no
    cache key, and unique keys are too many to keep). What the job shares with others of its
    queue, name and options is made once and kept (`_one_rest`)."""
    if job.meta or job.unique is not None:
        return None
    rest = _one_rest(
        job.queue, job.name, job.delay, job.max_attempts, job.priority, job.timeout,
        job.retry_delay,
    )  # fmt: skip
    return [job.id, job.payload, *rest]


@functools.lru_cache(maxsize=256)
def _one_rest(
    queue: str,
    name: str,
    delay: float,
    max_attempts: int,
    priority: int,
    timeout: float | None,
    retry_delay: str | None,
) -> tuple[str, ...]:
    """push_one.lua's delay, rank and fields for a job of these fields (push_run's)."""
    template = NewJob(
        id="", queue=queue, name=name, payload="", delay=delay, max_attempts=max_attempts,
        priority=priority, timeout=timeout, retry_delay=retry_delay,
    )  # fmt: skip
    wait, ranked, _, fields, _ = push_run(template)
    return (wait, ranked, *fields)


def error_text(error: ErrorInfo | None) -> str:
    """The stored form of an error; '' for none."""
    return "" if error is None else json.dumps(error.to_dict(), ensure_ascii=False)


#: The fields read back into a JobInfo, named as `read_job` takes them. Not the `id` field: the
#: id is taken from the job's key, which a damaged hash cannot change, so the job can always
#: be settled.
FIELDS = (
    "queue", "name", "payload", "state", "attempt", "max_attempts", "priority",
    "created_at", "available_at", "timeout", "retry_delay", "unique", "meta", "reservation",
    "worker", "finished_at", "error", "rescued", "alone", "reserved_at", "lease_expires_at",
    "result", "cancel",
)  # fmt: skip

Values = Sequence[str | None]


def job_info(job_id: str, values: Values, now: float, errors: str | None = None) -> JobInfo:
    """The JobInfo of job `job_id` from its FIELDS (as HMGET reads them), in the state a
    reader sees at `now`, the server's time: a pending job whose time has not come is
    delayed. A damaged field is named in `unreadable` rather than raised (drivers/record.py).
    `errors` is the job's error history field, read by `get` only."""
    raw: dict[str, object] = dict(zip(FIELDS, values, strict=True))
    raw["id"], raw["errors"] = job_id, errors
    return read_job(raw, now)


def stored(values: Values) -> bool:
    """Whether HMGET found the job at all (a job whose hash is gone reads all None)."""
    return any(value is not None for value in values)


def counts_from(reply: Sequence[Any]) -> QueueCounts:
    """counts.lua's reply: five counts, the oldest pending job's age ('' for none), then the
    cancelled jobs' count."""
    pending, delayed, reserved, succeeded, failed, oldest, cancelled = reply
    return QueueCounts(
        int(pending), int(delayed), int(reserved), int(succeeded), int(failed),
        float(oldest) if oldest else None, int(cancelled),
    )  # fmt: skip


def score_pairs(reply: list[Any]) -> list[tuple[str, str]]:
    """(member, score) pairs from a WITHSCORES reply, flat or paired (RESP2 or RESP3)."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(member, score) for member, score in reply]
    items = iter(reply)
    return list(zip(items, items, strict=True))
