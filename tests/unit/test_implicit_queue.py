"""The seeds' zero-declaration style: with no queue declared, the default queue and a worker
of the same name exist implicitly; once one is declared, nothing is implicit and freeze()
reports a job whose queue no worker serves. The driver name "database" works in code too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry, RegistryError, Worker
from conveyor.drivers.sql.sqlite import SqliteDriver


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [*os.environ]:
        if name.startswith(("CONVEYOR_", "QUEUE_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


async def test_register_handlers_push_and_work_with_nothing_declared() -> None:
    registry = Registry(default_driver="memory")
    done: list[str] = []

    @registry.job("mail.send")
    async def send(job: Job[dict[str, Any]]) -> None:
        done.append(job.queue)

    job_id = await send.push({})
    await registry.push("default", "mail.send", {})  # the string form reaches it too
    worker = registry.default_worker()
    assert worker == "default"
    await Worker(registry, worker, burst=True).run()
    assert done == ["default", "default"]
    info = await registry.job_info(job_id)
    assert info is not None and info.state == JobState.SUCCEEDED
    await registry.close()


def test_the_code_may_set_up_the_implicit_worker_by_registering_it() -> None:
    registry = Registry(default_driver="memory")
    registry.worker("default", concurrency=5)
    registry.freeze()
    assert registry.queues["default"].workers == ("default",)
    assert registry.workers["default"].concurrency == 5


def test_queues_named_by_jobs_exist_implicitly_served_by_the_default_worker() -> None:
    registry = Registry(default_driver="memory")

    @registry.job("report", queue="reports")
    async def report(job: Job[dict[str, Any]]) -> None: ...

    registry.freeze()
    assert list(registry.queues) == ["default", "reports"]
    assert registry.queues_of("default") == ["default", "reports"]


def test_once_a_queue_is_declared_nothing_is_implicit() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["main"])
    registry.worker("main")
    registry.freeze()
    assert list(registry.queues) == ["mail"]
    assert list(registry.workers) == ["main"]
    assert registry.default_worker() == "main"  # the only one


def test_freeze_reports_a_job_whose_queue_no_worker_serves() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["main"])
    registry.worker("main")

    @registry.job("report", queue="reports")
    async def report(job: Job[dict[str, Any]]) -> None: ...

    with pytest.raises(RegistryError) as caught:
        registry.freeze()
    assert (
        "job 'report' pushes to queue 'reports' (its queue=), which is not registered, so no"
        " worker would ever run it: add registry.queue('reports', workers=[...]) or change"
        " queue=" in str(caught.value)
    )


def test_with_several_workers_the_worker_to_run_must_be_named() -> None:
    registry = Registry(default_driver="memory")
    registry.queue("mail", workers=["a", "b"])
    registry.worker("a")
    registry.worker("b")
    with pytest.raises(
        RegistryError, match="name the worker to run: the registered workers are a, b"
    ):
        registry.default_worker()


def test_a_failed_freeze_leaves_nothing_implicit_behind() -> None:
    registry = Registry(default_driver="memory")
    registry.worker("stray")
    with pytest.raises(RegistryError, match="worker 'stray' serves no queue"):
        registry.freeze()
    registry.queue("mail", workers=["stray"])  # not refused as a twin of an implicit queue
    registry.freeze()
    assert list(registry.queues) == ["mail"]


def test_the_driver_name_database_is_accepted_in_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    registry = Registry()
    registry.queue("mail", driver="database", workers=["main"])
    registry.worker("main")
    registry.freeze()
    driver = registry._drivers["database"]
    assert isinstance(driver, SqliteDriver) and driver.path == str(tmp_path / "app.db")
    other = Registry(default_driver="database")
    other.freeze()
    assert other.queues["default"].driver == "database"
