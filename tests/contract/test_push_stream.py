"""push_stream: a batch handed over in parts (as Registry.push_many makes a chunk), stored as one
push_many would store it: in order, all or none. A `streamed_push` driver writes each part as it
comes (postgres); the others gather the parts first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from conveyor.drivers.base import Driver
from conveyor.job import JobBatch, NewJob, new_ids
from tests.backends import needs

from .helpers import make_job

#: Jobs per part: past postgres's COPY threshold (100), as Registry.push_many's parts are.
PART = 600


def batches(count: int, size: int = PART, **overrides: object) -> list[JobBatch]:
    """`count` JobBatches of `size` jobs alike, their ids counting up across all of them."""
    ids = new_ids(count * size)
    parts = []
    for first in range(0, count * size, size):
        part_ids = ids[first : first + size]
        payloads = [f'{{"n":{n}}}' for n in range(first, first + size)]
        template = make_job(id=part_ids[0], payload=payloads[0], **overrides)
        parts.append(JobBatch(template, part_ids, payloads))
    return parts


async def streamed(parts: Sequence[Sequence[NewJob]]) -> AsyncIterator[Sequence[NewJob]]:
    for part in parts:
        yield part


def ids_of(parts: Sequence[Sequence[NewJob]]) -> list[str]:
    return [job.id for part in parts for job in part]


@needs("lookup")
async def test_push_stream_stores_every_part_in_order(driver: Driver) -> None:
    parts = batches(3, priority=2, meta={"m": 1})

    assert await driver.push_stream(streamed(parts)) == ids_of(parts)

    for n in (0, PART - 1, PART, 3 * PART - 1):
        got = await driver.get(ids_of(parts)[n])
        assert got is not None
        assert (got.payload, got.priority, got.meta) == (f'{{"n":{n}}}', 2, {"m": 1})
    assert (await driver.counts(["q"]))["q"].pending == 3 * PART


async def test_push_stream_of_small_parts_across_queues_stores_each_job(driver: Driver) -> None:
    parts = [[make_job(queue="a"), make_job(queue="b")], [make_job(queue="b")]]

    assert await driver.push_stream(streamed(parts)) == ids_of(parts)

    counts = await driver.counts(["a", "b"])
    assert (counts["a"].pending, counts["b"].pending) == (1, 2)


async def test_push_stream_of_nothing_returns_empty_list(driver: Driver) -> None:
    assert await driver.push_stream(streamed([])) == []


async def test_push_stream_whose_parts_fail_midway_stores_none(driver: Driver) -> None:
    # A payload that does not validate, in Registry.push_many's second part of a chunk.
    first, _ = batches(2)

    async def failing() -> AsyncIterator[Sequence[NewJob]]:
        yield first
        raise ValueError("payload 600 does not validate")

    with pytest.raises(ValueError, match="payload 600"):
        await driver.push_stream(failing())

    assert (await driver.counts(["q"]))["q"].pending == 0
    assert await driver.push_stream(streamed([first])) == list(first.ids)  # nothing held


@needs("lookup")
async def test_push_stream_of_later_parts_of_single_or_differing_jobs(driver: Driver) -> None:
    [first] = batches(1)
    alone = make_job(payload='{"alone":1}', priority=5)
    differing = [make_job(timeout=2.0, meta={"k": "v"}), make_job(max_attempts=3, delay=600.0)]

    ids = await driver.push_stream(streamed([first, [alone], differing]))

    assert ids == [*first.ids, alone.id, *(job.id for job in differing)]
    for job in (alone, *differing):
        got = await driver.get(job.id)
        assert got is not None
        assert (got.payload, got.priority, got.timeout, got.meta, got.max_attempts) == (
            job.payload, job.priority, job.timeout, job.meta, job.max_attempts
        )  # fmt: skip
    delayed = await driver.get(differing[1].id)
    assert delayed is not None and delayed.available_at - delayed.created_at == pytest.approx(600)


@needs("unique")
@needs("exact_counts")
async def test_push_stream_takes_later_parts_unlike_the_first(driver: Driver) -> None:
    # A later part with unique keys or another queue than the first: stored as push_many
    # would store the whole batch (postgres's COPY cannot take it as it comes).
    [first] = batches(1)
    holder, again, elsewhere = make_job(unique="k"), make_job(unique="k"), make_job(queue="b")

    ids = await driver.push_stream(streamed([first, [holder, again], [elsewhere]]))

    assert ids == [*first.ids, holder.id, holder.id, elsewhere.id]
    counts = await driver.counts(["q", "b"])
    assert (counts["q"].pending, counts["b"].pending) == (PART + 1, 1)


@needs("unique")
@needs("exact_counts")
async def test_push_stream_again_stores_nothing_twice(driver: Driver) -> None:
    # The same stream pushed again, as after a reply lost on the way back.
    parts = batches(2)
    await driver.push_stream(streamed(parts))

    assert await driver.push_stream(streamed(parts)) == ids_of(parts)

    assert (await driver.counts(["q"]))["q"].pending == 2 * PART
