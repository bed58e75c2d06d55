"""chain_info of a chain whose failed page was purged: the page before it succeeded, but it
returned a cursor, so the chain did not end there. It said `done`, as for a chain that ran to
its end; now `broken`."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor import Job, JobState
from conveyor.chain import page_id
from tests.backends import needs

from .conftest import App, settle


@dataclass
class Rows:
    rows: int


@needs("lookup")
async def test_a_chain_whose_failed_page_was_purged_is_broken_not_done(app: App, start) -> None:
    registry = app.registry()

    @registry.job("walk", queue="q", chain=True, retry=0)
    async def walk(job: Job[Rows]) -> int | None:
        page = job.page or 0
        if page == 1:
            raise RuntimeError("page 1 breaks")
        return page + 1 if page + 1 < job.payload.rows else None

    ended = await registry.start_chain("walk", Rows(1), cursor=0)
    stopped = await registry.start_chain("walk", Rows(5), cursor=0)
    start(registry)
    assert (await settle(registry, page_id(ended, 0))).state is JobState.SUCCEEDED
    assert (await settle(registry, page_id(stopped, 1))).state is JobState.FAILED
    assert (await registry.chain_info(stopped)).state == "failed"  # type: ignore[union-attr]

    assert await registry.purge("q", JobState.FAILED, [page_id(stopped, 1)]) == 1

    info = await registry.chain_info(stopped)
    assert info is not None and (info.pages, info.state, info.cursor) == (1, "broken", 0)
    done = await registry.chain_info(ended)
    assert done is not None and (done.pages, done.state) == (1, "done")
