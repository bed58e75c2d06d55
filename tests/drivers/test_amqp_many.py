"""The amqp driver on many queues: declaring, consuming and counting them costs a few round
trips, not a few per queue.

Measured as the writes the driver's connection makes (its write queue's items): a call that
waits for its reply before the next is one write each, so writes count round trips. The
broker is the one on 127.0.0.1:5672, under a random name prefix deleted afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.drivers.amqp import AmqpDriver
from conveyor.errors import DriverError
from tests.contract.helpers import make_job
from tests.drivers.test_amqp import LONG_LEASE, Make, make

__all__ = ["make"]  # the fixture, used by name


def writes(driver: AmqpDriver, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What the driver's connection writes from now on, one item per write."""
    assert driver._connection is not None
    queue: asyncio.Queue[Any] = driver._connection.write_queue  # type: ignore[attr-defined]
    written: list[object] = []
    put_nowait = queue.put_nowait  # what `put` calls too

    def counted(item: object) -> None:
        written.append(item)
        put_nowait(item)

    monkeypatch.setattr(queue, "put_nowait", counted)
    return written


async def first_reserve_writes(make: Make, monkeypatch: pytest.MonkeyPatch, count: int) -> int:
    driver = await make()
    written = writes(driver, monkeypatch)
    queues = [f"q{n}" for n in range(count)]
    assert await driver.reserve(queues, 5, LONG_LEASE, "w1") == []
    return len(written)


async def test_a_first_reserve_over_many_queues_declares_and_consumes_them_in_a_few_writes(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four round trips to declare each queue, two to consume it and one to ask what it sent:
    a first reserve over 300 queues took 0.74 s. Now each is one round trip for them all."""
    assert await first_reserve_writes(make, monkeypatch, 20) == await first_reserve_writes(
        make, monkeypatch, 2
    )


async def test_counts_over_many_queues_take_as_many_writes_as_over_one(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip per queue, one queue at a time: 0.5 s for 300 (`conveyor list`, the
    metrics, the dashboard). The counts stay each queue's own."""
    driver = await make()
    queues = [f"q{n}" for n in range(20)]
    await driver.push_many([make_job(queue) for queue in queues for _ in range(int(queue[1:]))])
    await driver.counts(queues)  # declared once
    written = writes(driver, monkeypatch)
    await driver.counts(["q3"])
    one = len(written)
    written.clear()
    counted = await driver.counts(queues)

    assert len(written) == one == 1
    assert [counted[queue].pending for queue in queues] == list(range(20))


async def test_a_push_to_many_new_queues_declares_them_in_one_write(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await make()
    written = writes(driver, monkeypatch)
    await driver.push_many([make_job(f"q{n}") for n in range(20)])
    assert len(written) == 2  # the declarations, the publishes


async def test_a_refused_declaration_among_many_names_the_fix_and_declares_anew_next_time(
    make: Make,
) -> None:
    """A queue made elsewhere with other settings, among 20 declared together: the error
    names it as the single declaration did; once deleted, the next reserve declares anew."""
    driver = await make()
    other = await make()
    publisher, _ = await other._channels()
    await publisher.queue_declare(other.names.work("q7"), durable=False)
    queues = [f"q{n}" for n in range(20)]
    with pytest.raises(DriverError) as raised:
        await driver.reserve(queues, 5, LONG_LEASE, "w1")
    assert "give this driver a ?prefix= of its own, or delete that queue" in str(raised.value)
    await publisher.queue_delete(other.names.work("q7"))
    assert await driver.reserve(queues, 5, LONG_LEASE, "w1") == []
    job = make_job("q7")
    await other.push(job)
    await driver.wait(queues, 5.0)
    assert [held.id for held in await driver.reserve(queues, 5, LONG_LEASE, "w1")] == [job.id]


async def close_writes(make: Make, monkeypatch: pytest.MonkeyPatch, count: int) -> int:
    driver = await make()
    queues = [f"q{n}" for n in range(count)]
    assert await driver.reserve(queues, 5, LONG_LEASE, "w1") == []
    written = writes(driver, monkeypatch)
    await driver.close()
    return len(written)


async def test_closing_a_driver_that_consumes_many_queues_cancels_them_in_one_write(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer cancelled at a time: a worker on 300 queues took 0.26 s to stop."""
    assert await close_writes(make, monkeypatch, 20) == await close_writes(make, monkeypatch, 2)


async def test_counts_of_a_queue_deleted_behind_the_driver_declare_it_anew(make: Make) -> None:
    driver = await make()
    await driver.push(make_job("q1"))
    assert (await driver.counts(["q0", "q1"]))["q1"].pending == 1
    publisher, _ = await driver._channels()
    await publisher.queue_delete(driver.names.work("q0"))
    counted = await driver.counts(["q0", "q1"])
    assert (counted["q0"].pending, counted["q1"].pending) == (0, 1)


async def test_a_cancelled_call_leaves_no_reply_to_answer_the_next_one(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stopping cancels a reserve while the broker's replies are on their way: they
    are read and dropped, and the channel serves on. Before, the channel was closed, with the
    replies still due in the way of the next call (which read them as its own)."""
    driver = await make()
    queues = [f"q{n}" for n in range(20)]
    await driver.push(make_job("q5"))
    await driver.counts(queues)  # all declared
    publisher, _ = await driver._channels()
    written = asyncio.Event()
    assert driver._connection is not None
    queue: asyncio.Queue[Any] = driver._connection.write_queue  # type: ignore[attr-defined]
    put_nowait = queue.put_nowait

    def noted(item: object) -> None:
        put_nowait(item)
        written.set()

    monkeypatch.setattr(queue, "put_nowait", noted)
    counting = asyncio.create_task(driver.counts(queues))
    await written.wait()
    counting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await counting
    counted = await driver.counts(["q5", "q6"])

    assert (counted["q5"].pending, counted["q6"].pending) == (1, 0)
    assert (await driver._channels())[0] is publisher
