"""docs/web.md's examples run as printed: its FastAPI app (under its lifespan) and its test file,
run by pytest in a fresh folder, where nothing may reach the app's SQLite file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "web.md"

pytestmark = pytest.mark.timeout(120)

#: Enters the app's lifespan (its worker on ./conveyor.db), pushes over HTTP, checks health.
SERVE = """
import time
from fastapi.testclient import TestClient
import app
with TestClient(app.app) as client:
    assert client.get("/health").status_code == 200
    job = client.post("/signup", params={"email": "cy@example.com"}).json()["job"]
    deadline = time.monotonic() + 20
    while app.registry.blocking.job_info(job).state != "succeeded":
        assert time.monotonic() < deadline, "the worker never ran the job"
        time.sleep(0.05)
assert not app.jobs.healthy
"""


def example(name: str) -> str:
    """The doc's python block whose first line is `# name`."""
    match = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", DOC.read_text(), re.S)
    assert match is not None, f"docs/web.md lost its {name} example"
    return match.group(1)


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=100
    )


def test_the_testing_example_passes_without_touching_the_apps_backend(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(example("app.py"))
    (tmp_path / "test_app.py").write_text(example("test_app.py"))
    done = run(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert not (tmp_path / "conveyor.db").exists()


def test_the_app_example_runs_its_worker_inside_the_lifespan(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(example("app.py"))
    done = run(tmp_path, "-c", SERVE)
    assert done.returncode == 0, done.stderr
    assert "welcome, cy@example.com" in done.stdout
