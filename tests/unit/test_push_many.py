"""push_many in bulk: any iterable read a chunk at a time, ids in order, batch encoding."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
from pydantic import BaseModel, field_validator

import conveyor.job
from conveyor import ConfigError, Job, JobState, PayloadError, Registry
from conveyor.drivers.memory import MemoryDriver
from conveyor.drivers.sql.rows import ITEM_SIZE, parts
from conveyor.hooks import Event
from conveyor.job import JobBatch, NewJob, joined, new_id, new_ids


@dataclass
class Row:
    n: int


async def take_row(job: Job[Row]) -> None:
    """A handler that does nothing."""


class StreamedMemory(MemoryDriver):
    """A memory driver that takes each chunk as a stream of parts, as postgres does (its
    `push_stream` writes each part as it comes); notes each part as it arrives."""

    capabilities = replace(MemoryDriver.capabilities, streamed_push=True)

    def __init__(self, seen: list[str] | None = None) -> None:
        super().__init__()
        self.seen = [] if seen is None else seen

    async def push_stream(self, parts: AsyncIterable[Sequence[NewJob]]) -> list[str]:
        got = []
        async for part in parts:
            self.seen.append(f"part of {len(part)}")
            got.append(part)
            await asyncio.sleep(0.01)  # the server storing it meanwhile
        return await self.push_many(joined(got))


@pytest.fixture(params=["gathered", "streamed"])
def kind(request: pytest.FixtureRequest) -> str:
    """How the driver takes push_many's chunks: whole, or as streams of parts."""
    return str(request.param)


def registry_of_rows(kind: str = "gathered") -> Registry:
    registry = Registry(default_driver="memory")
    driver = StreamedMemory() if kind == "streamed" else None
    registry.queue("rows", driver=driver, workers=["main"])
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
    # Each chunk was stored before the one after the next was drawn (the next one is made
    # while it is written): never more than two chunks at once.
    assert drawn_when_stored == [20] * 10 + [25] * 15
    assert (await registry.queue_info())["rows"].pending == 25


async def test_push_many_returns_ids_in_the_order_of_the_payloads_across_chunks(kind: str) -> None:
    registry = registry_of_rows(kind)

    ids = await registry.push_many("rows", "row", (Row(n) for n in range(7)), chunk=3)

    jobs = await registry.list_jobs("rows", JobState.PENDING, limit=10)
    payloads = {job.id: job.payload for job in jobs}
    assert [payloads[job_id] for job_id in ids] == [f'{{"n":{n}}}' for n in range(7)]


async def test_push_many_of_a_bad_payload_names_its_index_and_stores_none_of_its_chunk(
    kind: str,
) -> None:
    registry = registry_of_rows(kind)
    with pytest.raises(PayloadError) as single:
        await registry.push("rows", "row", {"n": "x"})

    with pytest.raises(PayloadError) as batch:
        await registry.push_many("rows", "row", [Row(1), {"n": "x"}, Row(3)])

    assert str(batch.value) == f"payloads[1]: {single.value}"  # push's error, and which one
    assert (await registry.queue_info())["rows"].pending == 0


async def test_a_bad_payload_in_a_later_chunk_leaves_the_earlier_chunks_stored(kind: str) -> None:
    registry = registry_of_rows(kind)

    def rows() -> Iterator[Row | dict[str, str]]:
        yield from (Row(n) for n in range(4))
        yield {"n": "x"}

    with pytest.raises(PayloadError):
        await registry.push_many("rows", "row", rows(), chunk=2)

    assert (await registry.queue_info())["rows"].pending == 4


async def test_a_failing_iterator_leaves_the_chunks_before_its_failure_stored(kind: str) -> None:
    registry = registry_of_rows(kind)
    told: list[str] = []
    registry.hook("pushed")(lambda event: told.append(event.job_id))

    def rows() -> Iterator[Row]:
        yield from (Row(n) for n in range(5))
        raise OSError("the file ended early")

    with pytest.raises(OSError, match="ended early"):
        await registry.push_many("rows", "row", rows(), chunk=2)

    # Two whole chunks; the third (Row(4), then the failure) is all or none.
    assert (await registry.queue_info())["rows"].pending == 4
    assert len(told) == 4  # the hooks heard of every job stored


