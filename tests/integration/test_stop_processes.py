"""SIGTERM to a `conveyor work` process under load, with plain and async handlers both shorter
and longer than stop_timeout, while a second worker process waits to take over: the first
exits within stop_timeout and a small margin, no job runs twice at the same time (a plain
handler's thread, which Python cannot stop, keeps its job from the second worker until the
first process has exited), and in the end every job succeeded once and none is left reserved.

Runs on sqlite, and on postgres, mysql and redis when their servers are up.
"""

from __future__ import annotations

import importlib
import itertools
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, Registry
from tests.backends import require_service
from tests.integration.processes import Popen, Workers

pytestmark = pytest.mark.timeout(60)

STOP_TIMEOUT = 1.0
#: Exit must come within stop_timeout plus this: the last settle, closing the drivers and the
#: interpreter's own exit, on a loaded machine.
MARGIN = 2.0
#: A job's first run this long outlives the stop and the margin many times over; later runs
#: are quick, so the takeover does not make the test long.
LONG = 20.0
SHORT = 0.3
LONG_JOBS = 2  # of each kind, plain and async
SHORT_JOBS = 20  # of each kind

#: The app both processes load. Every run appends "n attempt event time pid" lines to
#: runs-<pid>.txt: start, then end or cancelled (a plain run killed with its process has no
#: end: it lasted until its process exited).
APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
import time
from typing import Any

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"], retry=5, retry_delay=0)
registry.worker("w", concurrency=8, lease=2.0, stop_timeout={stop_timeout}, poll_interval=0.05)


def record(job: Job[dict[str, Any]], event: str) -> None:
    line = f"{{job.payload['n']}} {{job.attempt}} {{event}} {{time.time()!r}} {{os.getpid()}}"
    with open(HERE / f"runs-{{os.getpid()}}.txt", "a") as out:
        out.write(line + "\\n")


def seconds(job: Job[dict[str, Any]]) -> float:
    # Only a job's first run is long: a stop gives the attempt back, so attempt numbers
    # cannot tell.
    first = HERE / f"begun-{{job.payload['n']}}"
    if first.exists():
        return 0.01
    first.touch()
    return job.payload["seconds"]


@registry.job("plain")
def plain(job: Job[dict[str, Any]]) -> None:
    record(job, "start")
    time.sleep(seconds(job))
    record(job, "end")


@registry.job("coro")
async def coro(job: Job[dict[str, Any]]) -> None:
    record(job, "start")
    try:
        await asyncio.sleep(seconds(job))
    except asyncio.CancelledError:
        record(job, "cancelled")
        raise
    record(job, "end")
"""

#: kind -> the port its server listens on (sqlite needs none).
PORTS = {"postgres": 5432, "mysql": 3306, "redis": 6379}


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The backend's URL with storage of this test's own, removed at the end."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    backend = importlib.import_module(f"tests.backends.{kind}")
    require_service(kind, PORTS[kind], backend.START)
    prefix = backend.fresh_prefix()
    yield f"{backend.URL}?prefix={prefix}"
    if kind == "redis":
        await backend.delete_prefix(prefix)
    else:
        await backend.drop_tables(prefix)


@dataclass
class Run:
    job: int
    attempt: int
    pid: int
    start: float
    end: float | None = None
    how: str = "killed"  # "end", "cancelled", or "killed" with its process


def read_runs(folder: Path) -> list[Run]:
    runs: dict[tuple[int, int, int], Run] = {}
    for path in folder.glob("runs-*.txt"):
        for line in path.read_text().splitlines():
            n, attempt, event, at, pid = line.split()
            key = (int(n), int(attempt), int(pid))
            if event == "start":
                runs[key] = Run(int(n), int(attempt), int(pid), float(at))
            else:
                runs[key].end, runs[key].how = float(at), event
    return list(runs.values())


def overlaps(runs: list[Run], exited: dict[int, float]) -> list[tuple[Run, Run]]:
    """Pairs of runs of one job that ran at the same time. A run with no end lasted until
    its process exited."""
    by_job: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job].append(run)
    found = []
    for job_runs in by_job.values():
        job_runs.sort(key=lambda run: run.start)
        for a, b in itertools.pairwise(job_runs):
            if b.start < (a.end if a.end is not None else exited[a.pid]):
                found.append((a, b))
    return found


def _registry(url: str) -> Registry:
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"], retry=5)
    registry.worker("w")

    def stand_in(job: Job[dict[str, Any]]) -> None:
        """The app's handlers do the work; this process only pushes and inspects."""

    registry.job("plain")(stand_in)
    registry.job("coro")(stand_in)
    return registry


