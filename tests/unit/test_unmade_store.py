"""Reading queues whose SQLite file does not exist yet creates nothing: the reads answer as for
an empty store and say why (`Driver.unmade`), so that `conveyor list` run from another
directory than the app's (a relative sqlite:/// path) leaves no stray empty database behind
and shows where it looked. Pushing creates the file as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, QueueCounts, Registry, RegistryError, WorkerCounts


def registry_at(path: Path) -> Registry:
    registry = Registry(default_driver=f"sqlite:///{path}")

    @registry.job("hello")
    async def hello(job: Job[dict[str, Any]]) -> None:
        """Only pushed here."""

    return registry


async def test_reads_of_a_store_not_made_yet_create_nothing_and_say_where(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"
    registry = registry_at(database)
    try:
        assert registry.driver_for("default").where() == str(database)
        assert await registry.queue_info() == {"default": QueueCounts()}
        seen = await registry.overview()
        assert seen.counts == {"default": QueueCounts()}
        assert seen.controlled == {"default"}  # the dashboard offers pause before a push
        assert seen.unmade == {"default": f"no SQLite database at {database} yet: nothing was"
                               " pushed there (a relative sqlite:/// path starts from the"
                               " working directory)"}  # fmt: skip
        assert await registry.list_jobs("default", JobState.FAILED) == []
        assert await registry.job_info("0" * 32) is None
        assert await registry.paused_queues() == set()
        # The dashboard reads these too: they created the file (worker stats, throughput).
        assert await registry.worker_info() == {"default": WorkerCounts()}
        assert await registry.workers_alive() == []
        throughput = await registry.throughput("default", 5)
        assert throughput is not None and throughput.succeeded == throughput.failed == (0,) * 5
        assert not database.exists()

        job_id = await registry.push("default", "hello", {})
        assert database.exists()
        seen = await registry.overview()
        assert seen.unmade == {}
        assert seen.counts["default"].pending == 1
        found = await registry.job_info(job_id)
        assert found is not None and found.state is JobState.PENDING
    finally:
        await registry.close()


async def test_a_relative_path_is_shown_absolute(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    registry = Registry(default_driver="sqlite:///conveyor.db")
    assert registry.driver_for("default").where() == str(tmp_path / "conveyor.db")
    assert registry.driver_for("default").kind == "sqlite"


@pytest.mark.parametrize("minutes", [0, -1, 10**12, 1.5, True])
async def test_throughput_refuses_minutes_out_of_range(tmp_path: Path, minutes: Any) -> None:
    """A count per minute is built for each minute asked: 10**12 of them exhausted memory."""
    registry = registry_at(tmp_path / "jobs.db")
    with pytest.raises(RegistryError, match="minutes must be a whole number from 1 to 10080"):
        await registry.throughput("default", minutes)
    await registry.close()
