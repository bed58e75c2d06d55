"""Pushing: how the registry makes jobs (options resolved, payloads encoded, ids drawn) and
hands them to their queue's driver, one (`push`) or many (`push_many`). A push is two
halves, `new_job` then `store`, so that the blocking facade can make a job in the caller's
thread and store it there too where the driver can (`thread_pusher`), without a second
implementation of either half.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from conveyor import retry as retry_policy
from conveyor.drivers.base import Driver
from conveyor.duration import Duration, seconds
from conveyor.errors import ConfigError, PayloadError, RegistryError, UnknownJobError
from conveyor.hooks import pushed
from conveyor.job import JobBatch, NewJob, joined, new_id, new_ids
from conveyor.options import NO_OPTIONS, Options, Resolved, check_unique, resolve
from conveyor.payload import not_utf8
from conveyor.registration import Registration
from conveyor.retry import RetryDelay

__all__ = ["JOB_ID", "PUSH_CHUNK", "Pushing", "check_job_id", "chunked", "stored_ids"]

T = TypeVar("T")

#: What a job id given to `push` may be: what every driver stores and compares exactly.
JOB_ID = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.:-]{1,64}")  # not . or .. (as NAME_PATTERN)


#: Payloads `push_many` stores per call to the driver (one round trip, all or none), by default.
PUSH_CHUNK = 10_000

#: Payloads `push_many` encodes between two turns of the event loop, so that the write of the
#: chunk before moves on while the next one is made.
ENCODE_STEP = 1_000


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` as lists of `size` (the last one shorter), read lazily: a generator is drawn
    from one list at a time."""
    iterator = iter(items)
    while part := list(itertools.islice(iterator, size)):
        yield part


async def _kept(parts: AsyncIterator[T], kept: list[T]) -> AsyncIterator[T]:
    """`parts`, each also added to `kept` as it is yielded."""
    async for part in parts:
        kept.append(part)
        yield part


async def _gathered(parts: AsyncIterator[Sequence[NewJob]]) -> Sequence[NewJob]:
    """A chunk's parts as one batch (see `joined`)."""
    return joined([part async for part in parts])


def _named(make: Callable[[Any], NewJob], index: int, payload: Any) -> NewJob:
    """`make(payload)`, a PayloadError naming the payload's index in push_many's payloads."""
    try:
        return make(payload)
    except PayloadError as exc:
        raise PayloadError(f"payloads[{index}]: {exc}") from exc


def check_job_id(job_id: str) -> str:
    """`job_id` if it can be a job's id, else ConfigError naming the rule."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ConfigError(
            f"job_id {job_id!r} is not valid: use 1 to 64 of the characters"
            " A-Z a-z 0-9 _ . : -, not . or .. alone"
        )
    return job_id


def stored_ids(ids: Sequence[str]) -> list[str]:
    """Of `ids` (to look up, cancel, retry or purge), those a stored job may have: none holds a
    NUL or a lone surrogate (what argv holds for bytes that are not UTF-8), as no driver stores
    one. Handed on, SQLite read 'ID\\0x' as 'ID' (and cancelled or purged job ID), the other
    drivers raised their client's error. RegistryError for ids given as one string (each of
    its characters was taken for an id) or an id that is not a string."""
    if isinstance(ids, str):
        raise RegistryError(
            f"ids must be a list of job ids, not the string {ids!r}: write ids=[{ids!r}]"
        )
    if wrong := [job_id for job_id in ids if not isinstance(job_id, str)]:
        raise RegistryError(f"job id {wrong[0]!r} is not a string: job ids are strings")
    return [job_id for job_id in ids if "\0" not in job_id and not not_utf8(job_id)]


def check_page(limit: int, offset: int, after: str | None) -> None:
    """RegistryError naming the fix for a page `list_jobs` cannot give."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RegistryError(f"{name} must be a whole number, 0 or more, not {value!r}")
    if after is not None and not stored_ids([after]):
        raise RegistryError(
            f"after={after!r} is no job id (it holds a NUL or text that is not UTF-8):"
            " pass the id of the last job of the page before"
        )