async def _push(registry: Registry) -> int:
    """Long jobs first (a higher priority), so the first worker is running them all when it
    is stopped; short ones keep its other slots busy meanwhile."""
    numbers = iter(range(1000))
    for name in ("plain", "coro"):
        for _ in range(LONG_JOBS):
            payload = {"n": next(numbers), "seconds": LONG}
            await registry.push("q", name, payload, priority=10)
    for name in ("plain", "coro"):
        payloads = [{"n": next(numbers), "seconds": SHORT} for _ in range(SHORT_JOBS)]
        await registry.push_many("q", name, payloads)
    return next(numbers)


def _wait_for_long_jobs(folder: Path, first: Popen, workers: Workers) -> None:
    deadline = time.monotonic() + 20
    while len(_long(read_runs(folder), first.pid)) < 2 * LONG_JOBS:
        assert first.poll() is None, workers.logs()
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.02)


def _long(runs: list[Run], pid: int) -> list[Run]:
    """The runs of the long jobs in process `pid`."""
    return [run for run in runs if run.job < 2 * LONG_JOBS and run.pid == pid]


async def test_sigterm_under_load_exits_in_time_and_no_job_runs_twice_at_once(
    tmp_path: Path, url: str
) -> None:
    (tmp_path / "workapp.py").write_text(APP_SOURCE.format(url=url, stop_timeout=STOP_TIMEOUT))
    registry = _registry(url)
    workers = Workers(tmp_path)
    try:
        jobs = await _push(registry)
        first = workers.start(burst=False)
        _wait_for_long_jobs(tmp_path, first, workers)
        second = workers.start(burst=True)  # takes what the first gives back, or leaves
        time.sleep(0.5)  # both under load: short jobs running in each

        first.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        # A stop that cut jobs short is an error (status 1), with a line naming them.
        assert first.wait(timeout=30) == 1, workers.logs()
        took = time.monotonic() - stopping
        exited = {first.pid: time.time()}
        assert took < STOP_TIMEOUT + MARGIN, f"exit took {took:.1f}s\n{workers.logs()}"

        assert second.wait(timeout=30) == 0, workers.logs()
        exited[second.pid] = time.time()
        runs = read_runs(tmp_path)
        assert overlaps(runs, exited) == [], workers.logs()
        finished = sorted(run.job for run in runs if run.how == "end")
        assert finished == list(range(jobs)), "a job never finished, or finished twice"
        # Short jobs running at the stop finished in the first process; long ones did not.
        short = [run for run in runs if run.pid == first.pid and run.job >= 2 * LONG_JOBS]
        assert {run.how for run in short} == {"end"}
        # Long ones did not: the async ones were cancelled, the plain ones' threads ended
        # with the process.
        cut_short = {(run.job < LONG_JOBS, run.how) for run in _long(runs, first.pid)}
        assert cut_short == {(True, "killed"), (False, "cancelled")}, workers.logs()
        assert "plain handler still runs in a thread" in workers.logs()
        assert "stopped with jobs still running after stop_timeout" in workers.logs()

        counts = (await registry.queue_info())["q"]
        assert (counts.pending, counts.delayed, counts.reserved, counts.failed) == (0, 0, 0, 0)
        assert counts.succeeded == jobs
    finally:
        workers.close()
        await registry.close()
