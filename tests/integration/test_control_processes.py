"""Job control across processes, with a `conveyor work` process of each driver: the test's
process pauses and resumes the queue, cancels pending, delayed and running jobs, and waits for
a result the worker process stores."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry
from tests.integration.processes import KINDS, Workers, backend_of, clean_backend

pytestmark = pytest.mark.timeout(120)

APP_SOURCE = """
from __future__ import annotations

import asyncio

from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"])
registry.worker("w", concurrency=4, lease=1.0, poll_interval=0.1)


@registry.job("slow", queue="q")
async def slow(job: Job[dict[str, int]]) -> None:
    await asyncio.sleep(60)


@registry.job("add", queue="q", keep_result=True)
async def add(job: Job[dict[str, int]]) -> dict[str, int]:
    return {{"sum": job.payload["a"] + job.payload["b"]}}
"""


async def _noop(job: Job[dict[str, int]]) -> Any:
    """Stands in for the app's handlers in this process, which only pushes and inspects."""


async def _state_becomes(registry: Registry, job_id: str, state: JobState, within: float) -> None:
    deadline = time.monotonic() + within
    while (info := await registry.job_info(job_id)) is None or info.state is not state:
        assert time.monotonic() < deadline, f"job {job_id} is {info and info.state}, not {state}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_pause_and_results_across_processes(kind: str, tmp_path: Path) -> None:
    url, prefix = backend_of(kind, tmp_path)
    (tmp_path / "workapp.py").write_text(APP_SOURCE.format(url=url))
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"])
    registry.worker("w")
    registry.job("slow", queue="q")(_noop)
    registry.job("add", queue="q", keep_result=True)(_noop)
    workers = Workers(tmp_path)
    try:
        await registry.pause("q")
        pending = await registry.push("q", "slow", {})
        delayed = await registry.push("q", "slow", {}, delay=60)
        added = await registry.push("q", "add", {"a": 2, "b": 3})
        workers.start(burst=False)
        await asyncio.sleep(1.5)  # long enough for a worker that ignored the pause
        assert (await registry.job_info(added)).state is JobState.PENDING, workers.logs()
        assert await registry.paused_queues() == {"q"}

        assert await registry.cancel(pending)
        assert await registry.cancel(delayed)
        await registry.resume("q")

        assert await registry.result(added, timeout=20) == {"sum": 5}, workers.logs()
        running = await registry.push("q", "slow", {})
        await _state_becomes(registry, running, JobState.RESERVED, within=10)
        assert await registry.cancel(running)
        await _state_becomes(registry, running, JobState.CANCELLED, within=5)  # a renewal: 0.5 s
        for job_id in (pending, delayed):
            assert (await registry.job_info(job_id)).state is JobState.CANCELLED
        counts = (await registry.queue_info())["q"]
        assert (counts.cancelled, counts.succeeded, counts.failed) == (3, 1, 0)
    finally:
        workers.close()
        await registry.close()
        await clean_backend(kind, prefix)