class SlowWrites(MemoryDriver):
    """Each push_many takes a while, as a write to a server does; notes when it starts and ends."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    async def push_many(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[str]:
        self.seen.append(f"write {len(jobs)} jobs")
        await asyncio.sleep(0.05)
        ids = await super().push_many(jobs, connection=connection)
        self.seen.append("written")
        return ids


class Noted(BaseModel):
    """A payload whose validation notes its number: when push_many encodes it."""

    n: int

    @field_validator("n")
    @classmethod
    def note(cls, n: int) -> int:
        ENCODED.append(f"encode {n}")
        return n


ENCODED: list[str] = []


async def test_the_next_chunk_is_encoded_while_the_one_before_is_written() -> None:
    ENCODED.clear()
    registry = Registry()
    registry.queue("rows", driver=SlowWrites(ENCODED), workers=["main"])
    registry.worker("main")

    @registry.job("noted")
    async def noted(job: Job[Noted]) -> None:
        """Never run here."""

    ids = await registry.push_many("rows", "noted", (Noted(n=n) for n in range(4)), chunk=2)

    assert len(ids) == 4
    # Each payload is validated once as given and once as read back (encode_many).
    first, second = ENCODED.index("write 2 jobs"), ENCODED.index("written")
    assert {"encode 2", "encode 3"} <= set(ENCODED[first:second])
    assert ENCODED[-2:] == ["write 2 jobs", "written"]


async def test_a_chunk_streamed_is_encoded_part_by_part_as_the_driver_takes_the_parts() -> None:
    ENCODED.clear()
    registry = Registry()
    registry.queue("rows", driver=StreamedMemory(ENCODED), workers=["main"])
    registry.worker("main")
    told: list[str] = []
    registry.hook("pushed")(lambda event: told.append(event.job_id))

    @registry.job("noted")
    async def noted(job: Job[Noted]) -> None:
        """Never run here."""

    payloads = [Noted(n=n) for n in range(2_500)]
    ENCODED.clear()  # what follows is what push_many validates as it encodes

    ids = await registry.push_many("rows", "noted", payloads)

    assert ids == told and len(set(ids)) == 2_500
    assert [note for note in ENCODED if note.startswith("part")] == [
        "part of 1000", "part of 1000", "part of 500"
    ]  # fmt: skip
    # The driver had the first part before the second one was encoded, and so on.
    assert ENCODED.index("part of 1000") < ENCODED.index("encode 1000")
    assert ENCODED.index("encode 1999") < len(ENCODED) - 1 - ENCODED[::-1].index("part of 1000")
    assert (await registry.queue_info())["rows"].pending == 2_500


async def test_push_many_refuses_a_chunk_below_one() -> None:
    registry = registry_of_rows()
    with pytest.raises(ConfigError, match="chunk 0"):
        await registry.push_many("rows", "row", [Row(1)], chunk=0)


@pytest.mark.parametrize("chunk", [2.5, "10", None, True])
async def test_push_many_refuses_a_chunk_that_is_no_whole_number(chunk: object) -> None:
    registry = registry_of_rows()
    with pytest.raises(ConfigError, match=f"chunk {chunk!r} is not allowed: .*whole number"):
        await registry.push_many("rows", "row", [Row(1)], chunk=chunk)  # type: ignore[arg-type]
    assert (await registry.queue_info())["rows"].pending == 0


async def test_push_many_takes_a_chunk_past_any_batch_as_all_in_one() -> None:
    registry = registry_of_rows()

    ids = await registry.push_many("rows", "row", [Row(1), Row(2)], chunk=10**20)

    assert len(ids) == 2 and (await registry.queue_info())["rows"].pending == 2


def test_new_ids_count_up_in_the_order_of_the_batch() -> None:
    ids = new_ids(1000)

    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(len(job_id) == 32 and job_id[12] == "7" for job_id in ids)


def test_ids_drawn_one_at_a_time_count_up_within_a_millisecond() -> None:
    ids = [new_id() for _ in range(1000)] + new_ids(3) + [new_id()]

    assert ids == sorted(ids) and len(set(ids)) == 1004
    assert all(len(job_id) == 32 and job_id[12] == "7" for job_id in ids)


def test_a_forked_child_draws_ids_of_its_own_not_the_parents_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The last id drawn lies ahead of the clock (as in the millisecond it was drawn in): each
    # process's next id would count up from it, and parent and child would push one id twice.
    monkeypatch.setattr(conveyor.job, "_last_id", int(new_id(), 16) + (60_000 << 80))
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then gone at once
        os.write(writing, new_id().encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(pid, 0)
    with os.fdopen(reading) as pipe:
        childs = pipe.read()

    assert len(childs) == 32 and childs != new_id()


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


def test_sql_parts_cut_a_batch_by_item_size_keeping_order_and_kind() -> None:
    template = NewJob("a", "q", "j", "x" * 4)
    batch = JobBatch(template, ["a", "b", "c", "d"], ["x" * 4, "y" * 9, "z", "w"])
    cut = parts(batch, 2 * ITEM_SIZE + 5)  # each item counts ITEM_SIZE besides its payload
    assert [list(part.ids) for part in cut] == [["a"], ["b"], ["c", "d"]]  # type: ignore[attr-defined]
    assert all(isinstance(part, JobBatch) for part in cut)
    assert parts(batch, None) == [batch] and parts(batch, 4 * ITEM_SIZE + 15) == [batch]


def test_sql_parts_count_each_jobs_text_besides_its_payload() -> None:
    jobs = [NewJob(str(n), "q", "j", "{}", meta={"trace": "t" * 1000}) for n in range(3)]
    assert [len(part) for part in parts(jobs, 2 * ITEM_SIZE + 2100)] == [2, 1]


@pytest.mark.parametrize("job_id", ["", ".", "..", "a/b", "x" * 65])
async def test_a_job_id_that_could_not_be_stored_or_opened_is_refused(job_id: str) -> None:
    """ "." and ".." would be stored, but a browser resolves them away in the dashboard's
    /jobs/ID address: such a job could never be opened there."""
    registry = registry_of_rows()
    with pytest.raises(ConfigError, match=r"is not valid: .* not \. or \.\. alone"):
        await registry.push("rows", "row", {"n": 1}, job_id=job_id)
    assert await registry.push("rows", "row", {"n": 1}, job_id="...") == "..."
    await registry.close()