class Pushing(Registration):
    """The registry's push side: `push`, `push_many` and the halves of a push."""

    def __init__(self, **settings: Any) -> None:
        """`settings` as `Registration` takes them."""
        super().__init__(**settings)
        #: `_settled` per (queue, job name), for pushes that give no options of their own.
        self._settled_pushes: dict[tuple[str, str], tuple[Resolved, str, Callable[[Any], str]]]
        self._settled_pushes = {}
        #: `_job_maker`'s makers for pushes that give no options, delay or unique key.
        self._plain_makers: dict[tuple[str, str], Callable[[Any], NewJob]] = {}

    async def push(
        self,
        queue: str,
        job_name: str,
        payload: Any,
        *,
        delay: Duration | None = None,
        unique: str | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        priority: int | None = None,
        connection: object | None = None,
        job_id: str | None = None,
    ) -> str:
        """Push one job and return its id.

        With `unique`, a push while an unfinished job of the same queue, job name and key
        exists stores nothing and returns that job's id. Options given here win over the
        job's defaults, which win over the queue's. With `connection` (your own open database
        connection, on a driver that supports it) the job is written in your transaction and
        exists only if it commits. With `job_id` (1 to 64 of A-Z a-z 0-9 _ . : -, not . or ..)
        the job gets that id, and a push of an id stored already stores nothing and returns it: a
        push you may repeat (a schedule's tick, a retried request) runs once."""
        new = self.new_job(
            queue,
            job_name,
            payload,
            delay=delay,
            unique=unique,
            retry=retry,
            retry_delay=retry_delay,
            timeout=timeout,
            meta=meta,
            priority=priority,
            job_id=job_id,
        )
        return await self.store(new, connection)

    def new_job(
        self,
        queue: str,
        job_name: str,
        payload: Any,
        *,
        delay: Duration | None = None,
        unique: str | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        priority: int | None = None,
        job_id: str | None = None,
    ) -> NewJob:
        """The job `push` stores, arguments as there: every option resolved, the payload
        validated and encoded, its id drawn (or `job_id`, checked). Nothing is stored."""
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        new = self._job_maker(queue, job_name, options, delay, unique)(payload)
        return new if job_id is None else replace(new, id=check_job_id(job_id))

    async def store(self, new: NewJob, connection: object | None = None) -> str:
        """Store a job made by `new_job` (the second half of `push`) and return its id."""
        driver = await self.driver_of(new.queue)
        job_id = await driver.push(new, connection=connection)
        if self.hooks.active and job_id == new.id:  # not the holder of its unique key
            await self.hooks.emit(pushed(new))
        if driver.capabilities.inline:
            await self._run_inline(new.queue)
        return job_id

    def thread_pusher(self, queue: str) -> Driver | None:
        """The driver that can store a job of `queue` made by `new_job` from a thread with no
        running event loop (`Driver.push_in_thread`), or None where a push needs the loop:
        the registry is not frozen yet (freezing is left to the loop's thread), the driver is
        not open or cannot (`thread_push`), or a hook waits to hear of each push (hooks are
        async). What `store` does around the driver's push is then nothing."""
        if not self._frozen:
            return None
        driver = self._resolve_driver(self.queue_spec(queue).driver)
        able = driver.capabilities.thread_push and not driver.capabilities.inline
        if not able or id(driver) not in self._opened or self.hooks.active:
            return None
        return driver

    async def push_many(
        self,
        queue: str,
        job_name: str,
        payloads: Iterable[Any],
        *,
        delay: Duration | None = None,
        retry: int | None = None,
        retry_delay: float | RetryDelay | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        priority: int | None = None,
        connection: object | None = None,
        chunk: int = PUSH_CHUNK,
    ) -> list[str]:
        """Push one job per payload, `chunk` payloads (10,000) per round trip where the backend
        allows. Returns the ids in order. `connection` as for `push`.

        `payloads` may be any iterable, a generator included: it is read `chunk` items at a
        time, so a million jobs never sit in memory at once (only their ids, returned; at most
        two chunks: the next one is read and encoded while the one before is written). Each
        chunk is all or none; with more than one, a fault in a later chunk (a payload that does
        not validate, a lost server) leaves the earlier ones stored, unless `connection` puts
        them all in your own transaction."""
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ConfigError(
                f"chunk {chunk!r} is not allowed: give a whole number of jobs per call, 1 or more"
            )
        chunk = min(chunk, sys.maxsize)  # more than any batch can hold: all in one
        options = Options.given(
            retry=retry, retry_delay=retry_delay, timeout=timeout, priority=priority, meta=meta
        )
        make = self._batch_maker(queue, job_name, options, delay)
        driver = await self.driver_of(queue)
        parts = chunked(payloads, chunk)
        if driver.capabilities.streamed_push and connection is None:
            # Each chunk streamed: its next part is encoded while the driver writes the ones
            # before (PostgreSQL's COPY takes rows as they come).
            ids: list[str] = []
            for part in parts:
                made: list[Sequence[NewJob]] = []
                stored = driver.push_stream(_kept(make(part), made))
                ids += await self._stored(stored, itertools.chain.from_iterable(made))
        else:
            ids = await self._push_chunks(driver, make, parts, connection)
        if driver.capabilities.inline and ids:
            await self._run_inline(queue)
        return ids

    async def _push_chunks(
        self,
        driver: Driver,
        make: Callable[[list[Any]], AsyncIterator[Sequence[NewJob]]],
        parts: Iterator[list[Any]],
        connection: object | None,
    ) -> list[str]:
        """push_many's chunks, each made (its payloads encoded and checked) while the one
        before it is written, so that waiting on the backend overlaps this thread's work. The
        chunks are still written one at a time and in order."""
        ids: list[str] = []
        part = next(parts, None)
        batch = None if part is None else await _gathered(make(part))
        while batch is not None:
            try:
                part = next(parts, None)
            except Exception:  # the payloads' own iterator failed: the chunk before is stored
                await self._stored(driver.push_many(batch, connection=connection), batch)
                raise
            if part is None:  # the last chunk: nothing to make meanwhile
                ids += await self._stored(driver.push_many(batch, connection=connection), batch)
                break
            write = asyncio.ensure_future(driver.push_many(batch, connection=connection))
            try:
                await asyncio.sleep(0)  # the write begins before the next chunk is made
                following = await _gathered(make(part))
            except Exception:  # the next chunk's fault: this one is stored first, as promised
                await self._stored(write, batch)
                raise
            except BaseException:  # cancelled
                write.cancel()
                raise
            ids += await self._stored(write, batch)
            batch = following
        return ids

    async def _stored(self, write: Awaitable[list[str]], batch: Iterable[NewJob]) -> list[str]:
        """The ids `write` stored `batch` under, once the hooks were told of each job (`batch`
        is read only then)."""
        ids = await write
        if self.hooks.active:
            for new, stored_id in zip(batch, ids, strict=True):
                await self.hooks.emit(pushed(replace(new, id=stored_id)))
        return ids

    def _batch_maker(
        self, queue: str, job_name: str, options: Options, delay: Duration | None
    ) -> Callable[[list[Any]], AsyncIterator[Sequence[NewJob]]]:
        """`_job_maker` for a chunk of payloads: the same checks and options, the payloads
        encoded and validated ENCODE_STEP at a time, each step a part of the chunk (the loop
        turning between them), and the ids drawn at once (see `new_ids`)."""
        one = self._job_maker(queue, job_name, options, delay, None)
        codec = self._jobs[job_name].codec
        hooks = self.hooks
        made = 0  # payloads of the chunks before (made in order), for an error's index

        async def make(payloads: list[Any]) -> AsyncIterator[Sequence[NewJob]]:
            nonlocal made
            before, made = made, made + len(payloads)
            if hooks.stamps:  # each job's meta is stamped on its own
                yield [_named(one, at, payload) for at, payload in enumerate(payloads, before)]
                return
            template, ids = one(payloads[0]), new_ids(len(payloads))
            for start in range(0, len(payloads), ENCODE_STEP):
                if start:
                    await asyncio.sleep(0)  # a write in flight moves on meanwhile
                encoded = codec.encode_many(payloads[start : start + ENCODE_STEP], before + start)
                first = replace(template, id=ids[start], payload=encoded[0])
                yield JobBatch(first, ids[start : start + len(encoded)], encoded)

        return make

    def _job_maker(
        self,
        queue: str,
        job_name: str,
        options: Options,
        delay: Duration | None,
        unique: str | None,
    ) -> Callable[[Any], NewJob]:
        """Check and resolve everything a batch shares once; the maker then only encodes
        each payload and stamps it with an id and the time. The maker of a push that gives
        no option, delay or unique key (most do) is kept per queue and job, as `_settled`."""
        plain = options is NO_OPTIONS and delay is None and unique is None
        if plain and (queue, job_name) in self._plain_makers:
            return self._plain_makers[queue, job_name]
        self.freeze()
        check_unique(unique)
        resolved, retry_delay, encode = self._settled(queue, job_name, options)
        wait = 0.0 if delay is None else _delay(delay)

        def make(payload: Any) -> NewJob:
            return NewJob(
                id=new_id(),
                queue=queue,
                name=job_name,
                payload=encode(payload),
                delay=wait,
                max_attempts=resolved.max_attempts,
                priority=resolved.priority,
                timeout=resolved.timeout,
                retry_delay=retry_delay,
                unique=unique,
                # Each job its own dict: a handler may change its job's meta.
                meta=hooks.stamp(queue, job_name, resolved.meta)
                if hooks.stamps
                else dict(resolved.meta),
            )

        hooks = self.hooks
        if plain and (queue, job_name) in self._settled_pushes:  # only once frozen and valid
            self._plain_makers[queue, job_name] = make
        return make

    def _settled(
        self, queue: str, job_name: str, options: Options
    ) -> tuple[Resolved, str, Callable[[Any], str]]:
        """The options in force for a push of `job_name` to `queue` (once frozen), the stored
        form of its retry policy and its payload encoder. Kept per queue and job for pushes
        that give no options of their own (most do): the registry no longer changes."""
        key = (queue, job_name)
        if options is NO_OPTIONS and key in self._settled_pushes:
            return self._settled_pushes[key]
        queue_spec = self.queue_spec(queue)
        try:
            job_spec = self._jobs[job_name]
        except KeyError:
            raise UnknownJobError(job_name) from None
        resolved = resolve(options, job_spec.options, queue_spec.options)
        too_long = self.run_time_problem(queue_spec.driver, resolved.timeout)
        if too_long:
            raise ConfigError(f"job {job_name!r} on queue {queue!r} would run {too_long}")
        settled = (resolved, retry_policy.to_json(resolved.retry_delay), job_spec.codec.encode)
        if options is NO_OPTIONS:
            self._settled_pushes[key] = settled
        return settled

    async def _run_inline(self, queue: str) -> None:
        """Run `queue`'s due jobs now, as a driver with the `inline` capability (sync) asks
        after each push. The core has no worker to run them with; `Registry` has."""
        raise RegistryError(
            f"queue {queue!r} is on the sync driver, which runs each job inside push: "
            "use conveyor.Registry, whose push can run it"
        )


def _delay(delay: Duration) -> float:
    """`delay` as seconds; ConfigError unless it is from 0 to 100 years (MAX_SECONDS)."""
    return seconds(delay, "delay", zero_ok=True)
