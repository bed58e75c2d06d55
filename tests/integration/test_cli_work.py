"""`conveyor work` as a user runs it: several workers in one process stopped by one signal,
--concurrency and --queues overriding the registered worker, one log line per finished job
(text and --log-format json), and `list` showing the workers alive and the oldest pending
age; on sqlite and on postgres."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, Registry
from tests.integration.processes import PYTHONPATH, backend_of, clean_backend, run_cli

pytestmark = pytest.mark.timeout(120)

APP_SOURCE = """
from __future__ import annotations

import os
import pathlib
import time

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver={url!r})
registry.queue("tasks", workers=["w"], retry=0)
registry.queue("other", workers=["v"], retry=0)
registry.worker("w", poll_interval=0.05)
registry.worker("v", poll_interval=0.05)


@registry.job("note", queue="tasks")
def note(job: Job[dict[str, int]]) -> None:
    (HERE / f"ran-{{job.queue}}-{{job.payload['n']}}").write_text(str(os.getpid()))


@registry.job("together", queue="tasks")
def together(job: Job[dict[str, int]]) -> None:
    \"\"\"Waits until `of` jobs started: only runs through when they run at once.\"\"\"
    (HERE / f"started-{{job.id}}").touch()
    deadline = time.monotonic() + 10
    while len(list(HERE.glob("started-*"))) < job.payload["of"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the other jobs never started beside this one")
        time.sleep(0.01)


@registry.job("loop", queue="tasks")
async def loop(job: Job[dict[str, int]]) -> None:
    import asyncio

    (HERE / "loop").write_text(type(asyncio.get_running_loop()).__module__)


@registry.job("boom", queue="tasks")
def boom(job: Job[dict[str, int]]) -> None:
    raise ValueError("boom")
"""


class App:
    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        (folder / "workapp2.py").write_text(APP_SOURCE.format(url=url))
        self.registry = Registry(default_driver=url)
        self.registry.queue("tasks", workers=["w"], retry=0)
        self.registry.queue("other", workers=["v"], retry=0)
        self.registry.worker("w")
        self.registry.worker("v")
        for name in ("note", "together", "loop", "boom"):
            self.registry.job(name, queue="tasks")(_noop)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "conveyor", *args, "--app", "workapp2:registry"]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.folder, "workapp2:registry", *args)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1"}

    def push(self, queue: str, job: str, payload: dict[str, Any]) -> str:
        return self.registry.blocking.push(queue, job, payload)


async def _noop(job: Job[dict[str, int]]) -> None:
    """Stands in for the app's handlers in this process, which pushes and inspects."""


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url, prefix = backend_of(request.param, tmp_path)
    made = App(tmp_path, url)
    yield made
    made.registry.blocking.close()
    asyncio.run(clean_backend(request.param, prefix))


def test_two_workers_in_one_process_run_both_queues(app: App) -> None:
    app.push("tasks", "note", {"n": 1})
    app.push("other", "note", {"n": 2})

    result = app.run("work", "w", "v", "--burst")

    assert result.returncode == 0, result.stderr
    pids = {path.read_text() for path in app.folder.glob("ran-*")}
    assert sorted(p.name for p in app.folder.glob("ran-*")) == ["ran-other-2", "ran-tasks-1"]
    assert len(pids) == 1, "both jobs ran in the one process"
    assert result.stderr.count("started on queues") == 2, result.stderr


def test_work_runs_on_uvloop_when_asked(app: App) -> None:
    app.push("tasks", "loop", {})
    app.push("tasks", "note", {"n": 1})

    result = app.run("work", "w", "--burst", "--loop", "uvloop")

    assert result.returncode == 0, result.stderr
    assert (app.folder / "loop").read_text() == "uvloop"
    assert (app.folder / "ran-tasks-1").exists()


def test_queues_and_concurrency_override_the_registered_worker(app: App) -> None:
    app.push("tasks", "note", {"n": 1})
    app.push("other", "note", {"n": 2})
    for _ in range(3):
        app.push("other", "together", {"of": 3})

    only_other = app.run("work", "w", "--queues", "other", "--concurrency", "3", "--burst")

    assert only_other.returncode == 0, only_other.stderr
    assert [p.name for p in app.folder.glob("ran-*")] == ["ran-other-2"]
    counts = app.registry.blocking.queue_info()
    assert counts["other"].succeeded == 4 and counts["other"].failed == 0, only_other.stderr
    assert counts["tasks"].pending == 1
    unknown = app.run("work", "w", "--queues", "nowhere", "--burst")
    assert unknown.returncode == 1 and "nowhere" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_each_finished_job_logs_one_line_and_json_logs_carry_its_fields(app: App) -> None:
    good = app.push("tasks", "note", {"n": 1})
    bad = app.push("tasks", "boom", {})
    text = app.run("work", "w", "--burst")
    again = [app.push("tasks", "note", {"n": 2}), app.push("tasks", "boom", {})]
    as_json = app.run("--log-format", "json", "work", "w", "--burst")

    assert text.returncode == 0, text.stderr
    lines = text.stderr.splitlines()
    assert len([line for line in lines if good in line]) == 1, text.stderr
    assert len([line for line in lines if bad in line]) == 1, text.stderr
    assert any(good in line and "succeeded [queue tasks, attempt 1," in line for line in lines)

    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stderr.splitlines()]
    finished = {r["id"]: r for r in records if "outcome" in r}
    assert set(finished) == set(again), as_json.stderr
    assert (
        finished[again[0]]["outcome"] == "succeeded" and finished[again[1]]["outcome"] == "failed"
    )
    for record in finished.values():
        assert record["queue"] == "tasks" and record["attempt"] == 1
        assert record["job"] in {"note", "boom"} and record["duration"] >= 0
        assert {"time", "level", "logger", "message"} <= set(record)


