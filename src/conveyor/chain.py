"""Cursor-chained batch jobs: walk millions of records a bounded page at a time.

    @registry.job("export.page", queue="batch", chain=True)
    async def export_page(job: Job[Shard]) -> str | None:
        rows = await fetch(job.payload.shard, after=job.cursor, limit=1000)
        await write(rows)
        return rows[-1].id if rows else None      # the next page's cursor; None ends the chain

    chain_id = await registry.start_chain("export.page", Shard(3))

Each page is one job. When a page's handler returns a cursor, the worker pushes the next page
(same queue, job, payload and options; `job.cursor` set to what was returned) before it acks
the page, so a chain is never broken: a crash between the two runs the page again, and its
successor's push then stores nothing, for every page's id is made of the chain's id and the
page's number (`job.stable_id`). A page that fails for good stops the chain in failed storage;
`failed retry` runs it again and the chain goes on from there.

A chain has no record of its own: `chain_info` finds its pages by their ids, so it sees the
pages the queue's retention still keeps.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from conveyor.job import JobInfo, JobState, NewJob, stable_id

__all__ = [
    "ChainInfo",
    "chain_meta",
    "find_chain",
    "next_page",
    "other_start",
    "page_id",
    "with_successor",
]

#: The metadata keys a page carries: its chain's id, its number (0 first) and its cursor.
CHAIN, PAGE, CURSOR = "chain", "page", "cursor"


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """What `registry.chain_info` tells of a chain: how many pages exist (done or not), the
    latest page and the cursor it was handed, when the first page was pushed, and the
    chain's state: `running` (the latest page is pending, delayed or reserved), `done` (it
    succeeded and returned None), `failed` or `cancelled` (it stopped there), `broken` (it
    succeeded and returned a cursor, but its next page is gone: purged or pruned)."""

    id: str
    pages: int
    state: str
    cursor: Any
    started_at: float | None
    last: JobInfo


def page_id(chain_id: str, page: int) -> str:
    """The id of page `page` of chain `chain_id`: the same in every process."""
    return stable_id(0.0, "chain", chain_id, str(page))


def chain_meta(chain_id: str, page: int, cursor: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """A page's metadata: `meta` with the chain's keys set."""
    return {**meta, CHAIN: chain_id, PAGE: page, CURSOR: cursor}


def other_start(first: JobInfo, job_name: str, queue: str, payload: str, cursor: Any) -> str:
    """What a start (`payload` as JSON text) differs in from `first`, the chain's stored first
    page: '' when it is the same start (a start repeated, as a retried tick does)."""
    import pydantic_core  # imported by the job's codec already; not by `import conveyor`

    differs = [
        f"job {first.name!r}" if first.name != job_name else "",
        f"queue {first.queue!r}" if first.queue != queue else "",
        "payload" if json.loads(first.payload) != json.loads(payload) else "",
        "cursor" if first.meta.get(CURSOR) != json.loads(pydantic_core.to_json(cursor)) else "",
    ]
    return ", ".join(what for what in differs if what)


def next_page(job: JobInfo, cursor: Any) -> NewJob:
    """The page after `job`, due now, handed `cursor`."""
    chain_id, page = str(job.meta[CHAIN]), int(job.meta[PAGE]) + 1
    return NewJob(
        id=page_id(chain_id, page),
        queue=job.queue,
        name=job.name,
        payload=job.payload,
        max_attempts=job.max_attempts,
        priority=job.priority,
        timeout=job.timeout,
        retry_delay=job.retry_delay,
        meta=chain_meta(chain_id, page, cursor, job.meta),
    )


async def find_chain(
    get: Callable[[str], Awaitable[JobInfo | None]], chain_id: str
) -> ChainInfo | None:
    """The chain's pages looked up by id with `get` (a driver's): doubling steps to pass its
    end, then halving between the last page found and the first missing, so a chain of n pages
    costs about 2·log2(n) lookups, and one more for each page pushed meanwhile. None when its
    first page is not (or no longer) kept."""
    first: JobInfo | None = await get(page_id(chain_id, 0))
    if first is None:
        return None
    found, last, step = 0, first, 1
    missing: int | None = None
    while missing is None:
        job = await get(page_id(chain_id, found + step))
        if job is None:
            missing = found + step
        else:
            found, last, step = found + step, job, step * 2
    while missing - found > 1:
        middle = (found + missing) // 2
        job = await get(page_id(chain_id, middle))
        if job is None:
            missing = middle
        else:
            found, last = middle, job
    # A running chain grows while it is searched: a page found missing early may exist by the
    # time a page before it was read. Look at the next page once more after reading the last
    # one: a page that finished pushed its successor before (or as) it finished, so the next
    # page missing now means the last page read had not pushed one when it was read.
    while (job := await get(page_id(chain_id, found + 1))) is not None:
        found, last = found + 1, job
    return ChainInfo(
        chain_id, found + 1, _state(last), last.meta.get(CURSOR), first.created_at, last
    )


def _state(last: JobInfo) -> str:
    if last.state in (JobState.PENDING, JobState.DELAYED, JobState.RESERVED):
        return "running"
    if last.state is JobState.SUCCEEDED:
        # A page that returned a cursor stored its next page with its ack (ack_and_push): that
        # page missing now was purged or pruned, and the chain does not go on.
        went_on = last.result is not None and json.loads(last.result) is not None
        return "broken" if went_on else "done"
    return last.state.value


def with_successor(job: JobInfo, cursor: Any) -> NewJob | None:
    """The page to push after `job` returned `cursor`, or None when the chain ends there or
    `job` is not a page of a chain (pushed without `start_chain`)."""
    if cursor is None or CHAIN not in job.meta or PAGE not in job.meta:
        return None
    return next_page(job, cursor)
