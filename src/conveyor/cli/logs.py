"""The log output of `conveyor`: text lines, or with `--log-format json` one JSON object a
line carrying the same fields (and a job's id, job, queue, attempt, duration, outcome)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

#: The fields a finished job's log line carries (see conveyor.settle), kept in JSON lines.
JOB_FIELDS = ("id", "job", "queue", "attempt", "duration", "outcome")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