def test_list_shows_the_workers_alive_and_one_signal_stops_them_all(app: App) -> None:
    app.registry.blocking.pause("other")
    app.push("other", "note", {"n": 1})
    process = subprocess.Popen(
        app.command("work", "w", "v"),
        cwd=app.folder,
        env=app.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        listed = _wait_for_alive(app, 2)
        text = app.run("list")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 0, output
    assert output.count("stopped: WorkerCounts") == 2, output
    assert sorted(p["worker"] for p in listed["alive"]) == ["v", "w"]
    assert all(p["identity"].endswith(f":{process.pid}") for p in listed["alive"])
    assert listed["queues"]["other"]["oldest_pending_age"] >= 0
    table = [line.split() for line in text.stdout.splitlines()]
    assert ["alive", "worker", "started", "last", "seen"] in table, text.stdout
    assert ["queue", "oldest", "pending"] in table, text.stdout


def _wait_for_alive(app: App, count: int) -> Any:
    deadline = time.monotonic() + 30
    while True:
        result = app.run("list", "--json")
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        if len(listed["alive"]) >= count:
            return listed
        assert time.monotonic() < deadline, f"workers never said they were alive: {listed}"
        time.sleep(0.2)


def test_work_logs_each_worker_s_settings_and_where_each_came_from(app: App) -> None:
    (app.folder / "conveyor.toml").write_text('[workers.w]\nlease = "45s"\n')
    app.push("tasks", "note", {"n": 1})
    result = subprocess.run(
        app.command("--log-format", "json", "work", "w", "v", "--burst", "--concurrency", "3"),
        cwd=app.folder,
        env={**app.env(), "CONVEYOR_WORKER_V_PREFETCH": "2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line)["message"] for line in result.stderr.splitlines()]
    assert [line for line in lines if " settings: " in line] == [
        "worker w settings: concurrency 3 (flag --concurrency), poll_interval 50ms (code),"
        " lease 45s (conveyor.toml:2), stop_timeout 30s (default), prefetch its concurrency"
        " (default)",
        "worker v settings: concurrency 3 (flag --concurrency), poll_interval 50ms (code),"
        " lease 30s (default), stop_timeout 30s (default), prefetch 2 (env"
        " CONVEYOR_WORKER_V_PREFETCH)",
    ]
    assert (app.folder / "ran-tasks-1").exists()
