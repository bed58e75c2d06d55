"""Worker processes on one PostgreSQL database: four of them run 5,000 jobs exactly once
between them, and the jobs of a worker killed with SIGKILL mid-job run again once their
lease runs out.

The server is the one on this machine (tests.backends.postgres.URL) and is never restarted:
the only process these tests kill is a worker they started. Each test uses a table prefix of
its own and drops its tables at the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conveyor import Job, Registry, WorkerCounts
from tests.backends import require_service
from tests.backends.postgres import START, URL, drop_tables, fresh_prefix
from tests.integration.processes import Popen, assert_every_job_ran_once, worker_logs, workers

pytestmark = pytest.mark.timeout(60)

JOBS = 5000
PROCESSES = 4

#: The app every worker process of the first test loads. The first job in each process waits
#: until every process has started one, so no process can finish the
#: queue before the others are up; after that the gate is open and jobs run straight through.
MANY_SOURCE = """
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

registry = Registry(default_driver={url!r})
registry.queue("numbers", workers=["w"], retry=0)
registry.worker("w", concurrency=16, poll_interval=0.05)



@registry.job("mark")
async def mark(job: Job[dict[str, Any]]) -> None:
    await through_gate(HERE, PROCESSES)
    with open(HERE / f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{os.getpid()}}\\n")
"""

#: The app of the SIGKILL test: a job's first run blocks until the process is killed; once
#: rescued, in another process, it records itself and succeeds. The lease is short so
#: the test does not wait long for it to run out.
KILL_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
from typing import Any

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("slow", workers=["w"], retry=1)
registry.worker("w", concurrency=4, lease=1.0, poll_interval=0.05)


@registry.job("block")
async def block(job: Job[dict[str, Any]]) -> None:
    name = f"{{job.payload['n']}}-rescued-{{job.rescued}}-pid-{{os.getpid()}}"
    if job.rescued == 0:
        (HERE / f"started-{{name}}").touch()
        await asyncio.sleep(600)
    (HERE / f"ran-{{name}}").touch()
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which only pushes and inspects."""


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The server's URL with a table prefix of this test's own, dropped at the end."""
    require_service("postgres", 5432, START)
    prefix = fresh_prefix()
    yield f"{URL}?prefix={prefix}"
    await drop_tables(prefix)


def _registry(url: str, queue: str, job: str, retry: int) -> Registry:
    registry = Registry(default_driver=url)
    registry.queue(queue, workers=["w"], retry=retry)
    registry.worker("w")
    registry.job(job)(_noop)
    return registry


async def test_four_worker_processes_run_every_job_exactly_once(tmp_path: Path, url: str) -> None:
    (tmp_path / "workapp.py").write_text(MANY_SOURCE.format(processes=PROCESSES, url=url))
    registry = _registry(url, "numbers", "mark", retry=0)
    try:
        ids = await registry.push_many("numbers", "mark", [{"n": n} for n in range(JOBS)])
        assert len(set(ids)) == JOBS

        started = time.monotonic()
        with workers(tmp_path, PROCESSES) as processes:
            codes = [process.wait(timeout=45) for process in processes]
        elapsed = time.monotonic() - started
        assert codes == [0] * PROCESSES, worker_logs(tmp_path)

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


async def test_jobs_of_a_killed_worker_run_again_after_their_lease(
    tmp_path: Path, url: str
) -> None:
    (tmp_path / "workapp.py").write_text(KILL_SOURCE.format(url=url))
    registry = _registry(url, "slow", "block", retry=1)
    try:
        await registry.push_many("slow", "block", [{"n": n} for n in range(3)])
        with workers(tmp_path, 1, burst=False) as [doomed]:
            _wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 3, doomed, tmp_path)
            assert (await registry.queue_info())["slow"].reserved == 3

            with workers(tmp_path, 1) as [rescuer]:
                os.kill(doomed.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                assert doomed.wait(timeout=10) == -signal.SIGKILL
                assert rescuer.wait(timeout=30) == 0, worker_logs(tmp_path)
            elapsed = time.monotonic() - killed_at

        started = sorted(path.name for path in tmp_path.glob("started-*"))
        ran = sorted(path.name for path in tmp_path.glob("ran-*"))
        assert started == [f"started-{n}-rescued-0-pid-{doomed.pid}" for n in range(3)]
        assert ran == [f"ran-{n}-rescued-1-pid-{rescuer.pid}" for n in range(3)]
        counts = (await registry.queue_info())["slow"]
        assert (counts.succeeded, counts.reserved, counts.pending, counts.failed) == (3, 0, 0, 0)
        assert elapsed < 20, f"the killed worker's jobs took {elapsed:.1f}s to run again"
    finally:
        await registry.close()


def _wait_for(
    condition: Callable[[], bool], process: Popen, folder: Path, timeout: float = 20.0
) -> None:
    """Wait until `condition()` holds, failing early if `process` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the worker exited early:\n{worker_logs(folder)}"
        assert time.monotonic() < deadline, f"timed out:\n{worker_logs(folder)}"
        time.sleep(0.02)
