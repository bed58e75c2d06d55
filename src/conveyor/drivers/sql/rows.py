"""Between Python values and the SQL dialects' parameters and rows: batch parameters as one
JSON text, push items in queries.sql's column order, rows read into JobInfo and QueueCounts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from conveyor.drivers.base import QueueCounts
from conveyor.drivers.record import read_job
from conveyor.drivers.sql.adapter import Row
from conveyor.job import ErrorInfo, JobBatch, JobInfo, JobState, NewJob

__all__ = [
    "SHARED_COLUMNS",
    "addressable",
    "alike",
    "any_unique",
    "error_json",
    "holder_items",
    "id_payloads",
    "ids_json",
    "in_key_order",
    "job_ids",
    "job_info",
    "job_queues",
    "json_text",
    "own_last",
    "push_item",
    "queue_counts",
    "shared_params",
    "stored_state",
]
log = logging.getLogger("conveyor.sql")


def json_text(value: object) -> str:
    """Compact JSON text for a batch parameter (non-ASCII kept as is: it is UTF-8 anyway)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def push_item(job: NewJob) -> list[object]:
    """One push_many item, in the column order queries.sql documents."""
    return [
        job.id, job.queue, job.name, job.payload, job.delay, job.max_attempts, job.priority,
        job.timeout, job.retry_delay, job.unique, json_text(job.meta) if job.meta else "{}",
    ]  # fmt: skip


#: The parameters of push_many_shared (a column each) and the NewJob field each is read from.
SHARED_COLUMNS = {
    "queue": "queue",
    "name": "name",
    "delay": "delay",
    "max_attempts": "max_attempts",
    "priority": "priority",
    "timeout": "timeout",
    "retry_delay": "retry_delay",
}


def any_unique(jobs: Sequence[NewJob]) -> bool:
    """Whether any of the jobs has a unique key (never one of a JobBatch)."""
    return not isinstance(jobs, JobBatch) and any(job.unique is not None for job in jobs)


def alike(jobs: Sequence[NewJob]) -> bool:
    """Whether the jobs differ in id and payload only (none has a unique key): what
    push_many_shared takes. Those of a JobBatch always do."""
    if isinstance(jobs, JobBatch):
        return True
    first = jobs[0]
    queue, name, delay, meta = first.queue, first.name, first.delay, first.meta
    attempts, priority, timeout, retry = (
        first.max_attempts, first.priority, first.timeout, first.retry_delay
    )  # fmt: skip
    return all(
        job.queue == queue and job.name == name and job.delay == delay
        and job.max_attempts == attempts and job.priority == priority
        and job.timeout == timeout and job.retry_delay == retry and job.unique is None
        and (job.meta is meta or job.meta == meta)
        for job in jobs
    )  # fmt: skip


def shared_params(jobs: Sequence[NewJob]) -> dict[str, object] | None:
    """push_many_shared's parameters for jobs alike but for id and payload (a batch from
    `Registry.push_many`): items as [[id, payload], ...], each other column once. None for
    a single job or jobs that differ in more."""
    if len(jobs) < 2 or not alike(jobs):
        return None
    first = jobs[0]
    return {
        "items": json_text(list(zip(*id_payloads(jobs), strict=True))),
        **{column: getattr(first, field) for column, field in SHARED_COLUMNS.items()},
        "meta": json_text(first.meta) if first.meta else "{}",
    }


def job_ids(jobs: Sequence[NewJob]) -> list[str]:
    """The jobs' ids, in order (a JobBatch's read off its list)."""
    return list(jobs.ids) if isinstance(jobs, JobBatch) else [job.id for job in jobs]


def job_queues(jobs: Sequence[NewJob]) -> list[str]:
    """The queues the jobs go to, each once, sorted (a JobBatch's one queue)."""
    if isinstance(jobs, JobBatch):
        return [jobs.template.queue]
    return sorted({job.queue for job in jobs})


def id_payloads(jobs: Sequence[NewJob]) -> tuple[Sequence[str], Sequence[str]]:
    """The jobs' ids and their payloads, as two sequences in order; a JobBatch's own lists."""
    if isinstance(jobs, JobBatch):
        return jobs.ids, jobs.payloads
    return [job.id for job in jobs], [job.payload for job in jobs]


#: What a push item holds besides its job's text fields, in characters at most: an id (64),
#: the numbers, and the JSON around them.
ITEM_SIZE = 160


