"""Two worker processes on one SQLite file: every job runs exactly once, and both share the work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor import Job, Registry, WorkerCounts
from tests.integration.processes import assert_every_job_ran_once, worker_logs, workers

pytestmark = pytest.mark.timeout(60)

JOBS = 2000
PROCESSES = 2

#: The app both processes load. The first job in each process waits
#: until every process has started one, so neither can finish the queue before the other
#: is up; after that the gate is open and jobs run straight through.
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

registry = Registry(default_driver=f"sqlite:///{{HERE / 'jobs.db'}}")
registry.queue("numbers", workers=["w"], retry=0)
registry.worker("w", concurrency=8, poll_interval=0.05)



@registry.job("mark")
async def mark(job: Job[dict[str, Any]]) -> None:
    await through_gate(HERE, PROCESSES)
    with open(HERE / f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{os.getpid()}}\\n")
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handler in this process, which only pushes and inspects."""


def _registry(db: Path) -> Registry:
    registry = Registry(default_driver=f"sqlite:///{db}")
    registry.queue("numbers", workers=["w"], retry=0)
    registry.worker("w")
    registry.job("mark")(_noop)
    return registry


async def test_two_worker_processes_run_every_job_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "workapp.py").write_text(APP_SOURCE.format(processes=PROCESSES))
    registry = _registry(tmp_path / "jobs.db")
    try:
        ids = await registry.push_many("numbers", "mark", [{"n": n} for n in range(JOBS)])
        assert len(set(ids)) == JOBS
        assert (await registry.queue_info())["numbers"].pending == JOBS

        started = time.monotonic()
        with workers(tmp_path, PROCESSES) as processes:
            codes = [process.wait(timeout=45) for process in processes]
        elapsed = time.monotonic() - started
        assert codes == [0] * PROCESSES, worker_logs(tmp_path)
        assert_every_job_ran_once(tmp_path, JOBS, processes)

        counts = (await registry.queue_info())["numbers"]
        assert (counts.pending, counts.delayed, counts.reserved, counts.failed) == (0, 0, 0, 0)
        assert counts.succeeded == JOBS
        # Worker totals are added up over both processes.
        assert (await registry.worker_info())["w"] == WorkerCounts(
            processed=JOBS, succeeded=JOBS, failed=0, retried=0
        )
        assert elapsed < 30, f"two processes took {elapsed:.1f}s for {JOBS} jobs"
    finally:
        await registry.close()
