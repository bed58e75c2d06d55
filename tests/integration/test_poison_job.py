"""A job that kills its worker (os._exit, as an out-of-memory kill would) fails once its
attempts are used up, and the jobs that ran beside it when it struck do not fail: their first
death is charged to no one, and a rescued job runs alone, so a later death is its own.

Real `conveyor work` processes, restarted by the test whenever one dies, as an orchestrator
would. Before this, 1-3 of 200 innocent jobs ended failed with LeaseExpiredError in 2 runs of
3 on redis: each death cost every job beside the killer an attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor import Job, JobState, Registry
from tests.integration.processes import KINDS, Workers, backend_of, clean_backend

pytestmark = pytest.mark.timeout(120)

INNOCENT = 200
RETRY = 2  # the killer may run 3 times; with the first death free, it kills 4 workers

APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"], retry={retry})
registry.worker("w", concurrency=8, lease=1.0, poll_interval=0.05)


def _record(what: str, job: Job[dict[str, int]]) -> None:
    with open(HERE / f"runs-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{what}} {{job.id}} {{job.attempt}} {{job.rescued}}\\n")


@registry.job("innocent")
async def innocent(job: Job[dict[str, int]]) -> None:
    _record("innocent", job)
    await asyncio.sleep(0.05)


@registry.job("killer")
async def killer(job: Job[dict[str, int]]) -> None:
    _record("killer", job)
    await asyncio.sleep(0.05)  # so that innocent jobs are running beside it
    os._exit(1)
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which only pushes and inspects."""


@pytest.mark.parametrize("kind", [*KINDS, "amqp"])
async def test_a_job_killing_its_worker_fails_alone(kind: str, tmp_path: Path) -> None:
    url, prefix = backend_of(kind, tmp_path)
    (tmp_path / "workapp.py").write_text(APP_SOURCE.format(url=url, retry=RETRY))
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"], retry=RETRY)
    registry.worker("w")
    registry.job("innocent")(_noop)
    registry.job("killer")(_noop)
    workers = Workers(tmp_path)
    try:
        innocents = await registry.push_many("q", "innocent", [{"n": n} for n in range(20)])
        killer = await registry.push("q", "killer", {"n": -1})
        innocents += await registry.push_many("q", "innocent", [{"n": n} for n in range(180)])
        ids = [killer, *innocents]
        if kind == "amqp":  # no lookup by id: the failed queue, the runs and the counts
            deaths = await _supervise(workers, registry, ids, 2, finished=_amqp_finished)
            workers.close()  # every job ran: nothing more to wait for
            failed = await registry.list_jobs("q", JobState.FAILED)
            assert [job.id for job in failed] == [killer], (failed, workers.logs())
            info = failed[0]
            assert {line.split()[1] for line in _lines(tmp_path) if "innocent" in line} == set(
                innocents
            )
        else:
            deaths = await _supervise(workers, registry, ids, processes=2)
            info = await registry.job_info(killer)
            states = Counter([(await registry.job_info(job_id)).state for job_id in innocents])
            assert states == Counter({JobState.SUCCEEDED: INNOCENT}), states
        assert info.state is JobState.FAILED, (info, workers.logs())
        assert info.error.type == "conveyor.errors.LeaseExpiredError"
        assert deaths == RETRY + 2, deaths  # one free death, then one per attempt
        runs = _runs(tmp_path)
        assert runs["killer"] == RETRY + 2
        assert runs["innocent"] >= INNOCENT
    finally:
        workers.close()
        await registry.close()
        await clean_backend(kind, prefix)


async def _all_finished(registry: Registry, ids: list[str], folder: Path) -> bool:
    infos = [await registry.job_info(job_id) for job_id in ids]
    return all(info is not None and info.state.value in ("succeeded", "failed") for info in infos)


async def _amqp_finished(registry: Registry, ids: list[str], folder: Path) -> bool:
    """On amqp, which cannot look jobs up: the killer is failed, every innocent ran, and
    the work queue is empty (a rescued innocent waits there, or runs and is recorded)."""
    killer, *innocents = ids
    if [job.id for job in await registry.list_jobs("q", JobState.FAILED)] != [killer]:
        return False
    ran = {line.split()[1] for line in _lines(folder) if line.startswith("innocent")}
    return ran >= set(innocents) and (await registry.queue_info())["q"].pending == 0


async def _supervise(
    workers: Workers,
    registry: Registry,
    ids: list[str],
    processes: int,
    timeout: float = 90.0,
    finished: Callable[[Registry, list[str], Path], Awaitable[bool]] = _all_finished,
) -> int:
    """Keep `processes` workers running, starting one anew whenever one dies, until every job
    in `ids` is `finished`; returns how many died."""
    running = [workers.start(burst=False) for _ in range(processes)]
    deaths = 0
    deadline = time.monotonic() + timeout
    while True:
        for index, process in enumerate(running):
            if process.poll() is not None:
                deaths += 1
                running[index] = workers.start(burst=False)
        if await finished(registry, ids, workers.folder):
            return deaths
        assert time.monotonic() < deadline, f"unfinished after {timeout}s:\n{workers.logs()}"
        await asyncio.sleep(0.2)


def _lines(folder: Path) -> list[str]:
    """The runs the worker processes recorded: "kind id attempt rescued" each."""
    return [
        line for path in folder.glob("runs-*.txt") for line in path.read_text().split("\n") if line
    ]


def _runs(folder: Path) -> Counter[str]:
    """How many runs of each kind of job the worker processes recorded."""
    return Counter(line.split()[0] for line in _lines(folder))
