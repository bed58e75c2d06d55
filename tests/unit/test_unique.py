"""Unique keys: one unfinished job per (queue, job name, key); a finished one frees the key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import ConfigError, Job, JobState, Registry, Worker


def make_registry() -> Registry:
    registry = Registry(default_driver="memory")
    registry.queue("q", workers=["w"])
    registry.queue("other", workers=["w"])
    registry.worker("w", poll_interval=0.02)
    return registry


@pytest.fixture
def registry() -> Registry:
    registry = make_registry()

    @registry.job("j")
    async def handler(job: Job[dict[str, Any]]) -> None: ...

    @registry.job("k")
    async def other(job: Job[dict[str, Any]]) -> None: ...

    return registry


async def test_push_with_the_same_key_twice_returns_the_same_id_and_stores_one_job(
    registry: Registry,
) -> None:
    first = await registry.push("q", "j", {"n": 1}, unique="key")
    second = await registry.push("q", "j", {"n": 2}, unique="key")
    assert second == first
    assert (await registry.queue_info())["q"].pending == 1
    info = await registry.job_info(first)
    assert info is not None
    assert info.unique == "key"
    assert info.payload == '{"n":1}'  # the second push stored nothing


async def test_same_key_for_a_different_job_name_is_a_separate_job(registry: Registry) -> None:
    first = await registry.push("q", "j", {}, unique="key")
    second = await registry.push("q", "k", {}, unique="key")
    assert second != first
    assert (await registry.queue_info())["q"].pending == 2


async def test_same_key_on_a_different_queue_is_a_separate_job(registry: Registry) -> None:
    first = await registry.push("q", "j", {}, unique="key")
    second = await registry.push("other", "j", {}, unique="key")
    assert second != first
    info = await registry.queue_info()
    assert (info["q"].pending, info["other"].pending) == (1, 1)


async def test_different_keys_make_separate_jobs(registry: Registry) -> None:
    first = await registry.push("q", "j", {}, unique="a")
    second = await registry.push("q", "j", {}, unique="b")
    assert second != first


async def test_push_without_a_key_is_never_deduplicated(registry: Registry) -> None:
    await registry.push("q", "j", {}, unique="key")
    plain_a = await registry.push("q", "j", {})
    plain_b = await registry.push("q", "j", {})
    assert plain_a != plain_b
    assert (await registry.queue_info())["q"].pending == 3


async def test_delayed_job_holds_its_key(registry: Registry) -> None:
    first = await registry.push("q", "j", {}, unique="key", delay=3600)
    assert await registry.push("q", "j", {}, unique="key") == first


async def test_after_the_job_succeeds_the_same_key_makes_a_new_job(registry: Registry) -> None:
    first = await registry.push("q", "j", {}, unique="key")
    await Worker(registry, "w", burst=True).run()
    done = await registry.job_info(first)
    assert done is not None and done.state is JobState.SUCCEEDED

    second = await registry.push("q", "j", {}, unique="key")
    assert second != first
    fresh = await registry.job_info(second)
    assert fresh is not None and fresh.state is JobState.PENDING


async def test_after_the_job_fails_for_good_the_same_key_makes_a_new_job() -> None:
    registry = make_registry()

    @registry.job("j", retry=0)
    async def doomed(job: Job[dict[str, Any]]) -> None:
        raise RuntimeError("no")

    first = await registry.push("q", "j", {}, unique="key")
    await Worker(registry, "w", burst=True).run()
    failed = await registry.job_info(first)
    assert failed is not None and failed.state is JobState.FAILED
    assert await registry.push("q", "j", {}, unique="key") != first


async def test_job_waiting_to_retry_still_holds_its_key() -> None:
    registry = make_registry()

    @registry.job("j", retry=3, retry_delay=3600)
    async def flaky(job: Job[dict[str, Any]]) -> None:
        raise RuntimeError("later")

    first = await registry.push("q", "j", {}, unique="key")
    worker = Worker(registry, "w")
    # Run until the first attempt is settled back to the queue, an hour away.

    task = asyncio.create_task(worker.run())
    for _ in range(200):
        info = await registry.job_info(first)
        if info is not None and info.attempt == 1 and info.state is JobState.DELAYED:
            break
        await asyncio.sleep(0.01)
    worker.stop()
    await task
    info = await registry.job_info(first)
    assert info is not None and info.state is JobState.DELAYED
    assert await registry.push("q", "j", {}, unique="key") == first


@pytest.mark.parametrize("key", ["", "x" * 257, 42])
async def test_empty_too_long_or_non_string_key_is_refused(registry: Registry, key: Any) -> None:
    with pytest.raises(ConfigError, match="unique"):
        await registry.push("q", "j", {}, unique=key)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "non-empty string: give unique=None for no key"),
        ("x" * 257, "not one of 257: give a longer key as its digest"),
        (42, "must be a string, not int 42: give str"),
        (b"k", "must be a string, not bytes b'k'"),
    ],
)
async def test_a_refused_key_is_named_with_what_to_do(
    registry: Registry, key: Any, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        await registry.push("q", "j", {}, unique=key)


async def test_key_of_256_characters_is_accepted(registry: Registry) -> None:
    first = await registry.push("q", "j", {}, unique="x" * 256)
    assert await registry.push("q", "j", {}, unique="x" * 256) == first
