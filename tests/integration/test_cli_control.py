"""The command line of schedules, chains and job control, as a user runs it: `conveyor cancel`,
`queue pause` / `resume` (seen in `list`), `schedule list`, `chain`, and `work
--no-schedules`, on sqlite and on postgres."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor import Job, JobState, Registry
from conveyor.drivers import driver_from_url
from tests.integration.processes import PYTHONPATH, backend_of, clean_backend

pytestmark = pytest.mark.timeout(90)

APP_SOURCE = """
from __future__ import annotations

from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("tasks", workers=["w"])
registry.worker("w", poll_interval=0.05)
registry.schedule("often", job="tick", every="1s")


@registry.job("tick", queue="tasks")
async def tick(job: Job[dict[str, int]]) -> None:
    pass


@registry.job("walk", queue="tasks", chain=True)
async def walk(job: Job[dict[str, int]]) -> int | None:
    page = job.page or 0
    return page + 1 if page < 4 else None
"""


class App:
    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.url = url
        (folder / "cliapp.py").write_text(APP_SOURCE.format(url=url))
        self.registry = Registry(default_driver=url)
        self.registry.queue("tasks", workers=["w"])
        self.registry.worker("w")
        self.registry.job("tick", queue="tasks")(_noop)
        self.registry.job("walk", queue="tasks", chain=True)(_noop)
        self.registry.schedule("often", job="tick", every="1s")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--app", "cliapp:registry"],
            cwd=self.folder,
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which pushes and inspects."""


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url, prefix = backend_of(request.param, tmp_path)
    made = App(tmp_path, url)
    yield made
    made.registry.blocking.close()
    asyncio.run(clean_backend(request.param, prefix))


def test_cancel_a_pending_job_and_one_that_is_gone(app: App) -> None:
    job_id = app.registry.blocking.push("tasks", "tick", {}, delay=60)

    cancelled = app.run("cancel", job_id)
    again = app.run("cancel", job_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled" in cancelled.stdout
    assert app.registry.blocking.job_info(job_id).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert again.returncode == 1
    assert f"no unfinished job {job_id!r}" in again.stderr
    assert "Traceback" not in again.stderr


def test_cancel_of_a_chains_id_names_the_page_that_stops_it(app: App) -> None:
    # It said "no unfinished job 'export-7': it finished, or never existed" of a chain that ran.
    app.registry.blocking.start_chain("walk", {}, cursor=0, chain_id="export-7")
    first = app.registry.blocking.chain_info("export-7").last.id  # type: ignore[union-attr]

    running = app.run("cancel", "export-7")
    assert app.run("cancel", first).returncode == 0
    stopped = app.run("cancel", "export-7")

    assert running.returncode == 1 and "Traceback" not in running.stderr
    assert "'export-7' is a chain, not a job: nothing cancelled" in running.stderr
    assert f"cancel its latest page: conveyor cancel {first} (page 0, pending)" in running.stderr
    assert stopped.returncode == 1 and "it is cancelled already" in stopped.stderr


def test_cancel_a_running_job_says_its_worker_stops_it(app: App) -> None:
    job_id = app.registry.blocking.push("tasks", "tick", {})

    async def take() -> None:  # as a worker elsewhere would
        driver = driver_from_url(app.url)
        try:
            [job] = await driver.reserve(["tasks"], 1, 60.0, "elsewhere")
            assert job.id == job_id
        finally:
            await driver.close()

    asyncio.run(take())
    cancelled = app.run("cancel", job_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} is running: its worker stops it at its next lease renewal" in (
        cancelled.stdout
    )


def test_pause_and_resume_show_in_list(app: App) -> None:
    paused = app.run("queue", "pause", "tasks")
    listed = app.run("list")
    resumed = app.run("queue", "resume", "tasks")
    relisted = app.run("list")

    assert (paused.returncode, resumed.returncode) == (0, 0), paused.stderr + resumed.stderr
    assert "queue 'tasks' paused" in paused.stdout
    assert ["tasks", "0", "0", "0", "0", "0", "0", "yes"] in _rows(listed.stdout)
    assert ["tasks", "0", "0", "0", "0", "0", "0", "no"] in _rows(relisted.stdout)


def test_chain_shows_how_far_a_chain_got(app: App) -> None:
    chain_id = app.registry.blocking.start_chain("walk", {}, cursor=0)
    before = app.run("chain", chain_id)
    worked = app.run("work", "w", "--burst")
    after = app.run("chain", chain_id)
    missing = app.run("chain", "no-such-chain")

    assert worked.returncode == 0, worked.stderr
    assert "state:       running" in before.stdout and "pages:       1" in before.stdout
    assert "state:       done" in after.stdout, after.stdout + after.stderr
    assert "pages:       5" in after.stdout and "last cursor: 4" in after.stdout
    assert missing.returncode == 1 and "no chain 'no-such-chain'" in missing.stderr
    document = json.loads(app.run("chain", chain_id, "--json").stdout)
    assert (document["state"], document["pages"], document["cursor"]) == ("done", 5, 4)
    assert document["last"]["state"] == "succeeded"


def test_schedule_list_before_and_after_a_worker_pushed_ticks(app: App) -> None:
    before = app.run("schedule", "list")
    assert before.returncode == 0, before.stderr
    assert "often" in before.stdout and "every 1s" in before.stdout and "never" in before.stdout
    assert not (app.folder / "jobs.db").exists()  # sqlite: a read creates no database

    quiet = _work_for(app, 2.5, "--no-schedules")
    assert app.registry.blocking.queue_info()["tasks"].succeeded == 0, quiet
    log = _work_for(
        app, 0, until=lambda: app.registry.blocking.queue_info()["tasks"].succeeded >= 1
    )
    after = app.run("schedule", "list")

    assert app.registry.blocking.queue_info()["tasks"].succeeded >= 1, log
    line = next(line for line in after.stdout.splitlines() if line.startswith("often"))
    assert "never" not in line and ("succeeded" in line or "pending" in line), after.stdout
    [listed] = json.loads(app.run("schedule", "list", "--json").stdout)
    assert (listed["schedule"], listed["job"], listed["queue"]) == ("often", "tick", "tasks")
    assert len(listed["next_ticks"]) == 3 and listed["last_job"] is not None


def _work_for(
    app: App, seconds: float, *flags: str, until: Callable[[], bool] | None = None
) -> str:
    """Run `conveyor work w` for `seconds` from the moment it says it started (or, with
    `until`, until that holds, within 30 s), stop it with SIGTERM; returns its output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "work", "w", *flags, "--app", "cliapp:registry"],
        cwd=app.folder,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not any("started on queues" in line for line in lines):
        line = process.stdout.readline()
        assert line, "".join(lines)  # it ended before it started
        lines.append(line)
    deadline = time.monotonic() + (30 if until else seconds)
    while time.monotonic() < deadline and not (until and until()):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, "".join(lines) + output
    return "".join(lines) + output


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]
