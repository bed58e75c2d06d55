"""A streamed push on SQL: `push_stream` writes each part of a chunk as it comes, in one
transaction, while the core encodes the next part (a dialect with the `streamed_push`
capability brings `_push_parts`: postgres's COPY, sqlite's statements on its thread). Shared
here: which streams go through push_many instead, and a later part a stream cannot take."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

from conveyor.drivers.base import Driver
from conveyor.drivers.local import LocalWakeup
from conveyor.drivers.sql.rows import any_unique, job_ids, job_queues
from conveyor.job import NewJob, joined

__all__ = ["STREAM_FROM", "StreamedPush", "Unlike", "streamed_parts"]

#: Jobs a stream's first part needs to be written part by part; a shorter one (a small push)
#: is pushed as push_many pushes it, in one statement, cheaper than a stream's round trips.
STREAM_FROM = 100


class Unlike(Exception):
    """A later part of a stream that its writer cannot take as it comes: one with a unique
    key (a unique push reads before it writes), or with a queue the first part has not."""


async def streamed_parts(
    kept: list[Sequence[NewJob]], more: AsyncIterator[Sequence[NewJob]] | None
) -> AsyncIterator[Sequence[NewJob]]:
    """kept[0], then each part `more` yields, added to `kept` as it comes. A part unlike the
    first raises Unlike: its writer rolls back, and push_stream pushes them all at once."""
    queues = set(job_queues(kept[0]))
    yield kept[0]
    if more is None:
        return
    async for part in more:
        kept.append(part)
        if any_unique(part) or not queues.issuperset(job_queues(part)):
            raise Unlike
        yield part


class StreamedPush(Driver):
    """`push_stream` of the SQL drivers (see the module docstring)."""

    _pushed: LocalWakeup

    async def push_stream(self, parts: AsyncIterable[Sequence[NewJob]]) -> list[str]:
        if not self.capabilities.streamed_push:
            return await super().push_stream(parts)
        stream = aiter(parts)
        first = await anext(stream, None)
        if first is None:
            return []
        if len(first) < STREAM_FROM or any_unique(first):
            return await self.push_many(joined([first, *[part async for part in stream]]))
        kept = [first]
        try:
            await self._push_parts(kept, stream)
        except Unlike:  # gathered, then pushed as a whole
            return await self.push_many(joined(kept + [part async for part in stream]))
        self._pushed.notify()
        return [job_id for part in kept for job_id in job_ids(part)]

    async def _push_parts(
        self, kept: list[Sequence[NewJob]], more: AsyncIterator[Sequence[NewJob]] | None
    ) -> None:
        """Store the jobs of each part `streamed_parts(kept, more)` yields, in one transaction,
        each part written as it comes; none of them if it raises (Unlike included). The jobs
        have no unique keys; an id stored already is kept as it is, as push_many keeps it."""
        raise self.unsupported("a push streamed part by part")
