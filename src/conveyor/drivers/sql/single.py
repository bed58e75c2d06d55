"""A single push on SQL: the dialect's `push` block, one statement of plain parameters."""

from __future__ import annotations

import abc

from conveyor.drivers.base import Driver
from conveyor.drivers.local import LocalWakeup
from conveyor.drivers.sql.adapter import Params, SqlConnection
from conveyor.drivers.sql.queries import Query
from conveyor.drivers.sql.rows import json_text
from conveyor.job import NewJob

__all__ = ["SinglePush", "push_params"]


class SinglePush(Driver):
    """`push` of one job, the way a web request pushes. A job without a unique key, pushed
    outside the caller's transaction, is the dialect's `push` statement alone (it notifies
    waiting workers itself where the dialect can: PostgreSQL's NOTIFY rides in it); any other
    push goes through push_many, whose unique-key handling needs more than one statement."""

    _queries: dict[str, Query]
    _pushed: LocalWakeup
    _opened: bool

    @abc.abstractmethod
    async def _ready(self) -> SqlConnection:
        """The connection, opened (and migrated) on first use."""

    async def push(self, job: NewJob, *, connection: object | None = None) -> str:
        query = self._queries.get("push")
        if query is None or job.unique is not None or connection is not None:
            return (await self.push_many([job], connection=connection))[0]
        await (await self._ready()).execute(query, push_params(job))
        self._pushed.notify((job.queue,))
        return job.id

    def _thread_push(self, job: NewJob) -> Query | None:
        """The `push` statement a dialect's `push_in_thread` may run for `job` from a plain
        thread, or None: a job with a unique key (that takes a transaction), or a driver not
        opened yet (its first push opens and migrates it, on the event loop)."""
        query = self._queries.get("push")
        if query is None or job.unique is not None or not self._opened:
            return None
        return query


def push_params(job: NewJob) -> Params:
    """The dialect's `push` statement's parameters for one job without a unique key."""
    return {
        "id": job.id,
        "queue": job.queue,
        "name": job.name,
        "payload": job.payload,
        "delay": float(job.delay),
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "timeout": None if job.timeout is None else float(job.timeout),
        "retry_delay": job.retry_delay,
        "meta": json_text(job.meta) if job.meta else "{}",
    }
