"""The dashboard over a queue on RabbitMQ, beside one on a backend with control: the broker
under a random name prefix, deleted afterwards."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor import Job, Registry, Worker
from conveyor.dashboard.app import create_app
from tests.backends import require_service
from tests.backends.amqp import START, URL, delete_prefix, fresh_prefix


@pytest.fixture
async def page() -> AsyncIterator[httpx.Response]:
    """The queues page of queue "rabbit" on RabbitMQ beside queue "kept" in memory."""
    require_service("amqp", 5672, START)
    prefix = fresh_prefix()
    registry = Registry()
    registry.queue("rabbit", driver=f"{URL}?prefix={prefix}", workers=["w"])
    registry.queue("kept", driver="memory", workers=["w"])
    registry.worker("w")
    transport = httpx.ASGITransport(app=create_app(registry))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
            yield await web.get("/")
    finally:
        await registry.close()
        await delete_prefix(prefix, {"rabbit"})


async def test_the_queues_page_offers_pause_only_where_the_backend_can_pause(
    page: httpx.Response,
) -> None:
    # Before, an amqp queue had a Pause button that could only answer "does not support".
    assert page.status_code == 200, page.text
    assert 'action="/queues/kept/pause"' in page.text
    assert "/queues/rabbit/pause" not in page.text
    assert "/queues/rabbit/resume" not in page.text


async def test_the_queues_page_says_what_it_cannot_see_of_an_amqp_queue(
    page: httpx.Response,
) -> None:
    # It showed delayed 0 and succeeded 0 (neither is counted on amqp) and "no worker process
    # is alive" beside a running amqp worker, which only its own process sees.
    assert page.status_code == 200, page.text
    assert "/queues/rabbit?state=delayed" not in page.text
    assert "/queues/rabbit?state=succeeded" not in page.text
    assert page.text.count('title="its backend does not count delayed or succeeded jobs">?') == 2
    assert "/queues/kept?state=delayed" in page.text  # a backend that counts them
    assert 'id="unshared">The backend of rabbit keeps worker processes' in page.text


async def test_a_failed_job_of_an_amqp_queue_is_shown_whole_in_its_list_not_linked() -> None:
    # Each failed job in the list linked to its page, which answered 404 (amqp finds no job
    # by id): its traceback and whole payload could be seen nowhere on the dashboard.
    require_service("amqp", 5672, START)
    prefix = fresh_prefix()
    registry = Registry()
    registry.queue("rabbit", driver=f"{URL}?prefix={prefix}", workers=["w"], retry=0)
    registry.worker("w")

    @registry.job("crash", queue="rabbit")
    async def crash(job: Job[dict[str, str]]) -> None:
        raise RuntimeError("the disk is full")

    transport = httpx.ASGITransport(app=create_app(registry))  # type: ignore[arg-type]
    try:
        job_id = await crash.push({"note": "n" * 100 + "-the-end"})
        await Worker(registry, "w", burst=True).run()
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as web:
            listed = await web.get("/queues/rabbit?state=failed")
    finally:
        await registry.close()
        await delete_prefix(prefix, {"rabbit"})
    assert listed.status_code == 200, listed.text
    assert job_id in listed.text
    assert f'href="/jobs/{job_id}"' not in listed.text  # its Retry button stays
    assert f'action="/jobs/{job_id}/retry"' in listed.text
    assert "-the-end" in listed.text  # the whole payload, past the 80 characters shown
    assert 'raise RuntimeError("the disk is full")' in html.unescape(listed.text)  # traceback
