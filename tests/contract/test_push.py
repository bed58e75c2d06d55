"""push and push_many: what is stored, the ids returned, and unique keys."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

from conveyor.drivers.base import Driver, QueueCounts
from conveyor.job import ErrorInfo, JobBatch, JobState, new_ids
from tests.backends import needs

from .helpers import (
    LONG_LEASE,
    Storage,
    assert_between,
    assert_time,
    failure_of,
    make_job,
    push_and_reserve,
    release_of,
    reservation,
    stored_alike,
)


async def test_push_returns_the_jobs_id(driver: Driver) -> None:
    job = make_job()

    assert await driver.push(job) == job.id


@needs("lookup")
@needs("unique")
@needs("ordered")
@needs("timed_leases")
async def test_push_then_get_returns_every_field(driver: Driver) -> None:
    before = time.time()
    job = make_job(
        queue="mail",
        name="send_welcome",
        payload='{"to": "zoë@example.com", "note": "a \\"quoted\\" line\\nand more"}',
        delay=-0.5,
        max_attempts=7,
        priority=3,
        timeout=12.5,
        retry_delay='{"kind": "exponential", "base": 2.0}',
        unique="user-42",
        meta={"trace": "abc", "n": 1, "nested": {"tags": ["a", "b"], "ok": True}},
    )
    await driver.push(job)

    got = await driver.get(job.id)

    assert got is not None
    assert (got.id, got.queue, got.name) == (job.id, "mail", "send_welcome")
    assert got.payload == job.payload
    assert got.state is JobState.PENDING
    assert (got.attempt, got.max_attempts, got.priority) == (0, 7, 3)
    assert_between(got.created_at, before, time.time())  # the backend's clock, on this host
    assert_time(got.available_at, got.created_at - 0.5)
    assert got.timeout == 12.5
    assert got.retry_delay == job.retry_delay
    assert got.unique == "user-42"
    assert got.meta == job.meta
    assert (got.reservation, got.worker, got.finished_at, got.error) == (None, None, None, None)
    assert (got.rescued, got.unreadable) == (0, {})


@needs("lookup")
@needs("unique")
@needs("ordered")
async def test_push_then_get_keeps_unset_options_empty(driver: Driver) -> None:
    job = make_job()
    await driver.push(job)

    got = await driver.get(job.id)

    assert got is not None
    assert (got.max_attempts, got.priority) == (1, 0)
    assert (got.timeout, got.retry_delay, got.unique) == (None, None, None)
    assert got.meta == {}


@needs("lookup")
@needs("ordered")
async def test_push_with_negative_priority_round_trips(driver: Driver) -> None:
    job = make_job(priority=-5)
    await driver.push(job)

    got = await driver.get(job.id)

    assert got is not None
    assert got.priority == -5


@needs("lookup")
async def test_push_with_future_time_is_delayed(driver: Driver) -> None:
    job = make_job(delay=60)
    await driver.push(job)

    got = await driver.get(job.id)

    assert got is not None
    assert got.state is JobState.DELAYED


@needs("lookup")
async def test_push_many_returns_ids_in_order(driver: Driver) -> None:
    jobs = [make_job(name=f"j{i}") for i in range(5)]

    ids = await driver.push_many(jobs)

    assert ids == [job.id for job in jobs]
    for job in jobs:
        got = await driver.get(job.id)
        assert got is not None
        assert got.name == job.name


@needs("lookup")
@needs("exact_counts")
async def test_push_many_of_jobs_alike_but_for_payload_stores_each_with_the_shared_options(
    driver: Driver,
) -> None:
    meta = {"tenant": "t1"}
    shared = {"max_attempts": 3, "priority": 2, "timeout": 1.5, "retry_delay": '{"s":1}'}
    due = [make_job(payload=f'{{"n":{n}}}', meta=meta, **shared) for n in range(150)]
    later = [make_job(payload="{}", delay=60.0, meta=meta, **shared) for _ in range(3)]

    assert await driver.push_many(due) == [job.id for job in due]
    assert await driver.push_many(later) == [job.id for job in later]
    assert await driver.push_many(due[:2]) == [job.id for job in due[:2]]  # stored already

    for job in (due[0], due[-1], later[0]):
        got = await driver.get(job.id)
        assert got is not None
        assert (got.payload, got.max_attempts, got.priority, got.timeout, got.meta) == (
            job.payload, 3, 2, 1.5, meta
        )  # fmt: skip
        assert got.retry_delay == '{"s":1}'
    counts = (await driver.counts(["q"]))["q"]
    assert (counts.pending, counts.delayed) == (150, 3)


@needs("lookup")
async def test_push_many_whose_jobs_change_options_mid_batch_stores_each_with_its_own(
    driver: Driver,
) -> None:
    # Runs of jobs alike, broken by a job that differs: drivers send a run's shared options
    # once (redis runs, postgres COPY lines, the SQL shared insert) and must not carry them over.
    meta = {"tenant": "t1"}
    plain = [make_job(payload=f'{{"n":{n}}}', meta=meta, priority=1) for n in range(120)]
    jobs = [*plain[:60], make_job(priority=5, timeout=2.0), *plain[60:], make_job(delay=60.0)]

    assert await driver.push_many(jobs) == [job.id for job in jobs]

    for job in jobs:
        got = await driver.get(job.id)
        assert got is not None
        assert (got.payload, got.priority, got.timeout, got.meta) == (
            job.payload, job.priority, job.timeout, job.meta
        )  # fmt: skip
        assert got.state is (JobState.DELAYED if job.delay else JobState.PENDING)


@needs("lookup")
async def test_push_many_of_a_job_batch_stores_each_job_in_order(driver: Driver) -> None:
    # What Registry.push_many hands over: drivers read its id and payload lists directly.
    count = 1_100  # past redis's 1,000 jobs per script call and postgres's COPY threshold
    ids, payloads = new_ids(count), [f'{{"n":{n}}}' for n in range(count)]
    template = make_job(id=ids[0], payload=payloads[0], priority=3, meta={"m": 1}, timeout=4.0)
    batch = JobBatch(template, ids, payloads)

    assert await driver.push_many(batch) == ids

    for n in (0, 999, 1_000, count - 1):
        got = await driver.get(ids[n])
        assert got is not None
        assert (got.payload, got.priority, got.meta, got.timeout) == (payloads[n], 3, {"m": 1}, 4.0)
    assert (await driver.counts(["q"]))["q"].pending == count


@needs("lookup")
@needs("exact_counts")
async def test_push_many_of_one_id_twice_stores_the_first(driver: Driver) -> None:
    first, other = make_job(payload='"first"'), make_job()

    ids = await driver.push_many([first, other, replace(first, payload='"again"')])

    assert ids == [first.id, other.id, first.id]
    got = await driver.get(first.id)
    assert got is not None and got.payload == '"first"'
    assert (await driver.counts(["q"]))["q"].pending == 2


@needs("lookup")
async def test_push_of_an_existing_id_stores_nothing_and_returns_the_id(driver: Driver) -> None:
    job = make_job()
    reserved = await push_and_reserve(driver, job)

    # As a push retried after its reply was lost would: the job already stored is kept.
    assert await driver.push(replace(job, payload='{"v": 2}')) == job.id

    got = await driver.get(job.id)
    assert got is not None
    assert (got.state, got.payload, got.reservation) == (
        JobState.RESERVED,
        "{}",
        reserved.reservation,
    )
    assert await driver.ack([reservation(reserved)]) == {job.id}


@needs("unique")
@needs("exact_counts")
async def test_push_of_an_existing_finished_id_leaves_it_finished(driver: Driver) -> None:
    job = make_job(unique="k")
    reserved = await push_and_reserve(driver, job)
    await driver.ack([reservation(reserved)])

    assert await driver.push(job) == job.id

    assert (await driver.counts(["q"]))["q"] == QueueCounts(succeeded=1)
    assert await driver.reserve(["q"], 1, LONG_LEASE, "w1") == []
    other = make_job(unique="k")
    assert await driver.push(other) == other.id


async def test_push_many_of_nothing_returns_empty_list(driver: Driver) -> None:
    assert await driver.push_many([]) == []
    assert (await driver.counts(["q"]))["q"].pending == 0


async def test_push_many_spans_queues(driver: Driver) -> None:
    await driver.push_many([make_job(queue="a"), make_job(queue="b"), make_job(queue="b")])

    counts = await driver.counts(["a", "b"])

    assert (counts["a"].pending, counts["b"].pending) == (1, 2)


@needs("unique")
@needs("exact_counts")
async def test_push_duplicate_unique_returns_pending_jobs_id(driver: Driver) -> None:
    first = make_job(unique="k")
    await driver.push(first)

    again = await driver.push(make_job(unique="k"))

    assert again == first.id
    assert (await driver.counts(["q"]))["q"].pending == 1


@needs("lookup")
@needs("unique")
async def test_push_duplicate_unique_stores_nothing(driver: Driver) -> None:
    first = make_job(unique="k", payload='{"v": 1}')
    second = make_job(unique="k", payload='{"v": 2}')
    await driver.push(first)

    await driver.push(second)

    assert await driver.get(second.id) is None
    got = await driver.get(first.id)
    assert got is not None
    assert got.payload == '{"v": 1}'


@needs("unique")
async def test_push_duplicate_unique_returns_delayed_jobs_id(driver: Driver) -> None:
    first = make_job(unique="k", delay=60)
    await driver.push(first)

    assert await driver.push(make_job(unique="k")) == first.id


@needs("unique")
async def test_push_duplicate_unique_returns_reserved_jobs_id(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, make_job(unique="k"))

    assert await driver.push(make_job(unique="k")) == reserved.id


@needs("unique")
async def test_push_duplicate_unique_returns_released_jobs_id(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, make_job(unique="k"))
    await driver.release([release_of(reserved, 60)])

    assert await driver.push(make_job(unique="k")) == reserved.id


@needs("lookup")
@needs("unique")
async def test_unique_key_is_freed_by_ack(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, make_job(unique="k"))
    await driver.ack([reservation(reserved)])
    fresh = make_job(unique="k")

    assert await driver.push(fresh) == fresh.id
    assert await driver.get(fresh.id) is not None


@needs("lookup")
@needs("unique")
async def test_unique_key_is_freed_by_fail(driver: Driver) -> None:
    reserved = await push_and_reserve(driver, make_job(unique="k"))
    await driver.fail([failure_of(reserved, ErrorInfo("ValueError", "boom"))])
    fresh = make_job(unique="k")

    assert await driver.push(fresh) == fresh.id
    assert await driver.get(fresh.id) is not None


@needs("unique")
async def test_unique_key_is_per_queue(driver: Driver) -> None:
    first = make_job(queue="a", unique="k")
    other = make_job(queue="b", unique="k")

    ids = [await driver.push(first), await driver.push(other)]

    assert ids == [first.id, other.id]


@needs("unique")
async def test_unique_key_is_per_job_name(driver: Driver) -> None:
    first = make_job(name="x", unique="k")
    other = make_job(name="y", unique="k")

    ids = [await driver.push(first), await driver.push(other)]

    assert ids == [first.id, other.id]


async def test_jobs_without_unique_never_collide(driver: Driver) -> None:
    jobs = [make_job(), make_job()]

    assert await driver.push_many(jobs) == [job.id for job in jobs]


@needs("unique")
@needs("exact_counts")
async def test_push_many_with_same_unique_twice_returns_first_id_for_both(
    driver: Driver,
) -> None:
    first, second = make_job(unique="k"), make_job(unique="k")

    ids = await driver.push_many([first, make_job(), second])

    assert ids[0] == ids[2] == first.id
    assert (await driver.counts(["q"]))["q"].pending == 2


@needs("unique")
async def test_push_many_with_existing_unique_returns_existing_id(driver: Driver) -> None:
    existing = make_job(unique="k")
    await driver.push(existing)
    plain = make_job()

    ids = await driver.push_many([plain, make_job(unique="k")])

    assert ids == [plain.id, existing.id]


@needs("unique")
@needs("exact_counts")
@needs("timed_leases")
async def test_concurrent_pushes_of_same_unique_key_store_one_job(
    driver_pair: tuple[Driver, Driver],
) -> None:
    jobs = [make_job(unique="k") for _ in range(10)]

    ids = await asyncio.gather(*(driver_pair[i % 2].push(job) for i, job in enumerate(jobs)))

    assert len(set(ids)) == 1
    assert ids[0] in {job.id for job in jobs}
    assert (await driver_pair[0].counts(["q"]))["q"].pending == 1


@needs("unique")
@needs("lookup")
async def test_concurrent_push_many_of_shared_keys_in_different_orders_store_one_job_each(
    storage: Storage, driver: Driver
) -> None:
    # Each connection pushes the same keys in an order of its own, all at once: a driver that
    # inserted them in the order given made each push wait on a key another had inserted,
    # a deadlock the server ends by failing one of the pushes.
    drivers = [driver, *[await storage.open_driver() for _ in range(3)]]
    keys = [f"k{n}" for n in range(20)]
    for round_ in range(20):
        queue = f"q{round_}"
        batches = [
            [make_job(queue, unique=key) for key in random.Random(seed).sample(keys, len(keys))]
            for seed in range(round_ * 4, round_ * 4 + len(drivers))
        ]

        pushed = await asyncio.gather(
            *(one.push_many(batch) for one, batch in zip(drivers, batches, strict=True))
        )

        stored = {job.unique: job.id for job in await driver.list_jobs(queue, JobState.PENDING)}
        assert len(stored) == len(keys)
        for batch, ids in zip(batches, pushed, strict=True):
            assert ids == [stored[job.unique] for job in batch]


@needs("lookup")
@needs("exact_counts")
async def test_push_of_an_id_stored_already_stores_nothing(driver: Driver) -> None:
    job = make_job(payload='{"n": 1}')
    assert await driver.push(job) == job.id
    again = replace(job, payload='{"n": 2}')

    assert await driver.push(again) == job.id
    other = make_job()
    assert await driver.push_many([again, other]) == [job.id, other.id]

    got = await driver.get(job.id)
    assert got is not None and got.payload == '{"n": 1}'
    assert (await driver.counts(["q"]))["q"].pending == 2


@needs("lookup")
@needs("exact_counts")
async def test_push_of_an_id_finished_already_stores_nothing(driver: Driver) -> None:
    job = make_job()
    taken = await push_and_reserve(driver, job)
    await driver.ack([reservation(taken)])

    assert await driver.push(job) == job.id

    got = await driver.get(job.id)
    assert got is not None and got.state is JobState.SUCCEEDED
    assert (await driver.counts(["q"]))["q"].pending == 0


@needs("unique")
@needs("lookup")
async def test_push_of_a_stored_id_returns_it_though_another_job_holds_its_key(
    driver: Driver,
) -> None:
    # A repeated push (a retried request) of a finished job whose key a newer job holds: the
    # memory and SQL drivers answered with the newer job's id, as if this push were new.
    first = make_job(unique="k")
    taken = await push_and_reserve(driver, first)
    await driver.ack([reservation(taken)])
    holder = make_job(unique="k")
    assert await driver.push(holder) == holder.id

    assert await driver.push(first) == first.id
    assert await driver.push_many([first, make_job(unique="k")]) == [first.id, holder.id]

    got = await driver.get(first.id)
    assert got is not None and got.state is JobState.SUCCEEDED


@needs("thread_push")
@needs("lookup")
async def test_push_in_thread_stores_what_push_stores_or_declines(driver: Driver) -> None:
    await driver.push(make_job())  # the first push to a queue may need the event loop
    options = dict(priority=3, max_attempts=4, timeout=30.0, meta={"k": "v"})
    job, twin = make_job(**options), make_job(**options)  # type: ignore[arg-type]

    stored = await asyncio.to_thread(driver.push_in_thread, job)
    await driver.push(twin)

    if stored is None:  # declined: the caller then awaits push; nothing was stored
        assert await driver.get(job.id) is None
        return
    assert stored == job.id
    mine, theirs = stored_alike(await driver.get(job.id), await driver.get(twin.id))
    assert mine == theirs
    assert (await driver.counts(["q"]))["q"].pending == 3


@needs("unique")
async def test_push_many_keeps_one_key_apart_across_names_and_queues(driver: Driver) -> None:
    jobs = [
        make_job(name="x", unique="k"),
        make_job(name="y", unique="k"),
        make_job("q2", "x", unique="k"),
        make_job(name="x", unique="k"),
    ]

    assert await driver.push_many(jobs) == [jobs[0].id, jobs[1].id, jobs[2].id, jobs[0].id]


@needs("unique")
async def test_keys_a_collation_would_call_alike_stay_apart(driver: Driver) -> None:
    # Case, a trailing space, accents composed or not, German sharp s, full-width letters:
    # alike to MySQL's default collations and to some PostgreSQL ones; conveyor compares exactly.
    keys = ["k", "K", "k ", "\u00e9", "e", "\u00df", "ss", "a\u0301", "\u00e1", "\uff4b"]
    jobs = [make_job(unique=key) for key in keys]
    assert await driver.push_many(jobs[::2]) == [job.id for job in jobs[::2]]

    assert await driver.push_many(jobs) == [job.id for job in jobs]
    for key, job in zip(keys, jobs, strict=True):
        assert await driver.push(make_job(unique=key)) == job.id
