"""push_many in bulk: any iterable read a chunk at a time, ids in order, batch encoding."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from conveyor import ConfigError, Job, JobState, PayloadError, Registry
from conveyor.hooks import Event
from conveyor.job import JobBatch, NewJob, new_ids


@dataclass
class Row:
    n: int


async def take_row(job: Job[Row]) -> None:
    """A handler that does nothing."""


def registry_of_rows() -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("rows", workers=["main"])
    registry.worker("main")
    registry.job("row")(take_row)
    return registry


async def test_push_many_reads_a_generator_one_chunk_at_a_time() -> None:
    registry = registry_of_rows()
    drawn = 0
    drawn_when_stored: list[int] = []

    def rows() -> Iterator[Row]:
        nonlocal drawn
        for n in range(25):
            drawn += 1
            yield Row(n)

    def stored(event: Event) -> None:
        drawn_when_stored.append(drawn)

    registry.hook("pushed")(stored)

    ids = await registry.push_many("rows", "row", rows(), chunk=10)

    assert len(ids) == len(set(ids)) == 25
    # The first ten were stored before the eleventh was drawn, and so on.
    assert drawn_when_stored == [10] * 10 + [20] * 10 + [25] * 5
    assert (await registry.queue_info())["rows"].pending == 25


async def test_push_many_returns_ids_in_the_order_of_the_payloads_across_chunks() -> None:
    registry = registry_of_rows()

    ids = await registry.push_many("rows", "row", (Row(n) for n in range(7)), chunk=3)

    jobs = await registry.list_jobs("rows", JobState.PENDING, limit=10)
    payloads = {job.id: job.payload for job in jobs}
    assert [payloads[job_id] for job_id in ids] == [f'{{"n":{n}}}' for n in range(7)]


async def test_push_many_of_a_bad_payload_raises_pushs_error_and_stores_none_of_its_chunk() -> None:
    registry = registry_of_rows()
    with pytest.raises(PayloadError) as single:
        await registry.push("rows", "row", {"n": "x"})

    with pytest.raises(PayloadError) as batch:
        await registry.push_many("rows", "row", [Row(1), {"n": "x"}, Row(3)])

    assert str(batch.value) == str(single.value)
    assert (await registry.queue_info())["rows"].pending == 0


async def test_a_bad_payload_in_a_later_chunk_leaves_the_earlier_chunks_stored() -> None:
    registry = registry_of_rows()

    def rows() -> Iterator[Row | dict[str, str]]:
        yield from (Row(n) for n in range(4))
        yield {"n": "x"}

    with pytest.raises(PayloadError):
        await registry.push_many("rows", "row", rows(), chunk=2)

    assert (await registry.queue_info())["rows"].pending == 4


async def test_push_many_refuses_a_chunk_below_one() -> None:
    registry = registry_of_rows()
    with pytest.raises(ConfigError, match="chunk 0"):
        await registry.push_many("rows", "row", [Row(1)], chunk=0)


def test_new_ids_count_up_in_the_order_of_the_batch() -> None:
    ids = new_ids(1000)

    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(len(job_id) == 32 and job_id[12] == "7" for job_id in ids)


def test_a_job_batch_reads_as_the_jobs_it_holds() -> None:
    template = NewJob(id="a", queue="q", name="n", payload="1", priority=2, meta={"m": 1})
    batch = JobBatch(template, ["a", "b", "c"], ["1", "2", "3"])

    assert len(batch) == 3
    jobs = [replace(template, id=i, payload=p) for i, p in [("a", "1"), ("b", "2"), ("c", "3")]]
    assert list(batch) == jobs
    assert batch[-1] == replace(template, id="c", payload="3")
    assert list(batch[1:]) == list(batch)[1:]
    with pytest.raises(ValueError, match="one payload per id"):
        JobBatch(template, ["a"], [])
    with pytest.raises(ValueError, match="no unique key"):
        JobBatch(replace(template, unique="k"), ["a"], ["1"])
