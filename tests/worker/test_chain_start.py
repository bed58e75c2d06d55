"""A chain started under a `chain_id` that exists: the same start again (a retried tick) starts
nothing; a start with another payload, cursor, job or queue is refused with ChainExistsError,
where it used to return the id as if it had started, and nothing of it ever ran."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from conveyor import ChainExistsError, Job, JobState
from conveyor.chain import page_id
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Shard:
    shard: int


@needs("lookup")
async def test_a_chain_id_reused_for_another_start_is_refused(app: App, start) -> None:
    registry = app.registry()
    runs: list[tuple[int, int | None]] = []

    @registry.job("walk", queue="q", chain=True)
    async def walk(job: Job[Shard]) -> int | None:
        runs.append((job.payload.shard, job.cursor))
        return None

    @registry.job("other", queue="q", chain=True)
    async def other(job: Job[Shard]) -> int | None:
        return None

    assert await registry.start_chain("walk", Shard(1), chain_id="nightly-1") == "nightly-1"
    start(registry)
    assert (await settle(registry, page_id("nightly-1", 0))).state is JobState.SUCCEEDED

    # The same start again (a tick's job retried): the chain exists, nothing new runs.
    assert await registry.start_chain("walk", {"shard": 1}, chain_id="nightly-1") == "nightly-1"
    with pytest.raises(ChainExistsError, match=r"'nightly-1' exists already.* payload") as caught:
        await registry.start_chain("walk", Shard(2), chain_id="nightly-1")
    assert caught.value.chain_id == "nightly-1"
    assert "succeeded" in str(caught.value) and "another chain_id" in str(caught.value)
    with pytest.raises(ChainExistsError, match=r"another cursor"):
        await registry.start_chain("walk", Shard(1), cursor=7, chain_id="nightly-1")
    with pytest.raises(ChainExistsError, match=r"another job 'walk'"):
        await registry.start_chain("other", Shard(1), chain_id="nightly-1")

    info = await registry.chain_info("nightly-1")
    assert info is not None and (info.pages, info.state, info.cursor) == (1, "done", None)
    assert runs == [(1, None)]
