"""`conveyor push`, `job`, `prune`, `--json`, exit codes and the seed's aliases, as a user runs
them (subprocesses), on sqlite and on postgres."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Job, JobState, Registry
from tests.integration.processes import PYTHONPATH, backend_of, clean_backend, run_cli

pytestmark = pytest.mark.timeout(120)

APP_SOURCE = """
from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("tasks", workers=["w"], retention=0.5)
registry.queue("kept", workers=["w"], retention=None)
registry.worker("w", poll_interval=0.05)


@dataclass
class Item:
    n: int


@registry.job("add", queue="tasks", keep_result=True)
def add(job: Job[Item]) -> int:
    return job.payload.n + 1


@registry.job("boom", queue="tasks", retry=0)
def boom(job: Job[Item]) -> None:
    raise ValueError(f"boom {{job.payload.n}}")


class Stamp(BaseModel):
    model_config = ConfigDict(strict=True)  # times and UUIDs as text only in JSON

    at: datetime.datetime
    ref: uuid.UUID


@registry.job("stamp", queue="kept")
def stamp(job: Job[Stamp]) -> None:
    pass


@registry.job("flaky", queue="kept", retry=1, retry_delay=0)
def flaky(job: Job[Item]) -> None:
    if job.attempt == 1:
        raise ValueError(f"flaky {{job.payload.n}}")
"""


@dataclass
class Item:
    n: int


class App:
    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        (folder / "pushapp.py").write_text(APP_SOURCE.format(url=url))
        self.registry = Registry(default_driver=url)
        self.registry.queue("tasks", workers=["w"], retention=0.5)
        self.registry.queue("kept", workers=["w"], retention=None)
        self.registry.worker("w")
        self.registry.job("add", queue="tasks")(_noop)
        self.registry.job("boom", queue="tasks")(_noop)
        self.registry.job("flaky", queue="kept")(_noop)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(self.folder, "pushapp:registry", *args, stdin=stdin)

    def json(self, *args: str, stdin: str | None = None) -> Any:
        result = self.run(*args, "--json", stdin=stdin)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


async def _noop(job: Job[Item]) -> None:
    """Stands in for the app's handlers in this process, which only inspects."""


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url, prefix = backend_of(request.param, tmp_path)
    made = App(tmp_path, url)
    yield made
    made.registry.blocking.close()
    asyncio.run(clean_backend(request.param, prefix))


