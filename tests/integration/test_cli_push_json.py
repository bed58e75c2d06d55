"""`conveyor push --json` as a script reads it, on sqlite and postgres: one JSON document that
says what was done. Before, a push whose --unique key an unfinished job held printed that
job's id in the same document as a job just stored: only stderr told them apart; a `--file`
push stopped by a bad line printed no document; and what the app printed as it loaded went to
stdout, before the id or the JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import backend_of, clean_backend, run_cli

pytestmark = pytest.mark.timeout(60)

APP_SOURCE = """
from dataclasses import dataclass

from conveyor import Job, Registry

registry = Registry(default_driver={url!r})
registry.queue("tasks", workers=["w"])
registry.worker("w")


@dataclass
class Item:
    n: int


@registry.job("add", queue="tasks")
def add(job: Job[Item]) -> int:
    return job.payload.n + 1
"""


@pytest.fixture(params=["sqlite", "postgres"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    url, prefix = backend_of(request.param, tmp_path)
    (tmp_path / "jsonapp.py").write_text(APP_SOURCE.format(url=url))
    yield tmp_path
    asyncio.run(clean_backend(request.param, prefix))


def _push(folder: Path, *args: str, stdin: str | None = None) -> object:
    result = run_cli(folder, "jsonapp:registry", "push", "tasks", "add", *args, "--json",
                     stdin=stdin)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_push_json_says_whether_the_job_was_stored_or_its_unique_key_was_held(
    folder: Path,
) -> None:
    first = _push(folder, "--payload", '{"n": 1}', "--unique", "k", "--delay", "1h")
    again = _push(folder, "--payload", '{"n": 2}', "--unique", "k")

    assert isinstance(first, dict) and isinstance(again, dict)
    assert first == {"id": first["id"], "queue": "tasks", "job": "add", "stored": True}
    assert again == {"id": first["id"], "queue": "tasks", "job": "add", "stored": False}


def test_push_file_json_from_stdin_lists_every_id(folder: Path) -> None:
    shown = _push(folder, "--file", "-", stdin='{"n": 1}\r\n\r\n{"n": 2}\r\n')

    assert isinstance(shown, dict) and set(shown) == {"queue", "job", "ids"}
    assert len(shown["ids"]) == len(set(shown["ids"])) == 2
    listed = run_cli(folder, "jsonapp:registry", "list", "--json")
    assert json.loads(listed.stdout)["queues"]["tasks"]["pending"] == 2


def test_push_file_json_stopped_by_a_bad_line_still_lists_the_jobs_it_stored(
    folder: Path,
) -> None:
    lines = ['{"n": 1}\n'] * 1500 + ['{"n": "x"}\n']  # the bad line is in the second batch
    result = run_cli(folder, "jsonapp:registry", "push", "tasks", "add", "--file", "-", "--json",
                     stdin="".join(lines))  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert "line 1501: payload of job 'add' does not match Item" in result.stderr
    shown = json.loads(result.stdout)
    assert len(set(shown["ids"])) == 1000  # the first batch, stored before the bad line's
    listed = run_cli(folder, "jsonapp:registry", "list", "--json")
    assert json.loads(listed.stdout)["queues"]["tasks"]["pending"] == 1000


def test_what_the_app_prints_as_it_loads_goes_to_stderr_not_into_the_output(
    folder: Path,
) -> None:
    (folder / "chattyapp.py").write_text("print('loading the app')\nfrom jsonapp import registry\n")
    pushed = run_cli(folder, "chattyapp:registry", "push", "tasks", "add", "--payload", '{"n": 1}')
    listed = run_cli(folder, "chattyapp:registry", "list", "--json")

    assert pushed.returncode == listed.returncode == 0, pushed.stderr + listed.stderr
    assert len(pushed.stdout.split()) == 1  # the id alone
    assert json.loads(listed.stdout)["queues"]["tasks"]["pending"] == 1
    assert "loading the app" in pushed.stderr and "loading the app" in listed.stderr
    # A worker, whose stdout is no output of its own, leaves it where the app printed it.
    worked = run_cli(folder, "chattyapp:registry", "work", "w", "--burst")
    assert worked.returncode == 0 and "loading the app" in worked.stdout, worked.stderr


def test_what_a_handler_run_inside_the_push_prints_goes_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "syncapp.py").write_text(
        APP_SOURCE.format(url="sync://").replace("return job.payload.n + 1", "print('ran')")
    )
    one = run_cli(tmp_path, "syncapp:registry", "push", "tasks", "add", "--payload", '{"n": 1}',
                  "--json")  # fmt: skip
    many = run_cli(tmp_path, "syncapp:registry", "push", "tasks", "add", "--file", "-", "--json",
                   stdin='{"n": 1}\n{"n": 2}\n')  # fmt: skip

    assert one.returncode == many.returncode == 0, one.stderr + many.stderr
    assert json.loads(one.stdout)["stored"] is True
    assert len(json.loads(many.stdout)["ids"]) == 2
    assert one.stderr.count("ran") == 1 and many.stderr.count("ran") == 2
