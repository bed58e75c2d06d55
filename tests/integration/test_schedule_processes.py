"""Three `conveyor work` processes run the same every-quarter-second schedule on each driver (all
four at once, to keep the suite short) until each has run at least 21 ticks: every tick between the
first and the last runs exactly once, none is skipped, and the latest is recorded as the
schedule's tick."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from conveyor import Job, Registry
from tests.integration.processes import KINDS, Workers, backend_of, clean_backend

pytestmark = pytest.mark.timeout(120)

PROCESSES = 3
TICKS = 21
EVERY = 0.25  # seconds between ticks: a multiple of 2**-n, so tick times add up exactly

APP_SOURCE = """
from __future__ import annotations

import os
import pathlib

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("q", workers=["w"])
registry.worker("w", concurrency=4, poll_interval=0.1)
registry.schedule("second", job="tick", every={every!r})


@registry.job("tick", queue="q")
async def tick(job: Job[dict[str, int]]) -> None:
    with open(HERE / f"ticks-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{job.meta['tick']}} {{job.id}}\\n")
"""


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handler in this process, which only inspects."""


async def test_every_tick_runs_once_across_three_schedulers(tmp_path: Path) -> None:
    folders = {kind: tmp_path / kind for kind in KINDS}
    backends = {kind: backend_of(kind, folder) for kind, folder in folders.items()}
    started: list[Workers] = []
    try:
        for kind, folder in folders.items():
            folder.mkdir()
            url = backends[kind][0]
            (folder / "workapp.py").write_text(APP_SOURCE.format(url=url, every=EVERY))
            workers = Workers(folder)
            started.append(workers)
            for _ in range(PROCESSES):
                workers.start(burst=False)
        began = time.time()
        deadline = time.monotonic() + 90
        while min(len(_runs(folder)) for folder in folders.values()) < TICKS:
            assert time.monotonic() < deadline, "\n".join(w.logs()[-2000:] for w in started)
            await asyncio.sleep(0.5)
        for workers in started:
            for process, _ in workers.started:
                process.send_signal(signal.SIGTERM)
        for workers in started:
            for process, _ in workers.started:
                assert await asyncio.to_thread(process.wait, 30) == 0, workers.logs()
        for kind, workers in zip(KINDS, started, strict=True):
            await _check(kind, folders[kind], backends[kind][0], began, workers)
    finally:
        for workers in started:
            workers.close()
        for kind, (_, prefix) in backends.items():
            await clean_backend(kind, prefix)


def _runs(folder: Path) -> list[list[str]]:
    """(tick, job id) of each run the worker processes of `folder` recorded."""
    return [
        line.split()
        for path in folder.glob("ticks-*.txt")
        for line in path.read_text().splitlines()
    ]


async def _check(kind: str, folder: Path, url: str, began: float, workers: Workers) -> None:
    ticks = sorted(float(tick) for tick, _ in _runs(folder))
    said = f"{kind}: ticks {ticks}\n{workers.logs()}"
    assert len(ticks) == len(set(ticks)), said  # none ran twice
    assert ticks == [ticks[0] + n * EVERY for n in range(len(ticks))], said  # none skipped
    assert len(ticks) >= TICKS, said
    assert ticks[0] >= began - 1, said  # no tick from before the schedulers ran
    registry = Registry(default_driver=url)
    registry.queue("q", workers=["w"])
    registry.worker("w")
    registry.job("tick", queue="q")(_noop)
    schedule = registry.schedule("second", job="tick", every=EVERY)
    try:
        driver = await registry.driver_of("q")
        latest = (await driver.ticks(["second"]))["second"]
        assert latest.at >= ticks[-1], said
        assert latest.job_id == schedule.tick_id(latest.at)
    finally:
        await registry.close()
