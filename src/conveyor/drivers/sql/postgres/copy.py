"""push_many's rows as the text of a COPY into the jobs table (PostgreSQL's text format): one
line per job, its columns in the order of queries.sql's push_many_copy_jobs, a tab between
them, `\\N` for NULL.

Built here rather than by psycopg's row writer: that is one awaited call per row, and a batch
of jobs alike (one `Registry.push_many` chunk) shares every column but its id and payload, so
the rest of each line is formatted once and joined (about 0.2 µs a job against 2 µs).
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.drivers.sql.rows import alike, id_payloads, json_text
from conveyor.job import NewJob

__all__ = ["copy_heads", "copy_text"]

#: What COPY's text format reads as an escape, and what each character is written as.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    """`value` as a COPY text field: a backslash, tab, newline or carriage return escaped (a
    payload's JSON holds backslashes in its own escapes; ids never hold any)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def _field(value: str | float | None) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _text(value)
    return repr(value)  # a float's repr reads back as the same float8


def copy_heads(jobs: Sequence[NewJob]) -> list[str]:
    """The start of each job's line: its id and payload."""
    ids, payloads = id_payloads(jobs)
    pairs = zip(ids, payloads, strict=True)
    return [f"{_text(job_id)}\t{_text(payload)}" for job_id, payload in pairs]


def _tail(job: NewJob, now: float) -> str:
    """The rest of `job`'s line, from its queue on, the job created at `now`."""
    fields = (
        job.queue, job.name, now, now + job.delay, job.max_attempts, job.priority,
        job.timeout, job.retry_delay, json_text(job.meta) if job.meta else "{}",
    )  # fmt: skip
    return "\t" + "\t".join(map(_field, fields)) + "\n"


def copy_text(jobs: Sequence[NewJob], heads: Sequence[str], now: float) -> str:
    """Every line of `jobs` (whose `heads` copy_heads made), each created at `now`, the
    server's clock, and due `delay` seconds later: what push_many's insert computes."""
    if alike(jobs):
        tail = _tail(jobs[0], now)
        return tail.join(heads) + tail
    return "".join(head + _tail(job, now) for head, job in zip(heads, jobs, strict=True))
