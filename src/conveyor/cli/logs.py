"""The log output of `conveyor`: text lines, or with `--log-format json` one JSON object a
line carrying the same fields (and a job's id, job, queue, attempt, duration, outcome); and
`terminal_text`, which escapes the control characters of stored text printed to a terminal."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

#: The fields a finished job's log line carries (see conveyor.settle), kept in JSON lines.
JOB_FIELDS = ("id", "job", "queue", "attempt", "duration", "outcome")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: What starts each further line of a text record: a record's own lines start with its time.
CONTINUED = "    "


#: Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, and the
#: bidirectional overrides that reorder what is shown.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str, keep: str = "\n\t") -> str:
    """`text` from storage as a terminal can show it: each control character (but those in
    `keep`) as a \\x or \\u escape, so an error message or payload written by anyone cannot
    move the cursor, retitle the window, plant a link or overwrite a line (ESC, OSC, CR)."""

    def escaped(found: re.Match[str]) -> str:
        char = found.group()
        if char in keep:
            return char
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _CONTROLS.sub(escaped, text)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT lines, with control characters escaped (a job's error message is logged
    when it fails: an ESC or CR in it would act on the terminal that shows the log), and every
    line after a record's first indented (CONTINUED): a newline in an error message cannot
    start a line that reads as a record of its own, and a traceback reads as its record's."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_text(super().format(record)).replace("\n", "\n" + CONTINUED)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 UTC), level, logger, message, the job's
    fields when the record has them, and the traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, log_format: str) -> None:
    """Send log records at `level` and above to stderr, as text or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def json_lines() -> bool:
    """True when log lines are JSON objects (`--log-format json`)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def error_line_json(message: str) -> str:
    """A command's error `message` as the JSON line of an ERROR record of conveyor.cli, whatever
    --log-level leaves out: an error always shows."""
    record = logging.LogRecord("conveyor.cli", logging.ERROR, __file__, 0, message, None, None)
    return JsonFormatter().format(record)
