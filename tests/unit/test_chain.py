"""Cursor-chained batch jobs on the memory driver: pages run in order with their cursors, a
failed page stops the chain and `retry_failed` resumes it, a start repeated starts nothing,
a page run again pushes its successor once; chain_info tells how far a chain got."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import Job, JobState, PayloadError, Registry, RegistryError, UnknownJobError
from conveyor.chain import find_chain, next_page, page_id
from conveyor.job import JobInfo
from conveyor.worker import Worker


def _registry() -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("batch", workers=["w"], retry=1, retry_delay=0)
    registry.worker("w", concurrency=4, poll_interval=0.01)
    return registry


async def _work(registry: Registry) -> None:
    await asyncio.wait_for(Worker(registry, "w", burst=True).run(), 30)


async def test_a_chain_runs_its_pages_in_order_until_the_cursor_is_none() -> None:
    registry = _registry()
    seen: list[tuple[int | None, Any, dict[str, int]]] = []

    @registry.job("walk", queue="batch", chain=True)
    async def walk(job: Job[dict[str, int]]) -> int | None:
        seen.append((job.page, job.cursor, job.payload))
        after = job.cursor or 0
        return after + 10 if after + 10 < job.payload["rows"] else None

    chain_id = await registry.start_chain("walk", {"rows": 300})
    await _work(registry)

    assert seen == [(n, n * 10 or None, {"rows": 300}) for n in range(30)]
    info = await registry.chain_info(chain_id)
    assert info is not None
    assert (info.id, info.pages, info.state, info.cursor) == (chain_id, 30, "done", 290)
    assert info.last.id == page_id(chain_id, 29)
    assert info.started_at is not None and info.started_at <= info.last.created_at
    await registry.close()


async def test_a_page_that_fails_for_good_stops_the_chain_until_retried() -> None:
    registry = _registry()
    broken = {"on": True}

    @registry.job("walk", queue="batch", chain=True)
    async def walk(job: Job[dict[str, int]]) -> int | None:
        page = job.page or 0
        if page == 3 and broken["on"]:
            raise RuntimeError("the source is away")
        return page + 1 if page < 5 else None

    chain_id = await registry.start_chain("walk", {})
    await _work(registry)
    stopped = await registry.chain_info(chain_id)
    assert stopped is not None
    assert (stopped.pages, stopped.state, stopped.cursor) == (4, "failed", 3)
    assert stopped.last.attempt == 2  # retry=1: tried twice

    broken["on"] = False
    assert await registry.retry_failed("batch") == 1
    await _work(registry)

    done = await registry.chain_info(chain_id)
    assert done is not None and (done.pages, done.state) == (6, "done")
    await registry.close()


async def test_a_page_run_again_pushes_its_successor_once() -> None:
    registry = _registry()
    runs: list[int | None] = []

    @registry.job("walk", queue="batch", chain=True)
    async def walk(job: Job[dict[str, int]]) -> int | None:
        runs.append(job.page)
        return 1 if job.page == 0 else None

    chain_id = await registry.start_chain("walk", {}, chain_id="nightly-shard-3")
    assert await registry.start_chain("walk", {}, chain_id="nightly-shard-3") == chain_id
    driver = await registry.driver_of("batch")
    first = await driver.get(page_id(chain_id, 0))
    assert first is not None
    # As if the page's successor was pushed and then the worker died before the ack.
    await driver.push(next_page(first, 1))
    await _work(registry)

    assert runs == [0, 1]
    counts = (await registry.queue_info())["batch"]
    assert counts.succeeded == 2
    await registry.close()


async def test_a_cursor_that_is_not_json_fails_the_page() -> None:
    registry = _registry()

    @registry.job("walk", queue="batch", chain=True, retry=0)
    async def walk(job: Job[dict[str, int]]) -> object:
        return object()

    chain_id = await registry.start_chain("walk", {})
    await _work(registry)

    info = await registry.chain_info(chain_id)
    assert info is not None and info.state == "failed"
    assert info.last.error is not None
    assert info.last.error.type == f"{PayloadError.__module__}.PayloadError"
    assert "the cursor job 'walk' returned is not JSON" in info.last.error.message
    await registry.close()


async def test_start_chain_refuses_a_job_that_is_not_chained() -> None:
    registry = _registry()

    @registry.job("plain", queue="batch")
    async def plain(job: Job[dict[str, int]]) -> None: ...

    with pytest.raises(RegistryError, match=r"chain=True"):
        await registry.start_chain("plain", {})
    with pytest.raises(UnknownJobError):
        await registry.start_chain("nobody", {})
    assert await registry.chain_info("never-started") is None
    assert (await registry.queue_info())["batch"].pending == 0
    await registry.close()


async def test_chain_info_of_a_running_chain() -> None:
    registry = _registry()

    @registry.job("walk", queue="batch", chain=True)
    async def walk(job: Job[dict[str, int]]) -> int | None:
        return None

    chain_id = await registry.start_chain("walk", {}, cursor="a", meta={"by": "test"})

    info = await registry.chain_info(chain_id)
    assert info is not None
    assert (info.pages, info.state, info.cursor) == (1, "running", "a")
    assert info.last.state is JobState.PENDING and info.last.meta["by"] == "test"
    await registry.close()


async def test_chain_info_of_a_chain_that_grows_while_it_is_searched() -> None:
    """Each read of the latest page finishes it and pushes the next, as a fast worker would
    between two lookups: a page found missing early exists by the time the one before it is
    read as done. The answer must never be `done` at a page that has a successor."""
    chain_id = "growing"
    pages = {page_id(chain_id, n): n for n in range(100)}
    states = dict.fromkeys(range(30), JobState.SUCCEEDED)
    states[30] = JobState.PENDING

    async def get(job_id: str) -> JobInfo | None:
        page = pages[job_id]
        if page not in states:
            return None
        if states[page] is JobState.PENDING and page < 60:  # finished as it is read
            states[page], states[page + 1] = JobState.SUCCEEDED, JobState.PENDING
        return JobInfo(job_id, "q", "walk", "{}", states[page], 1, 1, 0, 0.0, 0.0,
                       meta={"chain": chain_id, "page": page, "cursor": page})  # fmt: skip

    info = await find_chain(get, chain_id)

    assert info is not None
    latest = max(states)
    assert (info.pages, info.state) == (latest + 1, "running"), (info, latest)
