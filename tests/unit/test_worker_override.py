"""A Worker run with another spec or other queues than registered (what `conveyor work
--concurrency/--queues` does), and the one log line each finished attempt gets."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from conveyor import Job, Registry, Worker
from conveyor.errors import UnknownQueueError


def _registry(ran: list[tuple[str, int]], peak: list[int]) -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("tasks", workers=["w"], retry=0)
    registry.queue("other", workers=["v"], retry=0)
    registry.worker("w", concurrency=1, poll_interval=0.01)
    registry.worker("v", poll_interval=0.01)
    running = [0]

    @registry.job("note")
    async def note(job: Job[dict[str, int]]) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        ran.append((job.queue, job.payload["n"]))

    @registry.job("boom")
    async def boom(job: Job[dict[str, int]]) -> None:
        raise ValueError("boom")

    return registry


async def test_queues_and_spec_replace_the_registered_ones() -> None:
    ran: list[tuple[str, int]] = []
    peak = [0]
    registry = _registry(ran, peak)
    for n in range(4):
        await registry.push("other", "note", {"n": n})
    await registry.push("tasks", "note", {"n": 99})
    spec = dataclasses.replace(registry.worker_spec("w"), concurrency=4)

    await Worker(registry, "w", burst=True, spec=spec, queues=["other"]).run()

    assert sorted(ran) == [("other", n) for n in range(4)]
    assert peak[0] == 4, "the overriding concurrency of 4 ran them at once"
    assert (await registry.queue_info())["tasks"].pending == 1
    with pytest.raises(UnknownQueueError):
        Worker(registry, "w", queues=["nowhere"])
    await registry.close()


async def test_each_finished_attempt_logs_one_line_with_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = _registry([], [0])
    good = await registry.push("tasks", "note", {"n": 1})
    bad = await registry.push("tasks", "boom", {})
    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        await Worker(registry, "w", burst=True).run()

    finished = {r.__dict__["id"]: r for r in caplog.records if "outcome" in r.__dict__}
    assert set(finished) == {good, bad}
    assert finished[good].__dict__["outcome"] == "succeeded"
    assert finished[good].levelno == logging.INFO
    assert finished[bad].__dict__["outcome"] == "failed"
    assert finished[bad].levelno == logging.ERROR
    assert finished[good].__dict__["duration"] >= 0.05
    assert all(r.__dict__["queue"] == "tasks" and r.__dict__["attempt"] == 1
               for r in finished.values())  # fmt: skip
    await registry.close()
