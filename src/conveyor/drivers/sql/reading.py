"""The SQL driver's reading side: counts, listing and looking jobs up, and the worker
totals and presence records; a mixin of `SqlDriver`, which supplies `_fetch` and `_execute`
(each runs one named block of the dialect's queries.sql) and those blocks, `_queries`."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.drivers.base import QueueCounts, Throughput, WorkerCounts, WorkerPresence
from conveyor.drivers.sql.adapter import Params, Row
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.rows import job_info, json_text, queue_counts, stored_state
from conveyor.job import FINISHED_STATES, JobInfo, JobState

__all__ = ["SqlReading"]

#: The largest LIMIT or OFFSET every dialect takes (a signed 64-bit integer): more rows than
#: any table holds. Past it SQLite's client overflows, PostgreSQL's bigint is out of range and
#: MySQL's parser gives a syntax error.
_MOST = 2**63 - 1


class SqlReading:
    """The Driver methods that read jobs and keep worker records, over named SQL blocks."""

    _queries: dict[str, Query]

    async def _fetch(self, name: str, params: Params) -> list[Row]:
        raise NotImplementedError

    async def _execute(self, name: str, params: Params) -> int:
        raise NotImplementedError

    # -- reading -----------------------------------------------------------------------------

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        tally: dict[str, dict[str, int]] = {queue: {} for queue in queues}
        if not tally:
            return {}
        rows = await self._fetch("counts", {"queues": json_text(list(tally))})
        ages: dict[str, float] = {}
        for row in rows:
            tally[row["queue"]][row["state"]] = int(row["count"])  # MySQL sums are DECIMAL
            if row["state"] == "pending":
                ages[row["queue"]] = max(0.0, float(row["age"]))
        return {queue: queue_counts(by_state, ages.get(queue)) for queue, by_state in tally.items()}

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
        if limit <= 0:
            return []
        params = {
            "queue": queue,
            "state": state.value,
            "stored": stored_state(state),
            "limit": min(limit, _MOST),
            "offset": min(max(offset, 0), _MOST),
            "name": name,
            "after": after or "",  # every id sorts after '': ids are 1 to 64 characters
        }
        block = "list_jobs" if name is None else "list_jobs_named"
        if name is not None and state in (JobState.FAILED, JobState.CANCELLED):
            block = "list_jobs_named_failed"  # the partial index of failed and cancelled jobs
        return [job_info(row) for row in await self._fetch(self._by_state(block, state), params)]

    def _by_state(self, block: str, state: JobState) -> str:
        """`block`, or its `_live` twin for pending, delayed and reserved jobs where the
        dialect has one (sqlite: its partial indexes keep finished and unfinished jobs apart,
        and a statement reads one only when its text names the states that index holds)."""
        live = f"{block}_live"
        return live if state not in FINISHED_STATES and live in self._queries else block

    async def throughput(self, queue: str, minutes: int = 60) -> Throughput:
        rows = await self._fetch("throughput", {"queue": queue, "minutes": minutes})
        counted = [
            (row["state"], int(row["minute"]), int(row["count"]))
            for row in rows
            if row["state"] is not None
        ]
        return Throughput.of(float(rows[0]["start"]), minutes, counted)

    async def get(self, job_id: str) -> JobInfo | None:
        rows = await self._fetch("get", {"id": job_id})
        return job_info(rows[0]) if rows else None

    # -- worker totals -----------------------------------------------------------------------

    async def record_stats(self, worker: str, counts: WorkerCounts) -> None:
        params = {
            "worker": worker,
            "processed": counts.processed,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "retried": counts.retried,
        }
        await self._execute("record_stats", params)

    async def beat(self, identity: str, worker: str, *, stopping: bool = False) -> None:
        params = {"identity": identity, "worker": worker}
        await self._execute("beat_stopping" if stopping else "beat", params)

    async def alive(self, within: float) -> list[WorkerPresence]:
        rows = await self._fetch("alive", {"within": within})
        return [
            WorkerPresence(row["identity"], row["worker"], row["started_at"], row["seen_at"])
            for row in rows
        ]

    async def worker_stats(self) -> dict[str, WorkerCounts]:
        rows = await self._fetch("worker_stats", {})
        return {
            row["name"]: WorkerCounts(
                row["processed"], row["succeeded"], row["failed"], row["retried"]
            )
            for row in rows
        }