def test_push_prints_the_id_and_job_shows_the_job_before_and_after_it_ran(app: App) -> None:
    pushed = app.run(
        "push", "tasks", "add", "--payload", '{"n": 41}',
        "--priority", "3", "--retry", "2", "--timeout", "30s", "--meta", "source=cli",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    job_id = pushed.stdout.strip()
    before = app.run("job", job_id)
    worked = app.run("work", "w", "--burst")
    after = app.run("job", job_id)
    shown = app.json("job", job_id)

    assert worked.returncode == 0, worked.stderr
    assert before.returncode == 0, before.stderr
    assert _field(before.stdout, "state") == "pending", before.stdout
    assert _field(before.stdout, "attempts") == "0 of 3", before.stdout
    assert _field(after.stdout, "state") == "succeeded", after.stdout
    assert _field(after.stdout, "result") == "42", after.stdout
    assert shown["id"] == job_id and shown["state"] == "succeeded" and shown["result"] == 42
    assert shown["payload"] == {"n": 41} and shown["priority"] == 3
    assert shown["meta"]["source"] == "cli" and shown["attempt"] == 1


def test_push_with_delay_and_unique_and_json(app: App) -> None:
    first = app.json("push", "tasks", "add", "--payload", '{"n": 1}', "--delay", "1h",
                     "--unique", "k1")  # fmt: skip
    again = app.json("push", "tasks", "add", "--payload", '{"n": 2}', "--unique", "k1")

    assert first["queue"] == "tasks" and first["job"] == "add"
    assert again["id"] == first["id"], "a unique push while one waits returns its id"
    plain = app.run("push", "tasks", "add", "--payload", '{"n": 3}', "--unique", "k1")
    assert plain.stdout.strip() == first["id"]
    held = f"stored nothing: unfinished job {first['id']} holds --unique 'k1'"
    assert held in plain.stderr, plain.stderr
    fresh = app.run("push", "tasks", "add", "--payload", '{"n": 4}', "--unique", "k2")
    assert "stored nothing" not in fresh.stderr, fresh.stderr
    assert app.registry.blocking.job_info(first["id"]).state is JobState.DELAYED  # type: ignore[union-attr]


def test_job_shows_the_error_with_its_traceback(app: App) -> None:
    job_id = app.run("push", "tasks", "boom", "--payload", '{"n": 7}').stdout.strip()
    app.run("work", "w", "--burst")
    shown = app.run("job", job_id)
    document = app.json("job", job_id)

    assert shown.returncode == 0, shown.stderr
    assert _field(shown.stdout, "state") == "failed", shown.stdout
    assert _field(shown.stdout, "error") == "ValueError: boom 7", shown.stdout
    assert "Traceback (most recent call last)" in shown.stdout, shown.stdout
    assert document["error"]["type"] == "ValueError" and "boom" in document["error"]["traceback"]
    assert "attempt 1 failed at " in shown.stdout and ": ValueError: boom 7" in shown.stdout
    [only] = document["errors"]
    assert (only["attempt"], only["type"], only["message"]) == (1, "ValueError", "boom 7")


def test_job_that_succeeded_on_a_retry_shows_no_error_but_the_earlier_attempts(
    app: App,
) -> None:
    job_id = app.run("push", "kept", "flaky", "--payload", '{"n": 5}').stdout.strip()
    app.run("work", "w", "--burst")
    shown = app.run("job", job_id)
    document = app.json("job", job_id)

    assert _field(shown.stdout, "state") == "succeeded", shown.stdout
    assert _field(shown.stdout, "attempts") == "2 of 2", shown.stdout
    assert "error:" not in shown.stdout, "a job that succeeded did not fail"
    assert (
        "earlier attempt 1 failed at " in shown.stdout and ": ValueError: flaky 5" in shown.stdout
    )
    assert document["error"] is None
    [only] = document["errors"]
    assert (only["attempt"], only["message"]) == (1, "flaky 5")


def test_job_retried_after_failing_is_not_shown_as_running(app: App) -> None:
    job_id = app.run("push", "tasks", "boom", "--payload", '{"n": 3}').stdout.strip()
    app.run("work", "w", "--burst")
    retried = app.run("failed", "retry", "tasks", job_id)
    shown = app.run("job", job_id)

    assert retried.returncode == 0, retried.stderr
    assert _field(shown.stdout, "state") == "pending", shown.stdout
    assert "running for" not in shown.stdout, shown.stdout
    assert _field(shown.stdout, "last reserved").endswith(" by " + _worker_of(app, job_id))
    assert "last reserved: " in shown.stdout, shown.stdout


def test_failed_retry_says_a_job_stays_failed_while_its_unique_key_is_held(app: App) -> None:
    failed = app.run("push", "tasks", "boom", "--payload", '{"n": 1}', "--unique", "k")
    app.run("work", "w", "--burst")
    app.run("push", "tasks", "boom", "--payload", '{"n": 2}', "--unique", "k")  # holds "k"

    by_id = app.run("failed", "retry", "tasks", failed.stdout.strip())
    every = app.run("failed", "retry", "tasks")

    assert by_id.returncode == 1 and "holds their unique key" in by_id.stderr, by_id.stderr
    assert every.returncode == 0, every.stderr
    assert "1 job(s) of queue 'tasks' still failed" in every.stderr, every.stderr
    assert "holds their unique key" in every.stderr, every.stderr


def _worker_of(app: App, job_id: str) -> str:
    info = app.registry.blocking.job_info(job_id)
    assert info is not None and info.worker is not None
    return info.worker


def test_push_from_a_file_of_json_lines(app: App) -> None:
    lines = [json.dumps({"n": n}) for n in range(2500)]
    (app.folder / "jobs.jsonl").write_text(
        "\n".join(lines[:1200]) + "\n\n" + "\n".join(lines[1200:])
    )
    pushed = app.run("push", "tasks", "add", "--file", "jobs.jsonl")
    from_stdin = app.json("push", "kept", "add", "--file", "-", stdin="\n".join(lines[:3]))

    assert pushed.returncode == 0, pushed.stderr
    assert "2500 job(s) 'add' pushed to queue 'tasks'" in pushed.stdout
    assert app.registry.blocking.queue_info()["tasks"].pending == 2500
    assert len(from_stdin["ids"]) == 3 and app.registry.blocking.queue_info()["kept"].pending == 3


def test_push_of_a_strict_model_reads_the_payload_as_json(app: App) -> None:
    # A strict model takes a time or a UUID as text only from JSON, as a worker reads it.
    payload = {"at": "2026-12-06T04:00:00Z", "ref": "12345678-1234-5678-1234-567812345678"}
    (app.folder / "stamps.jsonl").write_text(f"{json.dumps(payload)}\n" * 2)
    one = app.run("push", "kept", "stamp", "--payload", json.dumps(payload))
    many = app.run("push", "kept", "stamp", "--file", "stamps.jsonl")
    wrong = app.run("push", "kept", "stamp", "--payload", '{"at": 5, "ref": "x", "atx": 1}')

    assert one.returncode == 0, one.stderr
    assert many.returncode == 0 and "2 job(s)" in many.stdout, many.stderr
    assert app.registry.blocking.queue_info()["kept"].pending == 3
    assert wrong.returncode == 1 and "keys that are no field of Stamp: 'atx'" in wrong.stderr


def test_push_from_a_file_names_the_bad_line(app: App) -> None:
    good = [json.dumps({"n": n}) for n in range(1000)]
    (app.folder / "bad.jsonl").write_text("\n".join([*good, '{"n": "x"}']) + "\n")
    (app.folder / "nojson.jsonl").write_text('{"n": 1}\n{n: 2}\n')

    refused = app.run("push", "tasks", "add", "--file", "bad.jsonl")
    broken = app.run("push", "tasks", "add", "--file", "nojson.jsonl")

    assert refused.returncode == 1 and "line 1001" in refused.stderr, refused.stderr
    assert "1000 job(s) from the lines before its batch were pushed" in refused.stderr
    assert broken.returncode == 1 and "line 2 is not JSON" in broken.stderr, broken.stderr
    assert "Traceback" not in refused.stderr + broken.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["push", "tasks", "nosuch", "--payload", "{}"], "nosuch"),
        (["push", "tasks", "add", "--payload", "{nope"], "--payload is not JSON"),
        (["push", "tasks", "add", "--payload", '{"n": "x"}'], "does not match Item"),
        (["push", "nowhere", "add", "--payload", '{"n": 1}'], "nowhere"),
        (["job", "nosuchjob"], "no job 'nosuchjob'"),
        (["prune", "nowhere"], "nowhere"),
    ],
    ids=["unknown-job", "not-json", "invalid-payload", "unknown-queue", "no-job", "prune-queue"],
)
def test_errors_are_one_line_and_exit_1(app: App, args: list[str], message: str) -> None:
    result = app.run(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["push", "tasks", "add"],
        ["push", "tasks", "add", "--payload", "{}", "--file", "x"],
        ["push", "tasks", "add", "--payload", "{}", "--delay", "soon"],
        ["push", "tasks", "add", "--payload", "{}", "--meta", "novalue"],
        ["push", "tasks", "add", "--payload", "{}", "--meta", "k=1", "--meta", "k=2"],
        ["work", "--concurrency", "0"],
        ["nosuchcommand"],
    ],
)
def test_usage_errors_exit_2(app: App, args: list[str]) -> None:
    result = app.run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_prune_deletes_finished_jobs_past_retention(app: App) -> None:
    for n in range(3):
        app.run("push", "tasks", "add", "--payload", json.dumps({"n": n}))
    app.run("push", "kept", "add", "--payload", '{"n": 9}')
    assert app.run("work", "w", "--burst").returncode == 0
    time.sleep(1.0)

    one = app.run("prune", "tasks")
    every = app.json("prune")

    assert one.returncode == 0, one.stderr
    assert "queue 'tasks': 3 finished job(s) pruned" in one.stdout
    assert every == {"tasks": 0, "kept": 0}
    assert app.registry.blocking.queue_info()["kept"].succeeded == 1


