"""The amqp driver on a broker that answers later than a call's deadline, through a proxy
that holds every chunk a while each way (the broker itself shared and untouched).

A call sent as several methods at once (`rpc_all`: counts, declarations, consumes) whose reply
did not come in time closes its channel by writing a Channel.Close; the channel looks open until
the broker's answer. Before, the next call took that channel and wrote to it: the broker, which
had closed it, took that for a method on a channel never opened and closed the whole connection
("CHANNEL_ERROR - expected 'channel.open'"), giving back every job the driver held.
"""

from __future__ import annotations

import asyncio

import pytest

from conveyor.errors import BackendUnavailableError
from tests.backends.proxy import Proxy
from tests.contract.helpers import make_job
from tests.drivers.test_amqp import LONG_LEASE, Make, held, make

__all__ = ["make"]

#: Each call's deadline, in seconds, and how long the proxy holds a chunk each way once slow.
TIMEOUT, SLOW = 0.5, 0.4


async def test_a_call_after_one_that_timed_out_leaves_the_connection_and_its_jobs(
    make: Make,
) -> None:
    proxy = Proxy(5672, adjustable=True)
    await proxy.start()
    try:
        driver = await make(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", timeout=TIMEOUT)
        await driver.push(make_job())
        [job] = await driver.reserve(["q"], 1, LONG_LEASE, "w")
        connection = driver._connection

        proxy.delay = SLOW  # a round trip now takes 0.8 s: longer than a call's deadline
        with pytest.raises(BackendUnavailableError):
            await driver.counts(["q"])  # rpc_all: unanswered in time, its channel closed
        with pytest.raises(BackendUnavailableError):
            await driver.counts(["q"])  # the next call, before the broker's answer came
        proxy.delay = 0.0
        await asyncio.sleep(4 * SLOW)  # what was held reaches the broker, and its answers us

        assert driver._connection is connection and not connection.is_closed
        assert await driver.renew([held(job)], LONG_LEASE) == {job.id}
        assert (await driver.counts(["q"]))["q"].reserved == 1
        assert await driver.ack([held(job)]) == {job.id}
    finally:
        await proxy.close()
