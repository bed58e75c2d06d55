"""A rescued job on amqp: a death of the worker while it ran the job alone is charged to the
job as an attempt, a death while the job waited (or ran among others) is not, and a job
marked alone settles like any other. The real broker on 127.0.0.1:5672, a prefix per test;
a driver closed without settling stands for a worker that died (the broker gets the
deliveries of a closed connection back as it would those of a killed process).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from conveyor.drivers.amqp import AmqpDriver
from conveyor.drivers.amqp.wire import Outgoing
from conveyor.drivers.base import Release
from conveyor.errors import BackendUnavailableError
from conveyor.job import JobInfo
from tests.contract.helpers import make_job, reservation
from tests.drivers.test_amqp import LONG_LEASE, Make, make

__all__ = ["make"]  # the fixture, used by name


async def _reserve_one(driver: AmqpDriver, within: float = 10.0) -> JobInfo:
    """The next job of queue q: a copy dead-lettered or charged reaches the work queue a
    moment after the connection that held it closed, so a few reserves may find nothing."""
    deadline = time.monotonic() + within
    while True:
        jobs = await driver.reserve(["q"], 1, LONG_LEASE, "w")
        if jobs:
            [job] = jobs
            return job
        assert time.monotonic() < deadline, "no job came back"
        await asyncio.sleep(0.05)


async def test_a_death_while_alone_is_charged_and_a_death_while_waiting_is_not(
    make: Make,
) -> None:
    pusher = await make()
    await pusher.push(make_job(max_attempts=3))
    first = await make()
    job = await _reserve_one(first)
    await first.close()  # died with the job among others: a rescue, no attempt charged

    second = await make()
    job = await _reserve_one(second)
    assert (job.attempt, job.rescued) == (1, 1)
    await second.close()  # died while the job waited to run alone: nothing charged either

    third = await make()
    job = await _reserve_one(third)
    assert (job.attempt, job.rescued) == (1, 1)
    assert await third.renew([reservation(job)], LONG_LEASE, alone=True) == {job.id}
    assert await third.renew([reservation(job)], LONG_LEASE) == {job.id}  # still held
    await third.close()  # died while it ran alone: the attempt is the job's

    fourth = await make()
    again = await _reserve_one(fourth)
    assert again.id == job.id
    assert (again.attempt, again.rescued) == (2, 2)
    assert await fourth.ack([reservation(again)]) == {job.id}
    assert await fourth.reserve(["q"], 1, LONG_LEASE, "w") == []
    counts = (await pusher.counts(["q"]))["q"]
    assert (counts.pending, counts.failed) == (0, 0)


async def test_a_job_marked_alone_settles_and_loses_its_mark(make: Make) -> None:
    driver = await make()
    await driver.push(make_job(max_attempts=3))
    first = await make()
    await _reserve_one(first)
    await first.close()
    job = await _reserve_one(driver)
    assert await driver.renew([reservation(job)], LONG_LEASE, alone=True) == {job.id}

    # A release (a failed attempt) from the copy held alone: published without the mark.
    token = reservation(job)
    assert await driver.release([Release(job.id, token.token, 0.0, None)]) == {job.id}
    again = await _reserve_one(driver)
    assert (again.attempt, again.rescued) == (2, 1)
    await driver.close()  # not marked alone this time: a death now costs nothing

    other = await make()
    last = await _reserve_one(other)
    assert (last.attempt, last.rescued) == (2, 2)
    assert await other.ack([reservation(last)]) == {job.id}


async def test_a_copy_nobody_waits_for_is_dropped_not_run(make: Make) -> None:
    """A marked copy arriving after its mark gave up waiting (and raised): the original is
    still held, so the copy is acknowledged away, never sent on to the work queue."""
    driver = await make()
    await driver.push(make_job())
    publisher = await driver._alone_consumer()
    stray = Outgoing(b'{"id": "stray", "alone": true}', "", driver.names.alone(driver._id), "q", 0,
                     "stray")  # fmt: skip
    await driver._publish_all([stray], "a stray copy")
    deadline = time.monotonic() + 5
    while (
        await publisher.queue_declare(driver.names.alone(driver._id), passive=True)
    ).message_count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await driver.close()  # a copy still held would now go back, and on to the work queue
    other = await make()
    await asyncio.sleep(0.3)
    assert (await other.counts(["q"]))["q"].pending == 1  # the pushed job alone


async def test_a_charge_that_fails_loses_neither_it_nor_the_jobs_reserved_beside_it(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Charging a job that died alone publishes it again, confirmed. When that publish failed
    # (no confirm in time: a broker under an alarm), reserve raised and dropped what it had
    # taken off its deliveries: the jobs it had reserved and the one to charge stayed
    # unacknowledged on a live connection, never handed out, until the worker restarted.
    pusher = await make()
    died = make_job(max_attempts=3)
    await pusher.push(died)
    first = await make()
    job = await _reserve_one(first)
    await first.close()  # a rescue
    second = await make()
    job = await _reserve_one(second)
    assert await second.renew([reservation(job)], LONG_LEASE, alone=True) == {job.id}
    await second.close()  # died while it ran alone: back in the work queue, marked
    beside = make_job()
    await pusher.push(beside)

    third = await make()
    publish_all = third._publish_all

    async def unconfirmed(messages: Any, what: str, *, delayed: bool = False) -> None:
        if what.startswith("charging"):
            raise BackendUnavailableError(f"RabbitMQ did not confirm {what} in time")
        await publish_all(messages, what, delayed=delayed)

    monkeypatch.setattr(third, "_publish_all", unconfirmed)
    got: dict[str, JobInfo] = {}
    deadline = time.monotonic() + 10
    while beside.id not in got and time.monotonic() < deadline:
        with contextlib.suppress(BackendUnavailableError):
            got.update((job.id, job) for job in await third.reserve(["q"], 5, LONG_LEASE, "w"))
    assert list(got) == [beside.id]  # reserved, and handed out though the charge failed
    monkeypatch.setattr(third, "_publish_all", publish_all)
    charged = await _reserve_one(third)  # the charge made again, at the next reserve
    assert (charged.id, charged.attempt, charged.rescued) == (died.id, 2, 2)
    assert await third.ack([reservation(got[beside.id]), reservation(charged)]) == {
        beside.id,
        died.id,
    }


async def _sent(driver: AmqpDriver) -> None:
    """Consume queue q (5 slots) and wait for a delivery, not handed out (a worker's prefetch)."""
    await driver._consume_all({"q": 5})
    deadline = time.monotonic() + 10
    while driver._ready_count("q") < 1:
        assert time.monotonic() < deadline, "nothing was sent"
        await asyncio.sleep(0.02)


async def test_a_job_marked_alone_given_back_at_close_is_charged_once(make: Make) -> None:
    pusher = await make()
    await pusher.push(make_job(max_attempts=3))
    first = await make()
    job = await _reserve_one(first)
    assert await first.renew([reservation(job)], LONG_LEASE, alone=True) == {job.id}
    await first.close()  # died while it ran alone: back in the work queue, marked
    sent_to = await make()
    await _sent(sent_to)
    assert sent_to._connection is not None
    await sent_to._connection.close()  # died with it sent, not handed out: redelivered
    stopping = await make()
    await _sent(stopping)
    await stopping.close()  # stopped before handing it out: given back as it came

    again = await _reserve_one(await make())
    assert (again.id, again.attempt, again.rescued) == (job.id, 2, 1)  # one charge, one rescue