def test_prune_of_every_queue_prunes_those_it_reaches_and_names_a_backend_it_cannot(
    tmp_path: Path,
) -> None:
    """Before, a queue whose backend refused connections ended `conveyor prune` at once: the
    queues after it, on a backend that answered, kept their jobs past retention."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there: the connection is refused
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    far = f"redis://127.0.0.1:{closed}/0?timeout=2"
    (tmp_path / "farapp.py").write_text(
        "from conveyor import Job, Registry\n"
        f"registry = Registry(default_driver={url!r})\n"
        f'registry.queue("far", driver={far!r}, workers=["fw"])\n'
        'registry.queue("tasks", workers=["w"], retention=0.5)\n'
        'registry.worker("w")\nregistry.worker("fw")\n'
        '@registry.job("add", queue="tasks")\n'
        "def add(job: Job[dict[str, int]]) -> None:\n    pass\n"
    )
    assert (
        run_cli(tmp_path, "farapp:registry", "push", "tasks", "add", "--payload", "{}").returncode
        == 0
    )
    assert run_cli(tmp_path, "farapp:registry", "work", "w", "--burst").returncode == 0
    time.sleep(1.0)  # past the retention of 0.5 s

    pruned = run_cli(tmp_path, "farapp:registry", "prune")

    assert pruned.returncode == 1, pruned.stdout + pruned.stderr
    assert pruned.stdout.strip() == "queue 'tasks': 1 finished job(s) pruned", pruned.stdout
    assert pruned.stderr.strip().splitlines() == [pruned.stderr.strip()]  # one line
    assert f"Error: could not prune queues 'far': redis at redis://127.0.0.1:{closed}/0" in (
        pruned.stderr
    )


def test_json_of_list_failed_list_config_and_schedule_list(app: App) -> None:
    app.run("push", "tasks", "boom", "--payload", '{"n": 1}')
    app.run("work", "w", "--burst")
    app.run("push", "tasks", "add", "--payload", '{"n": 1}')

    listed = app.json("list")
    failed = app.json("failed", "list", "tasks")
    settings = app.json("config")
    schedules = app.json("schedule", "list")

    assert listed["queues"]["tasks"]["pending"] == 1 and listed["queues"]["tasks"]["failed"] == 1
    assert listed["queues"]["tasks"]["oldest_pending_age"] >= 0
    assert listed["workers"]["w"]["failed"] == 1 and listed["alive"] == []
    assert [job["job"] for job in failed] == ["boom"]
    assert failed[0]["error"]["message"] == "boom 1"
    assert "errors" not in failed[0]  # a listing reads no history: `conveyor job ID` shows it
    assert {"scope": "worker", "name": "w", "key": "poll_interval"}.items() <= next(
        s for s in settings if s["key"] == "poll_interval"
    ).items()
    assert schedules == []


def test_aliases_of_the_seed(app: App) -> None:
    app.run("push", "tasks", "add", "--payload", '{"n": 1}')
    listed = app.run("queue:list")
    worked = app.run("queue:work", "w", "--burst")

    assert listed.returncode == 0, listed.stderr
    assert ["tasks", "1", "0", "0", "0", "0", "0", "no"] in [
        line.split() for line in listed.stdout.splitlines()
    ]
    assert worked.returncode == 0, worked.stderr
    assert app.registry.blocking.queue_info()["tasks"].succeeded == 1


def _field(output: str, label: str) -> str:
    """The value of the `label:` line of `conveyor job`'s output."""
    found = [line for line in output.splitlines() if line.startswith(label + ":")]
    assert found, f"no {label!r} line in {output!r}"
    return found[0].partition(":")[2].strip()


