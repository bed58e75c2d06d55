"""The README's twenty-line example runs as printed, in a fresh folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs_and_sends_the_delayed_mail(tmp_path: Path) -> None:
    text = README.read_text()
    match = re.search(r"## Twenty lines\n\n```python\n(.*?)```", text, re.S)
    assert match is not None, "README lost its '## Twenty lines' example"
    (tmp_path / "example.py").write_text(match.group(1))
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sending 'Hi' to ada@example.com (attempt 1)" in result.stdout
    assert (tmp_path / "conveyor.db").exists()
