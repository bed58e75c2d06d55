"""The dashboard and /metrics while their backend has gone silent: the shared Redis behind a
proxy that drops every byte (the server itself is never touched), each test under a key prefix
of its own."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conveyor import Job, Registry
from conveyor import metrics as conveyor_metrics
from conveyor.dashboard.app import create_app
from conveyor.errors import BackendUnavailableError
from tests.backends import require_service
from tests.backends.proxy import Proxy
from tests.backends.redis import START, delete_prefix, fresh_prefix

pytestmark = pytest.mark.timeout(60)


@dataclass
class Item:
    n: int


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    require_service("redis", 6379, START)
    proxy = Proxy(6379)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def prefix() -> str:
    return fresh_prefix()


@pytest.fixture
async def registry_of(proxy: Proxy, prefix: str) -> AsyncIterator[list[Registry]]:
    made: list[Registry] = []
    yield made
    for registry in made:
        await registry.close()
    await delete_prefix(prefix)


def make_registry(proxy: Proxy, prefix: str, timeout: float, made: list[Registry]) -> Registry:
    registry = Registry()
    url = f"redis://127.0.0.1:{proxy.port}/0?timeout={timeout:g}&prefix={prefix}"
    registry.queue("q", driver=url, workers=["w"])
    registry.worker("w")

    @registry.job("item")
    async def handle(job: Job[Item]) -> None:
        return None

    made.append(registry)
    return registry


async def test_dashboard_pages_answer_503_naming_a_silent_backend(
    proxy: Proxy, prefix: str, registry_of: list[Registry]
) -> None:
    """Was: the queues page a bare 500, and a job's page "No job ..." (200) after every
    queue's backend had timed out in turn, though the job was there all along."""
    registry = make_registry(proxy, prefix, 1.0, registry_of)
    job_id = await registry.push("q", "item", Item(1))
    transport = httpx.ASGITransport(app=create_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
        assert (await web.get(f"/jobs/{job_id}")).status_code == 200
        csrf = web.cookies["conveyor_csrf"]
        proxy.blackhole(new_for=30.0)
        paused = await web.post("/queues/q/pause", data={"csrf": csrf, "back": "/"})
        assert paused.status_code == 503 and "is unavailable" in paused.text, paused.text
        for path in ("/", f"/jobs/{job_id}", f"/jobs?id={job_id}", "/queues/q?state=pending"):
            started = time.monotonic()
            page = await web.get(path)
            assert page.status_code == 503, (path, page.status_code, page.text)
            assert f"127.0.0.1:{proxy.port}" in page.text and "is unavailable" in page.text
            assert time.monotonic() - started < 5, path


async def test_a_scrape_past_its_deadline_logs_why_and_serves_the_last_values(
    proxy: Proxy, prefix: str, registry_of: list[Registry], caplog: pytest.LogCaptureFixture
) -> None:
    """A read slower than READ_DEADLINE is cut there; the warning said "()" (a TimeoutError
    has no message) rather than what happened."""
    registry = make_registry(proxy, prefix, 30.0, registry_of)
    await registry.push("q", "item", Item(1))
    metrics = conveyor_metrics.install(registry, cache_for=0.0)
    first = (await metrics.exposition()).decode()
    pending = 'conveyor_queue_jobs{queue="q",state="pending"} 1.0'
    assert pending in first
    assert "conveyor_backend_up 1.0" in first
    proxy.blackhole(new_for=30.0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="conveyor.metrics"):
        second = (await metrics.exposition()).decode()
    assert time.monotonic() - started < conveyor_metrics.READ_DEADLINE + 1.5
    assert pending in second
    assert "conveyor_backend_up 0.0" in second  # what to alert on: the values are the last
    [warning] = [r.getMessage() for r in caplog.records if r.name == "conveyor.metrics"]
    assert f"no answer within {conveyor_metrics.READ_DEADLINE:g}s" in warning, warning


def mixed_registry(proxy: Proxy, prefix: str, folder: Path, made: list[Registry]) -> Registry:
    """Queue "q" on the Redis behind the proxy, queue "local" on an SQLite file."""
    registry = make_registry(proxy, prefix, 1.0, made)
    registry.queue("local", driver=f"sqlite:///{folder / 'jobs.db'}", workers=["w"])
    return registry


async def test_the_queues_page_shows_the_backends_that_answer_when_one_is_silent(
    proxy: Proxy, prefix: str, registry_of: list[Registry], tmp_path: Path
) -> None:
    """Was: one silent backend of two made the whole queues page a 503, so the dashboard
    showed nothing of the queues that could be read, just when it was most needed."""
    registry = mixed_registry(proxy, prefix, tmp_path, registry_of)
    await registry.push("local", "item", Item(1))
    await registry.push("local", "item", Item(2))
    transport = httpx.ASGITransport(app=create_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
        assert "down-q" not in (await web.get("/")).text
        proxy.blackhole(new_for=30.0)
        started = time.monotonic()
        page = await web.get("/")
        assert time.monotonic() - started < 5
    assert page.status_code == 200, page.text
    assert 'href="/queues/local?state=pending">2</a>' in page.text  # read as usual
    down = re.search(r'id="down-q">([^<]*)<', page.text)
    assert down is not None and f"127.0.0.1:{proxy.port}" in down.group(1), page.text
    assert "beats to a backend that answered" in page.text  # not "no worker is alive"


async def test_a_scrape_reads_the_queues_of_the_backends_that_answer(
    proxy: Proxy, prefix: str, registry_of: list[Registry], tmp_path: Path
) -> None:
    """Was: one backend past the deadline kept every queue's depth at its last value."""
    registry = mixed_registry(proxy, prefix, tmp_path, registry_of)
    await registry.push("q", "item", Item(1))
    metrics = conveyor_metrics.install(registry, cache_for=0.0)
    assert (
        'conveyor_queue_jobs{queue="q",state="pending"} 1.0'
        in (await metrics.exposition()).decode()
    )
    proxy.blackhole(new_for=30.0)
    await registry.push("local", "item", Item(1))
    scraped = (await metrics.exposition()).decode()
    assert 'conveyor_queue_jobs{queue="local",state="pending"} 1.0' in scraped
    assert 'conveyor_queue_jobs{queue="q",state="pending"} 1.0' in scraped  # its last value
    assert "conveyor_backend_up 0.0" in scraped


async def test_a_job_is_found_on_the_backend_that_answers_when_another_is_silent(
    proxy: Proxy, prefix: str, registry_of: list[Registry], tmp_path: Path
) -> None:
    """Was: a silent backend made every lookup raise, even of a job another backend held."""
    registry = mixed_registry(proxy, prefix, tmp_path, registry_of)
    far = await registry.push("q", "item", Item(1))
    near = await registry.push("local", "item", Item(2))
    proxy.blackhole(new_for=30.0)
    found = await registry.job_info(near)
    assert found is not None and found.queue == "local"
    with pytest.raises(BackendUnavailableError):
        await registry.job_info(far)  # it may be on the silent one: not "no such job"