UNREACHABLE_APP = """
from conveyor import Job, Registry

registry = Registry(default_driver="{scheme}://conveyor:hunter2@127.0.0.1:{port}/{db}")


@registry.job("add")
def add(job: Job[dict[str, int]]) -> None:
    pass
"""


@pytest.mark.parametrize(("scheme", "db"), [("postgresql", "test"), ("redis", "0")])
@pytest.mark.parametrize(
    "args", [["push", "default", "add", "--payload", "{}"], ["list"], ["job", "x"], ["prune"]]
)
def test_an_unreachable_backend_is_one_line_and_exit_1(
    tmp_path: Path, args: list[str], scheme: str, db: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "downapp.py").write_text(UNREACHABLE_APP.format(scheme=scheme, port=port, db=db))
    result = run_cli(tmp_path, "downapp:registry", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr or "connect" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
    # The command tried once and gave up: it must not say that anything retries (a worker does).
    assert "retries" not in result.stderr, result.stderr


IMPLICIT_APP = """
from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///{path}")


@registry.job("add")
def add(job: Job[dict[str, int]]) -> None:
    pass
"""


def test_job_finds_a_job_of_the_implicit_default_queue(tmp_path: Path) -> None:
    """An app that declares no queue has its default queue only once frozen: `job`, which
    looks in every queue's backend, must see it too."""
    (tmp_path / "plainapp.py").write_text(IMPLICIT_APP.format(path=tmp_path / "jobs.db"))

    def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, "plainapp:registry", *args)

    job_id = conveyor("push", "default", "add", "--payload", "{}").stdout.strip()
    shown = conveyor("job", job_id, "--json")

    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "pending"


def test_push_from_a_file_shows_a_progress_bar_on_a_terminal(app: App) -> None:
    (app.folder / "jobs.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(1500)))
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "conveyor", "push", "tasks", "add", "--file", "jobs.jsonl",
             "--app", "pushapp:registry"],
            cwd=app.folder,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, "COLUMNS": "100"},
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        os.close(follower)
        shown = _read_all(leader)
    finally:
        os.close(leader)
    assert result.returncode == 0, shown
    assert "1500 job(s) 'add' pushed" in result.stdout
    assert "pushing add to tasks" in shown and "━" in shown, shown


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
