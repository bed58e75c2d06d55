"""mypy --strict accepts correct use of typed job handles and reports a wrong payload type,
in the user's editor rather than at run time (tests/typing/ holds both files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPING = ROOT / "tests" / "typing"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def mypy_output() -> list[str]:
    """mypy's error lines for both files, run once, as `make test` runs it: strict, with the
    project's configuration."""
    files = [str(TYPING / "handles_ok.py"), str(TYPING / "handles_wrong.py")]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode in (0, 1), done.stderr  # 2 would be mypy itself failing
    return [line for line in done.stdout.splitlines() if ": error: " in line]


def test_correct_handle_usage_type_checks(mypy_output: list[str]) -> None:
    assert [line for line in mypy_output if "handles_ok.py" in line] == []


@pytest.mark.parametrize(
    "error",
    [
        'handles_wrong.py:31: error: Argument 1 to "push" of "JobHandle" has incompatible type'
        ' "Sms"; expected "Email"  [arg-type]',
        'handles_wrong.py:32: error: Argument 1 to "push" of "BlockingJobHandle" has incompatible'
        ' type "dict[str, str]"; expected "Email"  [arg-type]',
        'handles_wrong.py:33: error: List item 1 has incompatible type "Sms"; expected "Email"'
        "  [list-item]",
        'handles_wrong.py:34: error: Unexpected keyword argument "dealy" for "push" of "JobHandle"',
        'handles_wrong.py:35: error: Argument 4 to "Job" has incompatible type "Sms"; expected'
        ' "Email"  [arg-type]',
        'handles_wrong.py:48: error: Argument 1 to "push" of "BlockingJobHandle" has incompatible'
        ' type "Email"; expected "Invoice"  [arg-type]',
        'handles_wrong.py:49: error: Argument "delay" to "push" of "BlockingJobHandle" has'
        ' incompatible type "str"; expected "float | timedelta | None"  [arg-type]',
    ],
    ids=["push", "blocking-push", "push-many", "option-name", "handler-call", "model", "delay"],
)
def test_a_wrong_payload_type_is_reported_by_mypy(mypy_output: list[str], error: str) -> None:
    assert any(line.endswith(error) or error in line for line in mypy_output), mypy_output


def test_mypy_reports_nothing_else(mypy_output: list[str]) -> None:
    assert len(mypy_output) == 7, mypy_output
