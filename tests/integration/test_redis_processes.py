"""Worker processes on Redis: four share 10,000 jobs and run each exactly once; a worker
killed with SIGKILL mid-job has its jobs run again by another once their lease runs out."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, WorkerCounts
from tests.backends import require_service
from tests.backends.redis import START, delete_prefix, fresh_prefix
from tests.integration.processes import Workers, assert_every_job_ran_once

pytestmark = pytest.mark.timeout(60)

JOBS = 10_000
PROCESSES = 4
HANGING = 3
LEASE = 1.0

#: The app every process loads. Worker "w" runs "mark" on queue "numbers": the first job in
#: each process waits until every process has started one, so no
#: process can finish the queue before the others are up. Worker "k" runs "hang" on queue
#: "hangs" with a short lease: its first run hangs until the process is killed.
APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
import time
from typing import Any

from conveyor import Job, Registry
from tests.integration.processes import through_gate

HERE = pathlib.Path(__file__).resolve().parent
PROCESSES = {processes}

registry = Registry(default_driver="redis://127.0.0.1:6379/0?prefix={prefix}")
registry.queue("numbers", workers=["w"], retry=0)
registry.queue("hangs", workers=["k"], retry=2)
registry.worker("w", concurrency=16, poll_interval=0.05)
registry.worker("k", concurrency={hanging}, lease={lease}, poll_interval=0.05)



@registry.job("mark")
async def mark(job: Job[dict[str, Any]]) -> None:
    await through_gate(HERE, PROCESSES)
    with open(HERE / f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{os.getpid()}}\\n")


@registry.job("hang")
async def hang(job: Job[dict[str, Any]]) -> None:
    with open(HERE / f"hang-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.id}} {{job.attempt}} {{time.time()!r}}\\n")
    if job.rescued == 0:
        await asyncio.sleep(3600)
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which only pushes and inspects."""


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("redis", 6379, START)
    mine = fresh_prefix()
    yield mine
    await delete_prefix(mine)


def _registry(prefix: str) -> Registry:
    registry = Registry(default_driver=f"redis://127.0.0.1:6379/0?prefix={prefix}")
    registry.queue("numbers", workers=["w"], retry=0)
    registry.queue("hangs", workers=["k"], retry=2)
    registry.worker("w")
    registry.worker("k", lease=LEASE)
    registry.job("mark")(_noop)
    registry.job("hang")(_noop)
    return registry


@pytest.fixture
def workers(tmp_path: Path, prefix: str) -> Any:
    source = APP_SOURCE.format(processes=PROCESSES, prefix=prefix, hanging=HANGING, lease=LEASE)
    (tmp_path / "workapp.py").write_text(source)
    started = Workers(tmp_path)
    yield started
    started.close()


async def test_four_worker_processes_run_every_job_exactly_once(
    tmp_path: Path, prefix: str, workers: Workers
) -> None:
    registry = _registry(prefix)
    try:
        ids = await registry.push_many("numbers", "mark", [{"n": n} for n in range(JOBS)])
        assert len(set(ids)) == JOBS
        assert (await registry.queue_info())["numbers"].pending == JOBS

        started = time.monotonic()
        processes = [workers.start("w", burst=True) for _ in range(PROCESSES)]
        codes = [process.wait(timeout=45) for process in processes]
        elapsed = time.monotonic() - started
        assert codes == [0] * PROCESSES, workers.logs()

        assert_every_job_ran_once(tmp_path, JOBS, processes)

        counts = (await registry.queue_info())["numbers"]
        assert (counts.pending, counts.delayed, counts.reserved, counts.failed) == (0, 0, 0, 0)
        assert counts.succeeded == JOBS
        assert (await registry.worker_info())["w"] == WorkerCounts(
            processed=JOBS, succeeded=JOBS, failed=0, retried=0
        )
        assert elapsed < 30, f"{PROCESSES} processes took {elapsed:.1f}s for {JOBS} jobs"
    finally:
        await registry.close()


def _hang_lines(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(job_id, int(attempt), float(at)) for job_id, attempt, at in rows]


async def test_jobs_of_a_killed_worker_run_again_after_their_lease(
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
        held = [await registry.job_info(job_id) for job_id in ids]
        assert all(job is not None and job.state is JobState.RESERVED for job in held), held
        lease_ends = {job.id: job.lease_expires_at for job in held if job is not None}

        rescuer = workers.start("k", burst=True)
        assert rescuer.wait(timeout=30) == 0, workers.logs()

        again = _hang_lines(tmp_path / f"hang-{rescuer.pid}.txt")
        assert sorted(job_id for job_id, _, _ in again) == sorted(ids)
        for job_id, attempt, ran_at in again:
            assert attempt == 1  # a first rescue is not charged to the job
            assert ran_at >= lease_ends[job_id] - 0.05, "taken over before its lease ran out"
        for job_id in ids:
            info = await registry.job_info(job_id)
            assert info is not None
            assert (info.state, info.attempt, info.rescued) == (JobState.SUCCEEDED, 1, 1)
    finally:
        await registry.close()
