"""Between Python values and the SQL dialects' parameters and rows: batch parameters as one
JSON text, push items in queries.sql's column order, rows read into JobInfo and QueueCounts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from conveyor.drivers.base import QueueCounts
from conveyor.drivers.record import read_job
from conveyor.drivers.sql.adapter import Row
from conveyor.job import ErrorInfo, JobInfo, JobState, NewJob

__all__ = [
    "addressable",
    "error_json",
    "ids_json",
    "job_info",
    "json_text",
    "push_item",
    "queue_counts",
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
    a damaged field is named in `unreadable` rather than raised (see drivers/record.py)."""
    return read_job({**row, "unique": row["unique_key"]}, row["now"])


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
