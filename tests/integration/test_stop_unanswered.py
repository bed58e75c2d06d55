"""A worker stopped while its server does not answer returns within stop_timeout plus the final
settle, itself given up after stop_timeout (at least 1 s): docs/reliability.md, "Plain handlers,
timeouts and stopping". A write still waiting on the server then is cut at that deadline,
whatever the call's own `timeout`, and so are the worker stats and the last heartbeat.

The server is a private one (tests/backends/private.py), frozen with SIGSTOP as the stop comes:
it accepts nothing and answers nothing, as a hung or partitioned server. Before, each call of the
stop ran to its own deadline, one after the other (the release in flight, the same release once
more, the stats, the "stopping" heartbeat): with stop_timeout 2 and timeout=3, `conveyor work`
took 11 to 13 s to exit on postgres, mysql and redis, and a plain handler's thread ran on long
past its job's lease, when another worker may take the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, Worker
from tests.backends.private import PrivatePostgres, PrivateRedis, private_postgres, private_redis

pytestmark = pytest.mark.timeout(90)

#: A call's own deadline (the URL's timeout=), longer than what the stop may take after
#: stop_timeout: so a stop that waited for it is caught.
CALL_TIMEOUT = 3
STOP_TIMEOUT = 1.0


def _freezer(server: PrivateRedis | PrivatePostgres) -> Callable[[signal.Signals], None]:
    """Sends a signal to every process of the server: SIGSTOP freezes it, SIGCONT thaws it."""
    if isinstance(server, PrivateRedis):
        assert server.process is not None
        pid = server.process.pid
        return lambda signum: os.kill(pid, signum)
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    pids: list[int] = []

    def signal_all(signum: signal.Signals) -> None:
        if not pids:  # the postmaster and its children as they are now: the connections' too
            children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
            pids.extend([postmaster, *map(int, children.split())])
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    return signal_all


@contextlib.asynccontextmanager
async def _server(kind: str, folder: Path) -> AsyncIterator[PrivateRedis | PrivatePostgres]:
    if kind == "redis":
        with private_redis(folder) as redis:
            yield redis
    else:
        with private_postgres() as postgres:
            yield postgres


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_stop_while_the_server_is_frozen_ends_within_twice_stop_timeout(
    kind: str, tmp_path: Path
) -> None:
    async with _server(kind, tmp_path) as server:
        registry = Registry(default_driver=f"{server.url}?timeout={CALL_TIMEOUT}")
        registry.queue("q", workers=["w"])
        registry.worker("w", concurrency=2, stop_timeout=STOP_TIMEOUT, poll_interval=0.05)

        @registry.job("quick")
        async def quick(job: Job[dict[str, Any]]) -> None: ...

        @registry.job("long")
        async def long(job: Job[dict[str, Any]]) -> None:
            await asyncio.sleep(60)

        try:
            await _stop_while_frozen(registry, _freezer(server), kind)
        finally:
            await asyncio.wait_for(registry.close(), 30)


async def _stop_while_frozen(
    registry: Registry, freeze: Callable[[signal.Signals], None], kind: str
) -> None:
    done = await registry.push("q", "quick", {})
    ids = [await registry.push("q", "long", {}) for _ in range(2)]
    worker = Worker(registry, "w")
    task = asyncio.create_task(worker.run())
    # The quick job's count is not saved yet (once a second): saving it is cut too.
    deadline = time.monotonic() + 20
    while worker.counts.succeeded < 1 or worker.running < 2:
        assert time.monotonic() < deadline, "the jobs never started"
        await asyncio.sleep(0.01)
    freeze(signal.SIGSTOP)
    try:
        stopping = time.monotonic()
        worker.stop()
        stopped = await asyncio.wait_for(task, 60)
        took = time.monotonic() - stopping
    finally:
        freeze(signal.SIGCONT)
    print(f"{kind}: a stop with the server frozen took {took:.1f} s (stop_timeout 1)")
    # stop_timeout for the jobs, as long again (at least 1 s) for the writes, a margin.
    assert took < STOP_TIMEOUT + max(STOP_TIMEOUT, 1.0) + 1.0, took
    # Cut short, each: released, or its release never answered (unsettled: not known written).
    assert sorted((*stopped.released, *stopped.unsettled)) == sorted(ids)
    # Neither job is lost nor charged: released (the release cut short by the stop reached
    # the server once it was thawed), or still reserved and run again after the lease.
    info = await registry.job_info(done)
    assert info is not None and info.state is JobState.SUCCEEDED
    for job_id in ids:
        info = await registry.job_info(job_id)
        assert info is not None and info.state in (JobState.PENDING, JobState.RESERVED)
        assert info.attempt <= 1
