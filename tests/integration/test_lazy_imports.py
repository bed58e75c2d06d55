"""What a fresh interpreter imports: `import conveyor` and `import conveyor.cli` leave out the
heavy libraries only some paths need (croniter and dateutil for a cron schedule, rich for
progress bars, pydantic until the first job is registered, urllib.request for an sqlite
restore, each driver's client library), and `conveyor list` / `conveyor push` on an sqlite
app import no cron or rich; each is there once its path runs. Which modules, never how long:
the figures are in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.processes import PYTHONPATH

pytestmark = pytest.mark.timeout(60)

#: Imported only on the paths that need them.
CRON = ["croniter", "dateutil"]
PYDANTIC = ["pydantic", "pydantic_core"]
CLIENTS = ["psycopg", "psycopg_pool", "asyncmy", "pymysql", "redis", "aiormq"]
LAZY = [*CRON, "rich", *PYDANTIC, "urllib.request", *CLIENTS]

APP = """
from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///jobs.db")
registry.queue("tasks", workers=["w"])
registry.worker("w")


@registry.job("record")
def record(job: Job[dict[str, int]]) -> None:
    pass
"""


def imported_after(code: str, cwd: Path | None = None) -> list[str]:
    """The modules of LAZY that a fresh interpreter holds after running `code`."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print("LAZY " + json.dumps([name for name in {LAZY!r} if name in sys.modules]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("LAZY "))
    return list(json.loads(line.removeprefix("LAZY ")))


def test_import_conveyor_and_its_cli_import_no_heavy_library() -> None:
    assert imported_after("import conveyor") == []
    assert imported_after("import conveyor.cli") == []


def test_a_cron_schedule_imports_croniter_and_an_every_schedule_does_not() -> None:
    every = """
        from conveyor import Registry
        Registry(default_driver="memory").schedule("beat", every="30s", job="ping")
    """
    assert imported_after(every) == []
    cron = """
        from conveyor import Registry
        Registry(default_driver="memory").schedule("nightly", cron="0 2 * * *", job="ping")
    """
    assert imported_after(cron) == CRON


def test_the_first_job_registered_imports_pydantic() -> None:
    code = """
        from conveyor import Job, Registry
        registry = Registry(default_driver="memory")
        registry.job("record")(lambda job: None)
        assert registry.jobs["record"].codec.encode({"n": 1}) == '{"n":1}'
    """
    assert imported_after(code) == PYDANTIC


@pytest.mark.parametrize(
    "arguments",
    [["list"], ["push", "tasks", "record", "--payload", '{"n": 1}']],
    ids=["list", "push"],
)
def test_list_and_push_on_sqlite_import_no_cron_rich_or_other_client(
    tmp_path: Path, arguments: list[str]
) -> None:
    (tmp_path / "app.py").write_text(APP)
    code = f"""
        from conveyor.cli import main
        try:
            main({[*arguments, "--app", "app:registry"]!r})
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """
    assert imported_after(code, cwd=tmp_path) == PYDANTIC
