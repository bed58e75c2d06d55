"""A chain of 50 pages on real worker processes: page 20 fails once and is retried, the worker
running page 30 is SIGKILLed mid-page and another takes the page over after its lease. Every
page completes exactly once, in order; only the killed page started twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Job, Registry
from tests.integration.processes import KINDS, Workers, backend_of, clean_backend

pytestmark = pytest.mark.timeout(120)

PAGES = 50

APP_SOURCE = """
from __future__ import annotations

import asyncio
import os
import pathlib
import signal

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("batch", workers=["w"], retry=2, retry_delay=0)
registry.worker("w", concurrency=4, lease=1.0, poll_interval=0.05)


def _record(what: str, job: Job[dict[str, int]]) -> None:
    with open(HERE / f"pages-{{os.getpid()}}.txt", "a") as out:
        out.write(f"{{what}} {{job.page}} {{job.attempt}} {{job.cursor}}\\n")


@registry.job("walk", queue="batch", chain=True)
async def walk(job: Job[dict[str, int]]) -> int | None:
    _record("start", job)
    await asyncio.sleep(0.01)
    if job.page == 20 and job.attempt == 1:
        raise RuntimeError("page 20 fails once")
    if job.page == 30 and not (HERE / "killed").exists():
        (HERE / "killed").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    _record("done", job)
    page = job.page or 0
    return page + 1 if page + 1 < {pages} else None
"""


async def _noop(job: Job[dict[str, int]]) -> int | None:
    """Stands in for the app's handler in this process, which only starts and inspects."""
    return None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_chain_survives_a_failed_page_and_a_killed_worker(
    kind: str, tmp_path: Path
) -> None:
    url, prefix = backend_of(kind, tmp_path)
    (tmp_path / "workapp.py").write_text(APP_SOURCE.format(url=url, pages=PAGES))
    registry = Registry(default_driver=url)
    registry.queue("batch", workers=["w"], retry=2, retry_delay=0)
    registry.worker("w")
    registry.job("walk", queue="batch", chain=True)(_noop)
    workers = Workers(tmp_path)
    try:
        chain_id = await registry.start_chain("walk", {}, cursor=0)
        running = [workers.start(burst=False) for _ in range(2)]
        deadline = time.monotonic() + 90
        while True:
            running = [p if p.poll() is None else workers.start(burst=False) for p in running]
            info = await registry.chain_info(chain_id)
            if info is not None and info.state != "running":
                break
            assert time.monotonic() < deadline, f"{info}\n{workers.logs()}"
            await asyncio.sleep(0.1)

        await asyncio.sleep(0.5)
        again = await registry.chain_info(chain_id)
        assert (info.pages, info.state, info.cursor) == (PAGES, "done", PAGES - 1), (
            f"{info}\nhalf a second later: {again}\n{workers.logs()}"
        )
        lines = [
            line.split()
            for path in tmp_path.glob("pages-*.txt")
            for line in path.read_text().splitlines()
        ]
        done = Counter(int(page) for what, page, *_ in lines if what == "done")
        started = Counter(int(page) for what, page, *_ in lines if what == "start")
        assert done == Counter(range(PAGES)), workers.logs()
        assert started == Counter([*range(PAGES), 20, 30]), workers.logs()
        cursors = {int(page): cursor for what, page, _, cursor in lines if what == "done"}
        assert cursors == {page: str(page) for page in range(PAGES)}
    finally:
        workers.close()
        await registry.close()
        await clean_backend(kind, prefix)
