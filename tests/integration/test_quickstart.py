"""examples/quickstart.py runs as a user would run it, and prints what its docstring promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One run of the quickstart in an empty directory, where it creates ./conveyor.db."""
    cwd = tmp_path_factory.mktemp("quickstart")
    return subprocess.run(
        [sys.executable, str(QUICKSTART)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


def test_quickstart_exits_zero(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr


def test_quickstart_stores_its_jobs_in_conveyor_db_in_the_current_directory(
    tmp_path: Path,
) -> None:
    subprocess.run(
        [sys.executable, str(QUICKSTART)], cwd=tmp_path, capture_output=True, timeout=45, check=True
    )
    assert (tmp_path / "conveyor.db").is_file()


def test_quickstart_shows_the_pushed_counts_with_one_delayed(
    run: subprocess.CompletedProcess[str],
) -> None:
    assert (
        "pushed 5 jobs, queue counts: "
        "QueueCounts(pending=4, delayed=1, reserved=0, succeeded=0, failed=0, cancelled=0)"
    ) in run.stdout


def test_quickstart_sends_and_renders(run: subprocess.CompletedProcess[str]) -> None:
    lines = [line.strip() for line in run.stdout.splitlines()]
    assert "sent 'Welcome' to ada@example.com (attempt 1)" in lines
    assert "sent 'Later' to bob@example.com (attempt 1)" in lines
    assert "rendered invoice 7: $19.99" in lines


def test_quickstart_retries_the_flaky_email_once(run: subprocess.CompletedProcess[str]) -> None:
    lines = [line.strip() for line in run.stdout.splitlines()]
    assert "sent 'Retried' to flaky@example.com (attempt 2)" in lines
    assert not any("flaky@example.com (attempt 1)" in line for line in lines)
    assert re.search(
        r"\(mail\.send\) attempt 1 of 3 failed, retrying in [0-9.]+s: "
        r"ConnectionError: SMTP server busy",
        run.stderr,
    )


def test_quickstart_each_job_is_done_once(run: subprocess.CompletedProcess[str]) -> None:
    out = run.stdout
    assert out.count("sent 'Welcome'") == 1
    assert out.count("sent 'Later'") == 1
    assert out.count("sent 'Retried'") == 1
    assert out.count("rendered invoice 7") == 1
    assert "rendered invoice 8" not in out


def test_quickstart_puts_the_negative_invoice_in_failed_storage(
    run: subprocess.CompletedProcess[str],
) -> None:
    assert re.search(
        r"^job [0-9a-f]{32} is in failed storage after 2 attempts: "
        r"invoice 8 has a negative amount$",
        run.stdout,
        re.MULTILINE,
    )
    assert "failed for good after attempt 2: ValueError: invoice 8 has a negative amount" in (
        run.stderr
    )


def test_quickstart_final_counts(run: subprocess.CompletedProcess[str]) -> None:
    assert (
        "queue counts: QueueCounts("
        "pending=0, delayed=0, reserved=0, succeeded=4, failed=1, cancelled=0)"
    ) in run.stdout, run.stdout + run.stderr
    # 7 attempts: ada, bob, invoice 7 once each; flaky twice (1 retry); invoice 8 twice (1 retry).
    assert (
        "worker counts: WorkerCounts(processed=7, succeeded=4, failed=1, retried=2)"
    ) in run.stdout, run.stdout + run.stderr


def test_quickstart_runs_the_worker_after_pushing(run: subprocess.CompletedProcess[str]) -> None:
    lines = run.stdout.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if line.startswith("pushed 5 jobs")),
        lines.index("running worker 'main' until the queue settles:"),
        next(i for i, line in enumerate(lines) if "is in failed storage" in line),
        next(i for i, line in enumerate(lines) if line.startswith("queue counts:")),
        next(i for i, line in enumerate(lines) if line.startswith("worker counts:")),
    ]
    assert order == sorted(order)
