"""`conveyor failed` on many jobs: `list` reads a long listing a page at a time (LIST_PAGE),
never whole; `retry` and `purge` stopped by Ctrl-C say what they leave, and go on when run
again.

Before, `--limit` jobs were read in one call and held, payloads and errors, until printed: a
`failed list QUEUE --limit 100000 --json` of 100,000 failed jobs on SQLite took 867 MB."""

from __future__ import annotations

import asyncio
import json
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import conveyor.drivers.sql.driver as sql_driver
from conveyor import Registry
from conveyor.cli import main
from conveyor.drivers.base import Failure, QueueCounts
from conveyor.drivers.sql.driver import SqlDriver
from conveyor.job import ErrorInfo

APP = """
from typing import Any
from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///{path}")
registry.queue("q", workers=["w"])
registry.worker("w")


@registry.job("a")
async def a(job: Job[dict[str, Any]]) -> None:
    raise RuntimeError("never run")


@registry.job("b")
async def b(job: Job[dict[str, Any]]) -> None:
    raise RuntimeError("never run")


@registry.job("c")  # registered, never failed: an empty listing
async def c(job: Job[dict[str, Any]]) -> None:
    raise RuntimeError("never run")
"""


async def fail_all(registry: Registry, names: str) -> list[str]:
    """One failed job per letter of `names` (its job name), in id order."""
    for name in names:
        await registry.push("q", name, {})
    driver = await registry.driver_of("q")
    jobs = await driver.reserve(["q"], len(names), 30.0, "w")
    failures = [Failure(job.id, job.reservation or "", ErrorInfo("E", "x")) for job in jobs]
    await driver.fail(failures)
    await registry.close()
    return sorted(job.id for job in jobs)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    module = f"pages_app_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(APP.format(path=tmp_path / "jobs.db"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{module}:registry"


@pytest.mark.parametrize("as_json", [True, False])
def test_failed_list_reads_a_page_at_a_time(
    app: str, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    registry: Registry = import_module(app.split(":")[0]).registry
    ids = asyncio.run(fail_all(registry, "abababa"))
    page = import_module("conveyor.cli.failed")
    monkeypatch.setattr(page, "LIST_PAGE", 2, raising=False)
    asked: list[int] = []
    list_jobs = Registry.list_jobs

    async def counted(self: Registry, *args: Any, **options: Any) -> Any:
        asked.append(options["limit"])
        return await list_jobs(self, *args, **options)

    monkeypatch.setattr(Registry, "list_jobs", counted)
    more = ["--json"] if as_json else []

    shown = CliRunner().invoke(main, ["failed", "list", "q", "--app", app, "--limit", "5", *more])
    named = ["failed", "list", "q", "--app", app, "--name", "a", "--offset", "1", *more]
    by_name = CliRunner().invoke(main, named)
    empty = CliRunner().invoke(main, ["failed", "list", "q", "--app", app, "--name", "c", *more])

    assert shown.exit_code == by_name.exit_code == empty.exit_code == 0, shown.output
    assert max(asked) == 2
    if as_json:
        assert [job["id"] for job in json.loads(shown.output)] == ids[:5]
        assert shown.output.startswith('[\n  {\n    "id": ') and shown.output.endswith("}\n]\n")
        assert [job["id"] for job in json.loads(by_name.output)] == ids[2::2]
        assert empty.output == "[]\n"
    else:
        assert [line.split()[0] for line in shown.output.splitlines()] == ["id", *ids[:5]]
        assert [line.split()[0] for line in by_name.output.splitlines()] == ["id", *ids[2::2]]


@pytest.mark.parametrize("command", ["retry", "purge"])
def test_failed_retry_or_purge_stopped_by_ctrl_c_says_where_it_is_and_goes_on_when_run_again(
    app: str, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Ctrl-C reaching a whole-queue retry or purge during its second batch: the first batch
    is done, the rest untouched, and a second run does the rest. Before, the command said
    only "Aborted!", leaving the operator to wonder what the backend was left holding."""
    registry: Registry = import_module(app.split(":")[0]).registry
    asyncio.run(fail_all(registry, "aaaaa"))
    monkeypatch.setattr(sql_driver, "BULK_BATCH", 2)
    real = getattr(SqlDriver, "retry_failed" if command == "retry" else "purge")
    calls = 0

    async def second_is_interrupted(self: SqlDriver, *args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:  # the whole queue's call, its first batch, its second
            raise KeyboardInterrupt  # as Ctrl-C arrives while the loop runs
        return int(await real(self, *args))

    monkeypatch.setattr(SqlDriver, real.__name__, second_is_interrupted)
    more = ["--yes"] if command == "purge" else []

    stopped = CliRunner().invoke(main, ["failed", command, "q", "--app", app, *more])

    assert stopped.exit_code == 1, stopped.output
    assert "interrupted: the failed jobs are" in stopped.output, stopped.output
    assert "run the command again to go on" in stopped.output
    assert stopped.output.rstrip().endswith("Aborted!")
    counts = asyncio.run(counted(registry))
    assert (counts.failed, counts.pending) == ((3, 2) if command == "retry" else (3, 0))
    monkeypatch.setattr(SqlDriver, real.__name__, real)
    again = CliRunner().invoke(main, ["failed", command, "q", "--app", app, *more])
    assert again.exit_code == 0, again.output
    counts = asyncio.run(counted(registry))
    assert (counts.failed, counts.pending) == ((0, 5) if command == "retry" else (0, 0))


async def counted(registry: Registry) -> QueueCounts:
    try:
        return (await registry.queue_info())["q"]
    finally:
        await registry.close()
