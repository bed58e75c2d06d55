"""The `conveyor` command as a subprocess: list, work --burst, bad --app, and stopping by signal."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest

from conveyor import JobInfo, JobState, Registry

pytestmark = pytest.mark.timeout(60)

#: The application the CLI is pointed at, written into each test's tmp_path as jobsapp.py.
APP_SOURCE = '''
from __future__ import annotations

import asyncio
import os
import pathlib
from typing import Any

from conveyor import Job, Registry

HERE = pathlib.Path(__file__).resolve().parent

registry = Registry(default_driver=f"sqlite:///{HERE / 'jobs.db'}")
registry.queue("tasks", workers=["w"], retry=0)
registry.worker(
    "w",
    concurrency=2,
    poll_interval=0.05,
    stop_timeout=float(os.environ.get("APP_STOP_TIMEOUT", "10")),
)


@registry.job("record")
def record(job: Job[dict[str, Any]]) -> None:
    """Appends the job's number to out.txt."""
    with open(HERE / "out.txt", "a") as out:
        out.write(f"{job.payload['n']}\\n")


@registry.job("slow")
async def slow(job: Job[dict[str, Any]]) -> None:
    """Says it started, then works until the test drops a 'go' file."""
    (HERE / "started").write_text(job.id)
    while not (HERE / "go").exists():
        await asyncio.sleep(0.02)
    (HERE / "finished").write_text(job.id)


@registry.job("boom")
def boom(job: Job[dict[str, Any]]) -> None:
    """Always fails."""
    raise ValueError(f"boom {job.payload['n']}")


@registry.job("bang")
def bang(job: Job[dict[str, Any]]) -> None:
    """Always fails too, under another job name."""
    raise RuntimeError(f"bang {job.payload['n']}")


@registry.job("hang")
async def hang(job: Job[dict[str, Any]]) -> None:
    """Says it started, then never finishes."""
    (HERE / "started").write_text(job.id)
    await asyncio.Event().wait()
