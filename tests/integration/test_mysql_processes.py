"""Worker processes on MySQL: four of them run 5,000 jobs, every one exactly once; and the jobs
of a worker killed with SIGKILL mid-job run again once their leases run out.

Each test works under a table prefix of its own on the server of this machine
(tests.backends.mysql.URL), dropped afterwards; the server itself is never restarted.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, Registry, WorkerCounts
from tests.backends import require_service
from tests.backends.mysql import START, URL, drop_tables, fresh_prefix
from tests.integration.processes import assert_every_job_ran_once, worker_logs, workers

pytestmark = pytest.mark.timeout(60)

JOBS = 5000
PROCESSES = 4

#: The app every worker process loads. `mark` jobs append "n pid attempt time" to out-<pid>.txt;
#: the first one in each process waits until every process has started
#: one, so no process can finish the queue before the others are up. A `hang` job on its
#: first run writes hung-<n> and then never returns: the worker is killed meanwhile.
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

registry = Registry(default_driver={url!r})
registry.queue("numbers", workers=["w"], retry={retry})
registry.worker("w", concurrency=8, poll_interval=0.05, lease={lease})



def _record(job: Job[dict[str, Any]]) -> None:
    with open(HERE / f"out-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.payload['n']}} {{os.getpid()}} {{job.attempt}} {{time.time()!r}}\\n")


@registry.job("mark")
async def mark(job: Job[dict[str, Any]]) -> None:
    await through_gate(HERE, PROCESSES)
    _record(job)


@registry.job("hang")
async def hang(job: Job[dict[str, Any]]) -> None:
    if job.rescued == 0:
        (HERE / f"hung-{{job.payload['n']}}").touch()
        await asyncio.Event().wait()
    _record(job)
"""


async def _noop(job: Job[dict[str, Any]]) -> None:
    """Stands in for the app's handlers in this process, which only pushes and inspects."""


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The server's URL with a table prefix of this test's own, dropped when it ends."""
    require_service("mysql", 3306, START)
    prefix = fresh_prefix()
    yield f"{URL}?prefix={prefix}"
    await drop_tables(prefix)


def _registry(url: str) -> Registry:
    registry = Registry(default_driver=url)
    registry.queue("numbers", workers=["w"])
    registry.worker("w")
    registry.job("mark")(_noop)
    registry.job("hang")(_noop)
    return registry


def _write_app(folder: Path, url: str, *, processes: int, retry: int, lease: float) -> None:
    source = APP_SOURCE.format(processes=processes, url=url, retry=retry, lease=lease)
    (folder / "workapp.py").write_text(source)


def _runs(folder: Path) -> list[tuple[int, int, int, float]]:
    """Every recorded run: (n, pid, attempt, time)."""
    runs = []
    for path in folder.glob("out-*.txt"):
        for line in path.read_text().splitlines():
            n, pid, attempt, when = line.split()
            runs.append((int(n), int(pid), int(attempt), float(when)))
    return runs


async def test_four_worker_processes_run_5000_jobs_each_exactly_once(
    tmp_path: Path, url: str
) -> None:
    _write_app(tmp_path, url, processes=PROCESSES, retry=0, lease=30.0)
    registry = _registry(url)
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
        print(f"{PROCESSES} processes ran {JOBS} jobs in {elapsed:.1f}s")
    finally:
        await registry.close()


async def test_jobs_of_a_worker_killed_mid_job_run_again_after_their_lease(
    tmp_path: Path, url: str
) -> None:
    lease = 1.5
    _write_app(tmp_path, url, processes=1, retry=2, lease=lease)
    registry = _registry(url)
    try:
        hung = await registry.push_many("numbers", "hang", [{"n": n} for n in range(3)])
        with workers(tmp_path, 1, burst=False) as [doomed]:
            await _until(lambda: len(list(tmp_path.glob("hung-*"))) == 3, doomed, tmp_path)
            doomed.send_signal(signal.SIGKILL)
            assert doomed.wait(timeout=10) == -signal.SIGKILL
        killed_at = time.time()
        infos = [await registry.job_info(job_id) for job_id in hung]
        assert all(info is not None and info.state.value == "reserved" for info in infos)
        lease_ends = {info.id: info.lease_expires_at for info in infos if info is not None}
        assert all(end <= killed_at + lease for end in lease_ends.values())

        with workers(tmp_path, 1) as [survivor]:
            assert survivor.wait(timeout=30) == 0, worker_logs(tmp_path)

        runs = _runs(tmp_path)
        assert sorted(n for n, _, _, _ in runs) == [0, 1, 2]
        assert {(pid, attempt) for _, pid, attempt, _ in runs} == {(survivor.pid, 1)}
        for job_id in hung:
            info = await registry.job_info(job_id)
            assert info is not None and info.state.value == "succeeded"
            assert (info.attempt, info.rescued) == (1, 1)  # a first rescue is not charged
        # Each ran again only once its last lease (renewed until the kill) had run out.
        earliest_rerun = min(when for _, _, _, when in runs)
        assert earliest_rerun >= min(lease_ends.values())
    finally:
        await registry.close()


async def _until(check: Any, process: subprocess.Popen[bytes], folder: Path) -> None:
    """Wait until `check()` holds, failing early if the process died."""
    deadline = time.monotonic() + 20
    while not check():
        assert process.poll() is None, worker_logs(folder)
        assert time.monotonic() < deadline, worker_logs(folder)
        await asyncio.sleep(0.02)