def parts(jobs: Sequence[NewJob], budget: int | None) -> list[Sequence[NewJob]]:
    """`jobs` in order, cut into parts whose push items hold at most `budget` characters
    together (a larger job is a part alone); one part when `budget` is None."""
    if budget is None:  # most dialects: nothing to read on push_many's path
        return [jobs]
    sizes = _item_sizes(jobs)
    if sum(sizes) <= budget:
        return [jobs]
    cut: list[Sequence[NewJob]] = []
    start = total = 0
    for n, size in enumerate(sizes):
        if total and total + size > budget:
            cut.append(jobs[start:n])
            start, total = n, 0
        total += size
    cut.append(jobs[start:])
    return cut


def _item_sizes(jobs: Sequence[NewJob]) -> list[int]:
    """Each job's push item, in characters at most: its payload, its other text (a JobBatch's
    is its template's, sent once) and ITEM_SIZE. A batch of small payloads is mostly the rest:
    counting payloads alone, 500,000 jobs of `{}` made one statement past the server's limit."""
    if isinstance(jobs, JobBatch):
        return [len(payload) + ITEM_SIZE for payload in jobs.payloads]
    return [
        len(job.payload) + len(job.queue) + len(job.name) + len(job.retry_delay or "")
        + len(job.unique or "") + (len(json_text(job.meta)) if job.meta else 0) + ITEM_SIZE
        for job in jobs
    ]  # fmt: skip


def holder_items(batch: Sequence[tuple[int, NewJob]]) -> str:
    """push_many_holders' items for the unique jobs of `batch`: [index in batch, queue, name,
    unique key, id] each."""
    items = [[n, job.queue, job.name, job.unique, job.id] for n, (_, job) in enumerate(batch)]
    return json_text([item for item in items if item[3] is not None])


def own_last(rows: Sequence[Row], batch: Sequence[tuple[int, NewJob]]) -> list[Row]:
    """push_many_holders' rows with each job's own (its id stored) after its key's holder,
    so that writing them in order gives a push of a stored id that id, as `push` promises,
    even when another job now holds its key."""
    return sorted(rows, key=lambda row: row["id"] == batch[row["item"]][1].id)


def in_key_order(batch: list[tuple[int, NewJob]]) -> list[tuple[int, NewJob]]:
    """`batch` sorted by (queue, name, unique key), jobs without a key first; stable, so of
    two jobs sharing a key the first stays first. Every push inserts its keys in this one
    order: two batches inserting shared keys in orders of their own would each wait on a key
    the other inserted, a deadlock the server ends by failing one of the pushes."""
    return sorted(batch, key=lambda item: (item[1].queue, item[1].name, item[1].unique or ""))


def error_json(error: ErrorInfo | None) -> str | None:
    return None if error is None else json_text(error.to_dict())


def ids_json(ids: Sequence[str] | None) -> str | None:
    """None (meaning every job) stays NULL; a list becomes one JSON parameter."""
    return None if ids is None else json_text(list(ids))


def stored_state(state: JobState) -> str:
    """The state as stored: `delayed` is never stored, it is a pending job not yet due."""
    return JobState.PENDING.value if state is JobState.DELAYED else state.value


def queue_counts(by_state: Mapping[str, int], oldest_pending_age: float | None) -> QueueCounts:
    return QueueCounts(
        pending=by_state.get("pending", 0),
        delayed=by_state.get("delayed", 0),
        reserved=by_state.get("reserved", 0),
        succeeded=by_state.get("succeeded", 0),
        failed=by_state.get("failed", 0),
        oldest_pending_age=oldest_pending_age,
        cancelled=by_state.get("cancelled", 0),
    )


def job_info(row: Row) -> JobInfo:
    """A stored row as the JobInfo a caller sees (pending and not yet due reads `delayed`);
    a damaged field is named in `unreadable` rather than raised (see drivers/record.py).
    A row fetched as a dict (every adapter's) gets its `unique` key added in place, not copied:
    rows are read once, and a copy of a job's 25 columns cost 1.9 µs on every reserve."""
    raw = row if type(row) is dict else dict(row)
    raw["unique"] = raw["unique_key"]
    return read_job(raw, raw["now"])


def addressable(job: JobInfo) -> bool:
    """False for a job whose id is not UTF-8 text: no statement can name it to settle it, so
    it is left reserved (it comes back after its lease) and reported, never run."""
    if "id" not in job.unreadable:
        return True
    log.error(
        "job %s in queue %s has an id that is not UTF-8 text (%s): it cannot be run, settled"
        " or failed; delete its row by hand", ascii(job.id), job.queue, job.unreadable["id"],
    )  # fmt: skip
    return False


def nameable(job_id: str) -> bool:
    """Whether a statement can name this id: False for one read from bytes that are not
    UTF-8 (kept as lone surrogates), as `addressable` says of a whole job."""
    try:
        job_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
