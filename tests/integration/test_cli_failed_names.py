"""`conveyor failed list|retry|purge` given a job name the app does not register, or a queue it
lacks, as a user types them (subprocesses, on sqlite).

Before, `--name` misspelt listed, retried or purged nothing and exited 0 without a word, and
`failed purge` asked "Delete every failed job of queue ...?" before loading the app: a queue
the app lacks, or an app that does not import, was said only after the user said yes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.processes import run_cli

pytestmark = pytest.mark.timeout(60)

APP_SOURCE = """
from typing import Any

from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///jobs.db")
registry.queue("tasks", workers=["w"], retry=0)
registry.worker("w", poll_interval=0.05)


@registry.job("boom", queue="tasks")
def boom(job: Job[dict[str, Any]]) -> None:
    raise ValueError("boom")


@registry.job("mail.send", queue="tasks")
def send(job: Job[dict[str, Any]]) -> None:
    pass
"""

APP = "namesapp:registry"

COMMANDS = [
    ["failed", "list", "tasks"],
    ["failed", "retry", "tasks"],
    ["failed", "purge", "tasks", "--yes"],
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "namesapp.py").write_text(APP_SOURCE)
    pushed = run_cli(tmp_path, APP, "push", "tasks", "boom", "--payload", "{}")
    assert pushed.returncode == 0, pushed.stderr
    worked = run_cli(tmp_path, APP, "work", "w", "--burst")
    assert worked.returncode == 0, worked.stderr
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
def test_a_name_no_job_has_and_the_app_does_not_register_exits_1_naming_its_jobs(
    folder: Path, command: list[str]
) -> None:
    result = run_cli(folder, APP, *command, "--name", "mail.sned")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "Error: no failed job of name 'mail.sned' in queue 'tasks', and the app registers no"
        " job named 'mail.sned' (its jobs: 'boom', 'mail.send'): check the name"
    )
    listed = run_cli(folder, APP, "failed", "list", "tasks", "--json")
    assert [job["job"] for job in json.loads(listed.stdout)] == ["boom"]  # left as it was


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
def test_a_registered_name_without_failed_jobs_exits_0(folder: Path, command: list[str]) -> None:
    result = run_cli(folder, APP, *command, "--name", "mail.send", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown == [] or (shown["name"], shown.get("retried", shown.get("purged"))) == (
        "mail.send",
        0,
    )


def test_purge_says_the_queue_is_unknown_before_asking(folder: Path) -> None:
    result = run_cli(folder, APP, "failed", "purge", "mails", stdin="y\n")
    assert result.returncode == 1
    assert "Delete every failed job" not in result.stdout + result.stderr
    assert result.stderr.startswith("Error: no queue named 'mails' (registered: tasks)")


def test_purge_says_the_app_does_not_import_before_asking(folder: Path) -> None:
    (folder / "brokenapp.py").write_text("from conveyor import Registry\nregistry = Registry(\n")
    result = run_cli(folder, "brokenapp:registry", "failed", "purge", "tasks", stdin="y\n")
    assert result.returncode == 2
    assert "Delete every failed job" not in result.stdout + result.stderr
    assert "cannot import 'brokenapp': SyntaxError" in result.stderr
