"""`conveyor config`, `--config PATH` and `conveyor work` with no worker name, run as a user
runs them: a subprocess in a directory holding the app and its conveyor.toml."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

#: RapidGo's style: handlers registered and pushed, no queue or worker declared.
APP_SOURCE = '''
from __future__ import annotations

import pathlib
import sys
from typing import Any

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent
registry = Registry()


@registry.job("record")
def record(job: Job[dict[str, Any]]) -> None:
    """Appends the job's queue and number to out.txt."""
    with open(HERE / "out.txt", "a") as out:
        out.write(f"{job.queue} {job.payload['n']}\\n")


if __name__ == "__main__":
    for n in sys.argv[1:]:
        record.blocking.push({"n": int(n)})
    registry.blocking.close()
'''

APP = "jobsapp:registry"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobsapp.py").write_text(APP_SOURCE)
    return tmp_path


def write_config(directory: Path, text: str, name: str = "conveyor.toml") -> None:
    (directory / name).write_text(textwrap.dedent(text).lstrip())


def run(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `args` (a `conveyor` command, or `python` for the app) in `directory`, with no
    conveyor or seed variable from this process's own environment."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CONVEYOR_", "QUEUE_")) and name != "DATABASE_URL"
    }
    command = [sys.executable, *args[1:]] if args[0] == "python" else [
        sys.executable, "-m", "conveyor", *args
    ]  # fmt: skip
    return subprocess.run(
        command,
        cwd=directory,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rows(output: str) -> dict[tuple[str, str, str], tuple[str, str]]:
    """`conveyor config`'s table: (scope, name, key) -> (value, source)."""
    table: dict[tuple[str, str, str], tuple[str, str]] = {}
    for line in output.splitlines()[1:]:
        cells = line.split()
        if cells[0] == "conveyor":
            cells.insert(1, "")
        table[(cells[0], cells[1], cells[2])] = (" ".join(cells[3:-1]), cells[-1])
    return table


def test_config_prints_every_setting_with_where_it_came_from(app_dir: Path) -> None:
    write_config(
        app_dir,
        """
        driver = "sqlite:///jobs.db"

        [workers.default]
        concurrency = 4
        """,
    )
    done = run(app_dir, "config", "--app", APP, QUEUE_TIMEOUT="60", QUEUE_MAX_ATTEMPTS="5")
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout.replace("env QUEUE", "env:QUEUE"))
    assert done.stdout.splitlines()[0].split() == ["scope", "name", "key", "value", "source"]
    assert table[("conveyor", "", "driver")] == ("sqlite:///jobs.db", "conveyor.toml:1")
    assert table[("queue", "default", "driver")] == ("sqlite:///jobs.db", "conveyor.toml:1")
    assert table[("queue", "default", "workers")] == ("default", "implicit")
    assert table[("queue", "default", "timeout")] == ("1m", "env:QUEUE_TIMEOUT")
    assert table[("queue", "default", "retry")] == ("4", "env:QUEUE_MAX_ATTEMPTS")
    assert table[("queue", "default", "priority")] == ("0", "default")
    assert table[("worker", "default", "concurrency")] == ("4", "conveyor.toml:4")


def test_config_masks_passwords_and_the_global_option_names_the_file(app_dir: Path) -> None:
    write_config(
        app_dir,
        """
        driver = "main"

        [drivers.main]
        url = "postgresql://app:s3cret@127.0.0.1:1/app"
        pool_size = 3
        """,
        name="production.toml",
    )
    done = run(app_dir, "--config", "production.toml", "config", "--app", APP)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert rows(done.stdout)[("driver", "main", "url")] == (
        "postgresql://app:***@127.0.0.1:1/app?pool_size=3",
        "production.toml:4",
    )
    by_env = run(app_dir, "config", "--app", APP, CONVEYOR_CONFIG="production.toml")
    assert rows(by_env.stdout)[("conveyor", "", "driver")] == ("main", "production.toml:1")


def test_a_bad_file_is_one_clear_error_and_nothing_starts(app_dir: Path) -> None:
    write_config(app_dir, "[workers.default]\nconcurrency = 0\nthreads = 2\n")
    for command in (["config"], ["work", "--burst"]):
        done = run(app_dir, *command, "--app", APP)
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("Error: the configuration has mistakes:\n")
        assert "conveyor.toml:2: [workers.default] concurrency = 0: worker 'default'" in done.stderr
        assert "conveyor.toml:3: [workers.default] unknown key 'threads'" in done.stderr
    missing = run(app_dir, "--config", "nowhere.toml", "config", "--app", APP)
    assert missing.returncode == 1
    assert "configuration file 'nowhere.toml', named by --config" in missing.stderr


def test_a_driver_the_file_names_that_is_no_driver_names_the_file_and_masks_the_password(
    app_dir: Path,
) -> None:
    write_config(
        app_dir, '[queues.default]\ndriver = "postgres://app:s3cret@127.0.0.1:1/app?x=1"\n'
    )
    for command in (["config"], ["work", "--burst"]):
        done = run(app_dir, *command, "--app", APP, CONVEYOR_RETYR="2")
        assert done.returncode == 1, done
        assert "s3cret" not in done.stdout + done.stderr
        assert "environment variable CONVEYOR_RETYR is no conveyor setting" in done.stderr
        assert (
            "Error: the configuration has mistakes:\n- conveyor.toml:2: [queues.default] driver ="
            " 'postgres://app:***@127.0.0.1:1/app?x=1': bad PostgreSQL connection settings"
        ) in done.stderr


def test_a_section_for_an_unregistered_queue_is_a_warning_and_the_rest_applies(
    app_dir: Path,
) -> None:
    write_config(app_dir, "[queues.mail]\nretry = 1\n\n[workers.default]\nconcurrency = 2\n")
    done = run(app_dir, "config", "--app", APP)
    assert done.returncode == 0, done.stderr
    assert (
        "conveyor.toml:1: [queues.mail] names a queue the code did not register: ignored"
        " (registered: default)" in done.stderr
    )
    assert rows(done.stdout)[("worker", "default", "concurrency")] == ("2", "conveyor.toml:5")


def test_register_push_and_work_with_no_worker_name_runs_the_implicit_worker(
    app_dir: Path,
) -> None:
    env = {"QUEUE_DRIVER": "database", "QUEUE_DEFAULT": "jobs"}
    pushed = run(app_dir, "python", "jobsapp.py", "1", "2", **env)
    assert pushed.returncode == 0, pushed.stderr
    assert (app_dir / "conveyor.db").exists()  # database, with no DATABASE_URL: the file
    worked = run(app_dir, "work", "--burst", "--app", APP, **env)
    assert worked.returncode == 0, worked.stderr
    assert sorted((app_dir / "out.txt").read_text().splitlines()) == ["jobs 1", "jobs 2"]


def test_work_and_schedule_list_naming_a_worker_see_the_file(app_dir: Path) -> None:
    # `conveyor work NAME` and `conveyor schedule list` read the registry before anything
    # froze it: they must still see what the file says, not only the code's registration.
    source = APP_SOURCE.replace(
        "registry = Registry()\n",
        'registry = Registry()\nregistry.queue("mail", workers=["a"])\n'
        'registry.worker("a")\nregistry.worker("b")\n',
    )
    (app_dir / "named.py").write_text(source)
    write_config(
        app_dir,
        """
        [queues.mail]
        workers = ["a", "b"]

        [schedules.often]
        job = "record"
        every = "1h"
        queue = "mail"
        payload = { n = 0 }
        """,
    )
    listed = run(app_dir, "schedule", "list", "--app", "named:registry")
    assert listed.returncode == 0, listed.stderr
    assert "often" in listed.stdout and "every 1h" in listed.stdout
    app = ("--app", "named:registry")
    pushed = run(app_dir, "push", "mail", "record", "--payload", '{"n": 1}', *app)
    assert pushed.returncode == 0, pushed.stderr
    worked = run(app_dir, "work", "b", "--burst", *app)
    assert worked.returncode == 0, worked.stderr
    assert (app_dir / "out.txt").read_text().splitlines() == ["mail 1"]
