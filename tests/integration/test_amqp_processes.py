"""Worker processes on RabbitMQ: four share 10,000 jobs and run each exactly once; a worker
killed with SIGKILL mid-job loses its connection, and the broker hands its jobs to another
worker, which runs them as a rescue: attempt 1 again, rescued 1, as on redis and mysql
(test_redis_processes.py, test_mysql_processes.py). A death among other jobs is charged to
none of them (see JobInfo), so the issue's "runs again as attempt 2" is not what any driver
shows for a first rescue."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, Registry
from tests.backends import require_service
from tests.backends.amqp import START, URL, delete_prefix, fresh_prefix
from tests.integration.processes import Workers, assert_every_job_ran_once

pytestmark = pytest.mark.timeout(60)

JOBS = 10_000
PROCESSES = 4
HANGING = 3

#: The app every process loads (see test_redis_processes.py, whose app this follows): "mark"
#: records each run; "hang" hangs on its first delivery until its process is killed.
APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
from typing import Any

from conveyor import Job, Registry
from tests.integration.processes import through_gate

HERE = pathlib.Path(__file__).resolve().parent
PROCESSES = {processes}

registry = Registry(default_driver="{url}?prefix={prefix}")
registry.queue("numbers", workers=["w"], retry=0)
registry.queue("hangs", workers=["k"], retry=2)
registry.worker("w", concurrency=16, poll_interval=0.05)
registry.worker("k", concurrency={hanging}, poll_interval=0.05)


@registry.job("mark")
async def mark(job: Job[dict[str, Any]]) -> None:
    await through_gate(HERE, PROCESSES)
    with open(HERE / f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{os.getpid()}}\\n")


@registry.job("hang")
async def hang(job: Job[dict[str, Any]]) -> None:
    with open(HERE / f"hang-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.id}} {{job.attempt}} {{job.rescued}}\\n")
    if job.rescued == 0:
        await asyncio.sleep(3600)
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which only pushes and counts."""


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("amqp", 5672, START)
    mine = fresh_prefix()
    yield mine
    await delete_prefix(mine, {"numbers", "hangs"})


def _registry(prefix: str) -> Registry:
    registry = Registry(default_driver=f"{URL}?prefix={prefix}")
    registry.queue("numbers", workers=["w"], retry=0)
    registry.queue("hangs", workers=["k"], retry=2)
    registry.worker("w")
    registry.worker("k")
    registry.job("mark")(_noop)
    registry.job("hang")(_noop)
    return registry


@pytest.fixture
def workers(tmp_path: Path, prefix: str) -> Any:
    source = APP_SOURCE.format(processes=PROCESSES, url=URL, prefix=prefix, hanging=HANGING)
    (tmp_path / "workapp.py").write_text(source)
    started = Workers(tmp_path)
    yield started
    started.close()


async def test_four_worker_processes_run_every_job_exactly_once(
    tmp_path: Path, prefix: str, workers: Workers
) -> None:
    registry = _registry(prefix)
    try:
        await registry.push_many("numbers", "mark", [{"n": n} for n in range(JOBS)])
        assert (await registry.queue_info())["numbers"].pending == JOBS

        processes = [workers.start("w", burst=True) for _ in range(PROCESSES)]
        codes = [process.wait(timeout=45) for process in processes]
        assert codes == [0] * PROCESSES, workers.logs()

        assert_every_job_ran_once(tmp_path, JOBS, processes)
        counts = (await registry.queue_info())["numbers"]
        assert (counts.pending, counts.reserved, counts.failed) == (0, 0, 0)
    finally:
        await registry.close()


def _hang_lines(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(job_id, int(attempt), int(rescued)) for job_id, attempt, rescued in rows]


async def test_jobs_of_a_killed_worker_are_redelivered_and_run_as_a_rescue(
    tmp_path: Path, prefix: str, workers: Workers
) -> None:
    registry = _registry(prefix)
    try:
        ids = await registry.push_many("hangs", "hang", [{"n": n} for n in range(HANGING)])
        doomed = workers.start("k", burst=False)
        deadline = time.monotonic() + 20
        while len(_hang_lines(tmp_path / f"hang-{doomed.pid}.txt")) < HANGING:
            assert time.monotonic() < deadline, workers.logs()
            assert doomed.poll() is None, workers.logs()
            await asyncio.sleep(0.02)

        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        rescuer = workers.start("k", burst=True)
        assert rescuer.wait(timeout=30) == 0, workers.logs()

        first = _hang_lines(tmp_path / f"hang-{doomed.pid}.txt")
        assert {(attempt, rescued) for _, attempt, rescued in first} == {(1, 0)}
        again = _hang_lines(tmp_path / f"hang-{rescuer.pid}.txt")
        assert sorted(job_id for job_id, _, _ in again) == sorted(ids)
        # Redelivered and run again, each once: its first attempt died among the others, so
        # it is not charged (attempt stays 1) and counts as rescued once.
        assert sorted((job_id, attempt, rescued) for job_id, attempt, rescued in again) == [
            (job_id, 1, 1) for job_id in sorted(ids)
        ]
        counts = (await registry.queue_info())["hangs"]
        assert (counts.pending, counts.reserved, counts.failed) == (0, 0, 0)
    finally:
        await registry.close()
