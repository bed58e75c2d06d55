"""A MySQL server that never answers the TCP connect: the call fails with
BackendUnavailableError within `connect_timeout`, and its caller is not cancelled.

asyncmy connects under asyncio.wait_for, and from Python 3.12 on that is a timeout belonging
to the task it starts in. The checkout's first step ran in the caller's task, so the timeout
cancelled the caller: opening the driver ended in CancelledError (on 3.11 it said what was
wrong). The server here is a listening socket whose accept queue is full: the kernel drops
each new SYN, so a connect waits unanswered, as to a host behind a firewall that drops it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from conveyor.drivers import driver_from_url
from conveyor.errors import BackendUnavailableError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose new connections are never answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: the first connection fills the accept queue
    port: int = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(2)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_connect_never_answered_fails_the_open_and_leaves_its_caller_running(
    unanswered_port: int,
) -> None:
    driver = driver_from_url(
        f"mysql://root@127.0.0.1:{unanswered_port}/test?timeout=5&connect_timeout=0.3"
    )
    began = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="cannot connect to MySQL"):
        await asyncio.wait_for(driver.open(), 10)
    assert time.monotonic() - began < 3.0  # connect_timeout's 0.3 s, not the call's 5 s
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await driver.close()
