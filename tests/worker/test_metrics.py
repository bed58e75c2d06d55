"""/metrics, scraped while a worker runs, counts what the worker did and shows the queue
depths `registry.queue_info()` (what `conveyor list` prints) shows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from conveyor import Job, JobState, Registry, Worker
from conveyor import metrics as conveyor_metrics
from tests.backends import NOT_UTF8, Storage, eventually

from .conftest import App, Running, settle

# Each case waits for jobs by looking them up: a driver without lookup cannot be watched.
pytestmark = pytest.mark.needs("lookup")


@dataclass
class Item:
    n: int


def samples(text: str) -> dict[str, float]:
    """The exposition's samples, by name and labels as written."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def scrape_until(port: int, ready: Callable[[dict[str, float]], bool]) -> str:
    """Scrape /metrics on `port` until its samples are `ready` (within 10 s); the last text."""
    deadline = asyncio.get_running_loop().time() + 10
    async with httpx.AsyncClient() as client:
        while True:
            response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert response.status_code == 200
            if ready(samples(response.text)):
                return response.text
            assert asyncio.get_running_loop().time() < deadline, response.text
            await asyncio.sleep(0.05)


async def test_scrape_during_a_run_shows_outcomes_and_depths(app: App, start) -> None:
    registry = app.registry(retry=0, concurrency=2)  # the held job takes one slot
    gate = asyncio.Event()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        if job.payload.n < 0:
            raise ValueError("negative")
        if job.payload.n == 99:
            await gate.wait()

    conveyor_metrics.install(registry, cache_for=0.0)
    server = await conveyor_metrics.serve(registry, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        done = [await registry.push("q", "item", Item(n)) for n in (1, 2, 3, -1)]
        held = await registry.push("q", "item", Item(99))
        await registry.push("q", "item", Item(5), delay=3600)
        start(registry)
        for job_id in done:
            await settle(registry, job_id)
        while (await registry.job_info(held)).state is not JobState.RESERVED:
            await asyncio.sleep(0.02)
        # The hooks count an outcome just after the backend took it: scrape until they did.
        succeeded = 'conveyor_jobs_total{job="item",outcome="succeeded",queue="q"}'
        waited = 'conveyor_job_wait_seconds_count{job="item",queue="q"}'
        text = await scrape_until(
            port, lambda got: got.get(succeeded) == 3 and got.get(waited) == 5
        )
        got = samples(text)
        info = (await registry.queue_info())["q"]
        for state in ("pending", "delayed", "reserved", "succeeded", "failed", "cancelled"):
            assert got[f'conveyor_queue_jobs{{queue="q",state="{state}"}}'] == getattr(info, state)
        assert (info.succeeded, info.failed, info.reserved, info.delayed) == (3, 1, 1, 1)
        assert got['conveyor_jobs_total{job="item",outcome="succeeded",queue="q"}'] == 3
        assert got['conveyor_jobs_total{job="item",outcome="failed",queue="q"}'] == 1
        assert got['conveyor_jobs_pushed_total{job="item",queue="q"}'] == 6
        assert got['conveyor_job_run_seconds_count{job="item",queue="q"}'] == 4
        assert got['conveyor_job_wait_seconds_count{job="item",queue="q"}'] == 5
        assert got['conveyor_workers_alive{worker="w"}'] == 1
        assert re.search(r"# TYPE conveyor_job_run_seconds histogram", text)
    finally:
        gate.set()
        server.close()
        await server.wait_closed()


async def test_depth_reads_are_cached_between_scrapes(app: App) -> None:
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    metrics = conveyor_metrics.install(registry, cache_for=60.0)
    await registry.push("q", "item", Item(1))
    first = samples((await metrics.exposition()).decode())
    await registry.push("q", "item", Item(2))
    second = samples((await metrics.exposition()).decode())
    key = 'conveyor_queue_jobs{queue="q",state="pending"}'
    assert first[key] == second[key] == 1  # the second scrape did not read the backend


async def test_the_asgi_app_answers_a_scrape(app: App) -> None:
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    transport = httpx.ASGITransport(app=conveyor_metrics.asgi_app(registry))
    await registry.push("q", "item", Item(1))  # counted: pushed after the app installed them
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/metrics")
        refused = await client.post("/metrics")
    assert response.status_code == 200 and refused.status_code == 405
    assert 'conveyor_jobs_pushed_total{job="item",queue="q"} 1.0' in response.text


async def test_a_job_whose_stored_name_is_not_utf8_leaves_the_scrape_working(
    storage: Storage, app: App, start
) -> None:
    """A damaged record's name (lone surrogates once read) is a label as \\x escapes: as it
    was, every scrape after the job failed broke off without an answer."""
    if not any(d.field == "name" and d.raw == NOT_UTF8 for d in storage.damages):
        pytest.skip("this backend cannot hold a name that is not UTF-8")
    registry = app.registry(retry=0)

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    conveyor_metrics.install(registry, cache_for=0.0)
    server = await conveyor_metrics.serve(registry, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        job_id = await registry.push("q", "item", Item(1))
        await storage.damage(job_id, "name", NOT_UTF8)
        start(registry)
        assert (await settle(registry, job_id)).state is JobState.FAILED
        failed = 'conveyor_jobs_total{job="caf\\\\xe9 \\\\xff\\\\xfe",outcome="failed",queue="q"}'
        await scrape_until(port, lambda got: got.get(failed) == 1)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_worker_of_another_registry_reads_0_once_it_has_stopped(
    app: App, start, storage: Storage
) -> None:
    """A worker this registry does not name (another application's, on the same backend)
    counts while it beats; it kept its last count once stopped."""
    registry = app.registry()
    other = Registry()
    other.queue("q", driver=storage.connect(), workers=["elsewhere"])
    other.worker("elsewhere", poll_interval=0.05)
    app.registries.append(other)
    metrics = conveyor_metrics.install(registry, cache_for=0.0)
    key = 'conveyor_workers_alive{worker="elsewhere"}'

    async def alive() -> float | None:
        return samples((await metrics.exposition()).decode()).get(key)

    running = Running(Worker(other, "elsewhere"))
    try:
        await eventually(lambda: _is(alive(), 1.0))
    finally:
        await running.stop()
    await eventually(lambda: _is(alive(), 0.0))


async def _is(value: Awaitable[float | None], wanted: float) -> bool:
    return await value == wanted


async def test_install_after_the_asgi_app_sets_how_long_depths_are_cached(app: App) -> None:
    # Before, the cache_for of a call after asgi_app(registry) (or serve) was dropped without
    # a word: the first call's 5 s held, and a scrape showed a depth 5 s old.
    registry = app.registry()

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    transport = httpx.ASGITransport(app=conveyor_metrics.asgi_app(registry))
    conveyor_metrics.install(registry, cache_for=0.0)
    key = 'conveyor_queue_jobs{queue="q",state="pending"}'
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        await registry.push("q", "item", Item(1))
        first = samples((await client.get("/metrics")).text)
        await registry.push("q", "item", Item(2))
        second = samples((await client.get("/metrics")).text)
    assert (first[key], second[key]) == (1, 2)
