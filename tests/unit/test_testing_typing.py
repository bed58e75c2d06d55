"""mypy --strict knows the payload types conveyor.testing returns, and reports a payload of the
wrong type given to an assertion (tests/typing/testing_ok.py and testing_wrong.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPING = ROOT / "tests" / "typing"

pytestmark = pytest.mark.timeout(300)


def test_mypy_accepts_typed_use_and_reports_a_wrong_payload_type() -> None:
    files = [str(TYPING / "testing_ok.py"), str(TYPING / "testing_wrong.py")]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode in (0, 1), done.stderr  # 2 would be mypy itself failing
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert [line for line in errors if "testing_ok.py" in line] == []
    [wrong] = [line for line in errors if "testing_wrong.py" in line]
    assert "testing_wrong.py:24: error:" in wrong
    assert '"assert_pushed"' in wrong
