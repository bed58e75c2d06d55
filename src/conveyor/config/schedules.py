"""`[schedules.<name>]` in the configuration file: schedules declared (or, for a name the code
registered too, replaced) by the file, checked by `Schedule.make` as the code's are.

    [schedules.nightly]
    job = "export.start"
    cron = "0 2 * * *"
    tz = "Europe/Berlin"
    payload = { shard_count = 8 }
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ConveyorError
from conveyor.schedule import Schedule
from conveyor.spec import check_name

__all__ = ["KEYS", "read_schedules"]

#: Each key of a schedule's section, and the TOML type it must have.
KEYS: dict[str, tuple[type, ...]] = {
    "job": (str,),
    "cron": (str,),
    "every": (str, int, float),
    "tz": (str,),
    "queue": (str,),
    "payload": (dict,),
    "catch_up": (bool,),
}


def read_schedules(table: Any, at: Any, problems: list[str]) -> dict[str, Schedule]:
    """The schedules of the file's `schedules` table; `at(*path)` names a key's file and
    line. Each mistake is added to `problems`."""
    if not isinstance(table, dict):
        problems.append(f"{at('schedules')}: schedules must be [schedules.<name>] sections")
        return {}
    found: dict[str, Schedule] = {}
    for name, section in table.items():
        where = f"{at('schedules', name)}: [schedules.{name}]"
        try:
            check_name("schedule", name)
            if not isinstance(section, dict):
                raise ConveyorError(f"must be a table of settings, not {section!r}")
            for key, value in section.items():
                _check_key(key, value)
            if "job" not in section:
                raise ConveyorError('needs job = "<a registered job name>"')
            found[name] = Schedule.make(name, **section)
        except ConveyorError as exc:
            problems.append(f"{where}: {exc}")
    return found


def _check_key(key: str, value: Any) -> None:
    if key not in KEYS:
        raise ConveyorError(f"unknown key {key!r}: expected one of {', '.join(KEYS)}")
    kinds = KEYS[key]
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        names = {str: "text", int: "number", float: "number", dict: "table", bool: "true/false"}
        expected = " or ".join(dict.fromkeys(names[kind] for kind in kinds))
        raise ConveyorError(f"{key} = {value!r}: expected {expected}")
