"""examples/nightly_export.py runs as printed: a schedule's tick starts a chain per shard and
every chain walks its shard to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nightly_export.py"


def test_the_nightly_export_example_walks_every_shard(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "export.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    for shard, line in enumerate(lines):
        assert line.endswith(f"shard {shard}: 11 pages, done"), result.stdout
