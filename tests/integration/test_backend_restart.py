"""The backend itself killed (SIGKILL) and restarted while producers push and workers run: a
private redis-server with `appendfsync always`, and a private PostgreSQL cluster, each on a
spare port, started and killed by the test (the shared servers are never touched). Every push
that returned an id runs; pushes during the outage fail with BackendUnavailableError and are
tried again by the producer; the worker processes carry on without a restart. A reserve whose
reply was lost with the server (the reservation stored, the worker never told) comes back when
its lease ends: the workers here hold 2-second leases, so that is soon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import ConveyorError, Job, JobState, Registry
from tests.backends.private import private_postgres, private_redis
from tests.integration.processes import Workers

pytestmark = pytest.mark.timeout(180)

PUSHES = 300
KILL_AFTER = 100  # pushes returned before the server is killed
DOWN_FOR = 1.5  # seconds

APP_SOURCE = """
from __future__ import annotations

from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"])
registry.worker("w", concurrency=4, poll_interval=0.05, lease=2.0)


@registry.job("work", queue="q")
async def work(job: Job[dict[str, int]]) -> None:
    pass
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handler in this process, which pushes and inspects."""


async def _through_a_restart(
    url: str, folder: Path, kill: Callable[[], None], start: Callable[[], None]
) -> tuple[int, int]:
    """Push PUSHES jobs one at a time with two workers running; kill the server after
    KILL_AFTER, start it again DOWN_FOR seconds later. Returns (pushes refused, seconds until
    every job ran after the restart)."""
    (folder / "workapp.py").write_text(APP_SOURCE.format(url=url))
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"])
    registry.worker("w")
    registry.job("work", queue="q")(_noop)
    workers = Workers(folder)
    try:
        await registry.migrate()
        processes = [workers.start(burst=False) for _ in range(2)]
        pushed: list[str] = []
        refused = 0
        restarted = None
        while len(pushed) < PUSHES:
            if len(pushed) == KILL_AFTER and restarted is None:
                kill()
                down = asyncio.get_running_loop().call_later(DOWN_FOR, start)
                restarted = time.monotonic() + DOWN_FOR
            try:
                pushed.append(await registry.push("q", "work", {"n": len(pushed)}))
            except ConveyorError:
                refused += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.002)
        assert restarted is not None
        down.cancel()
        deadline = time.monotonic() + 60
        while True:
            states = [(await registry.job_info(job_id)) for job_id in pushed]
            if all(info is not None and info.state is JobState.SUCCEEDED for info in states):
                break
            missing = [job_id for job_id, info in zip(pushed, states, strict=True) if not info]
            assert not missing, f"pushed but gone: {missing[:5]}\n{workers.logs()[-3000:]}"
            assert time.monotonic() < deadline, f"not all ran:\n{workers.logs()[-3000:]}"
            await asyncio.sleep(0.2)
        assert all(process.poll() is None for process in processes), workers.logs()[-3000:]
        return refused, round(time.monotonic() - restarted)
    finally:
        workers.close()
        await registry.close()


async def test_a_redis_restart_loses_no_returned_push(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        refused, took = await _through_a_restart(server.url, tmp_path, server.kill, server.start)
    print(
        f"redis (appendfsync always): {PUSHES} pushes, 1 kill and restart, {refused} pushes"
        f" refused while down and tried again, all ran within {took} s of the restart, lost 0"
    )


async def test_a_postgres_crash_and_restart_loses_no_returned_push(tmp_path: Path) -> None:
    with private_postgres() as server:
        refused, took = await _through_a_restart(server.url, tmp_path, server.kill, server.start)
    print(
        f"postgres: {PUSHES} pushes, 1 crash and restart, {refused} pushes refused while"
        f" down and tried again, all ran within {took} s of the restart, lost 0"
    )
