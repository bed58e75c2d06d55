"""`conveyor work`'s text log: a newline in what a record carries cannot forge a record."""

from __future__ import annotations

import logging
import sys

from conveyor.cli.logs import CONTINUED, TEXT_FORMAT, TextFormatter

FORGED = "2026-12-05 10:00:00,000 INFO conveyor.worker: job 1 (mail.send) succeeded"


def test_every_line_after_a_records_first_is_indented() -> None:
    try:
        raise ValueError(f"boom\n{FORGED}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "conveyor.worker", logging.ERROR, __file__, 1, "job 2 failed: %s", ("x\ny",), exc_info
    )

    first, *rest = TextFormatter(TEXT_FORMAT).format(record).split("\n")

    assert first.endswith("ERROR conveyor.worker: job 2 failed: x")
    assert rest[0] == f"{CONTINUED}y"
    assert rest[1] == f"{CONTINUED}Traceback (most recent call last):"
    assert f"{CONTINUED}{FORGED}" in rest
    assert all(line.startswith(CONTINUED) for line in rest), rest