'''

APP = "jobsapp:registry"
DEADLINE = 15.0


def conveyor(*args: str) -> list[str]:
    """The command line running the `conveyor` CLI with this interpreter."""
    return [sys.executable, "-m", "conveyor", *args]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll `condition` until it holds, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class App:
    """The app written into a tmp dir, its registry loaded in this process to push and inspect."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        (directory / "jobsapp.py").write_text(APP_SOURCE)
        self.module_name = f"jobsapp_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(self.module_name, directory / "jobsapp.py")
        assert spec is not None and spec.loader is not None
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[self.module_name] = self.module
        spec.loader.exec_module(self.module)
        self.registry: Registry = self.module.registry

    def push(self, job_name: str, payload: dict[str, Any] | None = None, **options: Any) -> str:
        return self.registry.blocking.push("tasks", job_name, payload or {}, **options)

    def job(self, job_id: str) -> JobInfo:
        info = self.registry.blocking.job_info(job_id)
        assert info is not None, f"job {job_id} is gone"
        return info

    def run(self, *args: str, answer: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        """The command's run; `answer` is typed at its prompt (a question's "n" or "y")."""
        return subprocess.run(
            conveyor(*args),
            cwd=self.dir,
            env={**os.environ, **env},
            input=answer,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    def start_worker(self, stop_timeout: float) -> Worker:
        return Worker(self.dir, stop_timeout)

    def close(self) -> None:
        self.registry.blocking.close()
        sys.modules.pop(self.module_name, None)


class Worker:
    """A `conveyor work w` process (not burst) with its log in a file we can poll."""

    def __init__(self, directory: Path, stop_timeout: float) -> None:
        self.log_path = directory / "worker.log"
        self._log: IO[str] = self.log_path.open("w")
        self.process = subprocess.Popen(
            conveyor("work", "w", "--app", APP),
            cwd=directory,
            env={**os.environ, "APP_STOP_TIMEOUT": str(stop_timeout)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path)
    yield app
    app.close()


@pytest.fixture
def start_worker(app: App) -> Iterator[Callable[[float], Worker]]:
    started: list[Worker] = []

    def start(stop_timeout: float) -> Worker:
        worker = app.start_worker(stop_timeout)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def rows(output: str) -> list[list[str]]:
    """The table lines of `conveyor list`, split into cells."""
    return [line.split() for line in output.splitlines() if line.strip()]


# -- conveyor list ------------------------------------------------------------------------


def test_list_shows_the_queue_counts_and_the_worker_row(app: App) -> None:
    for n in range(3):
        app.push("record", {"n": n})
    app.push("record", {"n": 99}, delay=3600)
    result = app.run("list", "--app", APP)
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    heads = ["pending", "delayed", "reserved", "succeeded", "failed", "cancelled", "paused"]
    assert ["queue", *heads] in table
    assert ["tasks", "3", "1", "0", "0", "0", "0", "no"] in table
    assert ["worker", "processed", "succeeded", "failed", "retried"] in table
    assert ["w", "0", "0", "0", "0"] in table


def test_list_reads_the_app_from_conveyor_app(app: App) -> None:
    app.push("record", {"n": 1})
    result = app.run("list", CONVEYOR_APP=APP)
    assert result.returncode == 0, result.stderr
    assert ["tasks", "1", "0", "0", "0", "0", "0", "no"] in rows(result.stdout)


# -- conveyor work --burst ----------------------------------------------------------------


def test_work_burst_runs_every_job_and_exits_zero(app: App) -> None:
    ids = [app.push("record", {"n": n}) for n in range(5)]
    result = app.run("work", "w", "--app", APP, "--burst")
    assert result.returncode == 0, result.stderr
    assert sorted((app.dir / "out.txt").read_text().split()) == ["0", "1", "2", "3", "4"]
    assert {app.job(job_id).state for job_id in ids} == {JobState.SUCCEEDED}


def test_list_after_a_burst_shows_what_the_worker_did(app: App) -> None:
    for n in range(3):
        app.push("record", {"n": n})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0
    result = app.run("list", "--app", APP)
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert ["tasks", "0", "0", "0", "3", "0", "0", "no"] in table  # 3 succeeded
    assert ["w", "3", "3", "0", "0"] in table


def test_work_burst_on_an_empty_queue_exits_zero_at_once(app: App) -> None:
    started = time.monotonic()
    result = app.run("work", "w", "--app", APP, "--burst")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["work", "w", "--burst"]], ids=["list", "work"])
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchmodule:registry", "cannot import 'nosuchmodule'"),
        ("jobsapp:nothing", "module 'jobsapp' has no attribute 'nothing'; its registry: jobsapp:"),
        ("jobsapp:HERE", "'jobsapp:HERE' is not a conveyor Registry"),
        ("jobsapp", "'jobsapp' is not module:attribute"),
        (":registry", "':registry' is not module:attribute"),
    ],
)
def test_bad_app_gives_a_clear_error_and_a_non_zero_exit(
    app: App, command: list[str], spec: str, message: str
) -> None:
    result = app.run(*command, "--app", spec)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_that_raises_on_import_says_where(app: App) -> None:
    """Before, only "RuntimeError: boom": where in the user's module was left to guess."""
    (app.dir / "raisingapp.py").write_text(
        "def connect():\n    raise RuntimeError('no database at postgresql://u:hush@db/app')\n"
        "\n\nconnect()\n"
    )
    result = app.run("list", "--app", "raisingapp:registry")
    assert result.returncode == 2
    assert "cannot import 'raisingapp': RuntimeError: no database" in result.stderr
    assert 'raisingapp.py", line 5, in <module>' in result.stderr
    assert 'raisingapp.py", line 2, in connect' in result.stderr
    assert "hush" not in result.stderr and "importlib" not in result.stderr
    assert "cli/app.py" not in result.stderr


@pytest.mark.parametrize("command", [["list"], ["work", "w"]], ids=["list", "work"])
def test_missing_app_says_how_to_give_it(app: App, command: list[str]) -> None:
    env = {key: value for key, value in os.environ.items() if key != "CONVEYOR_APP"}
    result = subprocess.run(
        conveyor(*command), cwd=app.dir, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "--app" in result.stderr
    assert "Traceback" not in result.stderr


def test_work_with_an_unknown_worker_gives_a_clear_error_and_a_non_zero_exit(app: App) -> None:
    result = app.run("work", "nobody", "--app", APP, "--burst")
    assert result.returncode != 0
    assert "no worker named 'nobody'" in result.stderr
    assert "Traceback" not in result.stderr


def test_work_naming_a_worker_or_queue_misspelt_lists_the_registered_ones(app: App) -> None:
    result = app.run("work", "ww", "--app", APP, "--burst")
    assert (result.returncode, result.stderr) == (
        1,
        "Error: no worker named 'ww' (registered: w): add it with registry.worker('ww', ...)\n",
    )
    result = app.run("work", "w", "--queues", "task", "--app", APP, "--burst")
    assert (result.returncode, result.stderr) == (
        1,
        "Error: no queue named 'task' (registered: tasks): add it with"
        " registry.queue('task', ...)\n",
    )


# -- stopping by signal -------------------------------------------------------------------


def test_sigterm_on_an_idle_worker_exits_zero(
    app: App, start_worker: Callable[[float], Worker]
) -> None:
    worker = start_worker(10)
    wait_for(lambda: "started on queues" in worker.log(), "the worker to start")
    worker.terminate()
    assert worker.wait(10) == 0, worker.log()


def test_sigterm_lets_a_busy_job_finish_then_exits_zero(
    app: App, start_worker: Callable[[float], Worker]
) -> None:
    job_id = app.push("slow")
    worker = start_worker(10)
    wait_for(lambda: (app.dir / "started").exists(), "the job to start")
    worker.terminate()
    wait_for(lambda: "waiting up to" in worker.log(), "the worker to acknowledge SIGTERM")
    assert worker.process.poll() is None, "the worker quit without waiting for its job"
    (app.dir / "go").touch()  # only now may the handler finish
    assert worker.wait() == 0, worker.log()
    assert (app.dir / "finished").read_text() == job_id
    info = app.job(job_id)
    assert (info.state, info.attempt) == (JobState.SUCCEEDED, 1)


def test_sigterm_takes_no_new_job_while_draining(
    app: App, start_worker: Callable[[float], Worker]
) -> None:
    slow_id = app.push("slow")
    worker = start_worker(10)
    wait_for(lambda: (app.dir / "started").exists(), "the job to start")
    worker.terminate()
    wait_for(lambda: "waiting up to" in worker.log(), "the worker to acknowledge SIGTERM")
    late_id = app.push("record", {"n": 1})
    time.sleep(0.3)  # several poll intervals: long enough to see a wrongly reserved job
    (app.dir / "go").touch()
    assert worker.wait() == 0, worker.log()
    assert app.job(slow_id).state is JobState.SUCCEEDED
    late = app.job(late_id)
    assert (late.state, late.attempt) == (JobState.PENDING, 0)


def test_sigterm_with_a_job_that_never_finishes_gives_the_attempt_back(
    app: App, start_worker: Callable[[float], Worker]
) -> None:
    job_id = app.push("hang")
    worker = start_worker(0.5)
    wait_for(lambda: (app.dir / "started").exists(), "the job to start")
    assert app.job(job_id).state is JobState.RESERVED
    stopped_at = time.monotonic()
    worker.terminate()
    # A stop that had to release a running job is an error: status 1, a line naming the job.
    assert worker.wait(10) == 1, worker.log()
    assert time.monotonic() - stopped_at >= 0.5  # it did wait stop_timeout for the job
    assert f"released to run again: {job_id}" in worker.log()
    info = app.job(job_id)
    assert (info.state, info.attempt) == (JobState.PENDING, 0)
    assert info.error is None


def test_second_sigterm_stops_at_once(app: App, start_worker: Callable[[float], Worker]) -> None:
    job_id = app.push("hang")
    worker = start_worker(60)
    wait_for(lambda: (app.dir / "started").exists(), "the job to start")
    worker.terminate()
    wait_for(lambda: "waiting up to" in worker.log(), "the worker to acknowledge SIGTERM")
    stopped_at = time.monotonic()
    worker.terminate()
    assert worker.wait(10) == 1, worker.log()  # it released a running job
    assert time.monotonic() - stopped_at < 10  # far less than the 60 s stop_timeout
    info = app.job(job_id)
    assert (info.state, info.attempt) == (JobState.PENDING, 0)


def test_job_given_back_on_stop_runs_again_on_the_next_start(
    app: App, start_worker: Callable[[float], Worker]
) -> None:
    job_id = app.push("slow")
    worker = start_worker(0.2)
    wait_for(lambda: (app.dir / "started").exists(), "the job to start")
    worker.terminate()
    assert worker.wait() == 1, worker.log()  # it had to release the running job
    assert app.job(job_id).state is JobState.PENDING
    (app.dir / "started").unlink()
    (app.dir / "go").touch()
    result = app.run("work", "w", "--app", APP, "--burst")
    assert result.returncode == 0, result.stderr
    info = app.job(job_id)
    assert (info.state, info.attempt) == (JobState.SUCCEEDED, 1)


def test_console_script_runs_the_same_cli(app: App) -> None:
    script = Path(sys.executable).parent / "conveyor"
    if not script.exists():
        pytest.skip(f"no console script at {script}: the package is not installed with pip")
    app.push("record", {"n": 1})
    result = subprocess.run(
        [str(script), "list", "--app", APP],
        cwd=app.dir,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert ["tasks", "1", "0", "0", "0", "0", "0", "no"] in rows(result.stdout)


# -- conveyor migrate ---------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_safe_to_run_again(app: App) -> None:
    for _ in range(2):
        result = app.run("migrate", "--app", APP)
        assert result.returncode == 0, result.stderr
        assert "schema up to date on 1 driver(s): sqlite" in result.stdout
    assert (app.dir / "jobs.db").exists()


# -- conveyor failed ----------------------------------------------------------------------


def test_failed_list_retry_and_purge(app: App) -> None:
    first, second = app.push("boom", {"n": 1}), app.push("boom", {"n": 2})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0

    listed = app.run("failed", "list", "tasks", "--app", APP)
    assert listed.returncode == 0, listed.stderr
    table = rows(listed.stdout)
    assert table[0] == ["id", "job", "attempts", "error"]
    assert [first, "boom", "1", "ValueError:", "boom", "1"] in table
    assert [second, "boom", "1", "ValueError:", "boom", "2"] in table
    named = app.run("failed", "list", "tasks", "--name", "record", "--app", APP)  # none failed
    assert named.returncode == 0, named.stderr
    assert rows(named.stdout) == [["id", "job", "attempts", "error"]], named.stdout

    retried = app.run("failed", "retry", "tasks", first, "--app", APP)
    assert retried.returncode == 0, retried.stderr
    assert "1 failed job(s) of queue 'tasks' moved back to pending" in retried.stdout
    assert app.job(first).state is JobState.PENDING

    purged = app.run("failed", "purge", "tasks", "--yes", "--app", APP)
    assert purged.returncode == 0, purged.stderr
    assert "1 failed job(s) of queue 'tasks' deleted" in purged.stdout
    assert app.job(first).state is JobState.PENDING
    assert rows(app.run("failed", "list", "tasks", "--app", APP).stdout) == [
        ["id", "job", "attempts", "error"]
    ]


def test_job_lookup_of_a_purged_job_says_it_may_have_been_purged(app: App) -> None:
    """Before, it said "it was never pushed, or was pruned after it finished" of a job the
    operator had just purged."""
    job_id = app.push("boom", {"n": 1})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0
    assert app.run("failed", "purge", "tasks", job_id, "--app", APP).returncode == 0

    looked = app.run("job", job_id, "--app", APP)

    assert looked.returncode == 1
    assert f"no job {job_id!r}: it was never pushed, or was deleted" in looked.stderr
    assert "purged" in looked.stderr and "pruned" in looked.stderr
    assert len(looked.stderr.strip().splitlines()) == 1, looked.stderr


def test_failed_purge_of_a_whole_queue_asks_first(app: App) -> None:
    app.push("boom", {"n": 1})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0
    refused = app.run("failed", "purge", "tasks", "--app", APP, answer="n\n")
    assert refused.returncode != 0
    assert "Delete every failed job of queue 'tasks'?" in refused.stdout
    assert len(rows(app.run("failed", "list", "tasks", "--app", APP).stdout)) == 2


def test_failed_retry_and_purge_by_name_touch_only_that_job_names_jobs(app: App) -> None:
    booms = [app.push("boom", {"n": n}) for n in range(3)]
    bang = app.push("bang", {"n": 9})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0

    retried = app.run("failed", "retry", "tasks", "--name", "boom", "--app", APP)
    assert retried.returncode == 0, retried.stderr
    assert "3 failed job(s) of name 'boom' in queue 'tasks' moved back to pending" in retried.stdout
    assert [app.job(job_id).state for job_id in booms] == [JobState.PENDING] * 3
    assert app.job(bang).state is JobState.FAILED

    refused = app.run("failed", "purge", "tasks", "--name", "bang", "--app", APP, answer="n\n")
    assert refused.returncode != 0
    assert "Delete every failed job of name 'bang' in queue 'tasks'?" in refused.stdout
    assert app.job(bang).state is JobState.FAILED
    purged = app.run("failed", "purge", "tasks", "--name", "bang", "--yes", "--app", APP)
    assert purged.returncode == 0, purged.stderr
    assert "1 failed job(s) of name 'bang' in queue 'tasks' deleted" in purged.stdout
    assert app.registry.blocking.job_info(bang) is None


@pytest.mark.parametrize("command", ["retry", "purge"])
def test_failed_retry_or_purge_of_ids_and_a_name_is_a_usage_error(app: App, command: str) -> None:
    job_id = app.push("boom", {"n": 1})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0

    yes = ["--yes"] if command == "purge" else []
    both = app.run("failed", command, "tasks", job_id, "--name", "boom", *yes, "--app", APP)

    assert both.returncode == 2, both.stderr
    assert "give IDS or --name, not both" in both.stderr
    assert app.job(job_id).state is JobState.FAILED


def test_failed_list_after_an_id_pages_on_past_jobs_retried_meanwhile(app: App) -> None:
    ids = sorted(app.push("boom", {"n": n}) for n in range(3))
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0

    first = app.run("failed", "list", "tasks", "--limit", "1", "--json", "--app", APP)
    [listed] = json.loads(first.stdout)
    assert app.run("failed", "retry", "tasks", listed["id"], "--app", APP).returncode == 0
    after = ["--after", listed["id"]]
    second = app.run("failed", "list", "tasks", "--limit", "1", *after, "--json", "--app", APP)

    assert second.returncode == 0, second.stderr
    assert [job["id"] for job in json.loads(second.stdout)] == [ids[1]]  # --offset 1: ids[2]


def test_failed_retry_and_purge_print_json_with_json(app: App) -> None:
    for n in range(2):
        app.push("boom", {"n": n})
    app.push("bang", {"n": 9})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0

    retried = app.run("failed", "retry", "tasks", "--name", "boom", "--json", "--app", APP)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"queue": "tasks", "name": "boom", "retried": 2}
    asked = app.run("failed", "purge", "tasks", "--json", "--app", APP, answer="y\n")
    assert asked.returncode == 0, asked.stderr
    assert "Delete every failed job of queue 'tasks'?" in asked.stderr
    assert json.loads(asked.stdout) == {"queue": "tasks", "name": None, "purged": 1}


@pytest.mark.parametrize("command", [("list",), ("retry",), ("purge", "--yes")])
def test_failed_name_that_no_job_can_have_is_a_usage_error(
    app: App, command: tuple[str, ...]
) -> None:
    """Was: `--name 'mail send'` (a space, a typo) listed, retried or purged nothing and said
    nothing of it; the dashboard refused the same name."""
    app.push("boom", {"n": 1})
    assert app.run("work", "w", "--app", APP, "--burst").returncode == 0
    given = app.run("failed", command[0], "tasks", "--name", "bo om", *command[1:], "--app", APP)
    assert given.returncode == 2, given
    assert "job name 'bo om' is not valid" in given.stderr
    assert len(rows(app.run("failed", "list", "tasks", "--app", APP).stdout)) == 2  # head, job


# -- a store not made yet, and where a worker looks ---------------------------------------


def test_reading_commands_before_any_push_create_no_database(app: App) -> None:
    database = app.dir / "jobs.db"
    result = app.run("list", "--app", APP)
    assert result.returncode == 0, result.stderr
    assert ["tasks", "0", "0", "0", "0", "0", "0", "no"] in rows(result.stdout)
    assert f"no SQLite database at {database} yet" in result.stdout
    assert app.run("failed", "list", "tasks", "--app", APP).returncode == 0
    assert app.run("job", "0" * 32, "--app", APP).returncode == 1
    assert app.run("chain", "nope", "--app", APP).returncode == 1
    assert not database.exists()
    app.push("record", {"n": 1})
    result = app.run("list", "--app", APP)
    assert ["tasks", "1", "0", "0", "0", "0", "0", "no"] in rows(result.stdout)
    assert "no SQLite database" not in result.stdout


def test_work_says_where_its_queues_are_kept(app: App) -> None:
    result = app.run("work", "w", "--burst", "--app", APP)
    assert result.returncode == 0, result.stderr
    assert f"started on queues ['tasks'] in sqlite {app.dir / 'jobs.db'}" in result.stderr
