"""docs/testing.md's application, conftest.py and tests run as printed, with pytest in a fresh
folder, where nothing may reach the application's SQLite file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"

pytestmark = pytest.mark.timeout(120)


def example(name: str) -> str:
    """The doc's python block whose first line is `# name`."""
    match = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", DOC.read_text(), re.S)
    assert match is not None, f"docs/testing.md lost its {name} example"
    return match.group(1)


def test_the_docs_tests_pass_without_touching_the_apps_backend(tmp_path: Path) -> None:
    for name in ("shop.py", "conftest.py", "test_shop.py"):
        (tmp_path / name).write_text(example(name))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
    assert not (tmp_path / "shop.db").exists()


def test_the_one_handler_snippet_runs_the_handler_on_the_job_it_builds(tmp_path: Path) -> None:
    """The last section's snippet, in the shop example: the handler runs, no queue around it."""
    match = re.search(
        r"## One handler on a job you build.*?```python\n(.*?)```", DOC.read_text(), re.S
    )
    assert match is not None, "docs/testing.md lost its one-handler example"
    (tmp_path / "shop.py").write_text(example("shop.py"))
    body = "".join(f"    {line}\n" for line in match.group(1).splitlines())
    (tmp_path / "one.py").write_text(
        "import asyncio\nimport time\n\nfrom conveyor import Job\n"
        "from shop import Email, outbox, send_mail\n\n\nasync def main() -> None:\n"
        f"{body}    print(outbox)\n\n\nasyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "one.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "['ada@example.com: hi']"
    assert not (tmp_path / "shop.db").exists()
