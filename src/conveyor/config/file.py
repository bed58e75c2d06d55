"""The configuration file: found, parsed with tomllib, and read into values with the line of
each, every value checked by the schema.

The file is the one `Registry.configure(path)` or `--config` names, else the one
CONVEYOR_CONFIG names, else ./conveyor.toml, else ./pyproject.toml when it has [tool.conveyor].
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import duration
from conveyor.config.schedules import read_schedules
from conveyor.config.schema import BY_SCOPE, SECTIONS, Given, Key, Scope, Target, check, quoted
from conveyor.errors import ConfigError, ConveyorError
from conveyor.schedule import Schedule
from conveyor.spec import check_name

#: The environment variable naming the configuration file.
CONFIG_ENV = "CONVEYOR_CONFIG"
#: The file looked for in the working directory, then pyproject.toml's [tool.conveyor].
FILE_NAME = "conveyor.toml"
PYPROJECT = "pyproject.toml"
#: The drivers' URL options that are seconds, which a [drivers.<name>] section may write as a
#: duration ("30s").
SECONDS_OPTIONS = ("timeout", "consumer_timeout")


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A configuration file read: its conveyor table, and the line of every key in it."""

    shown: str
    data: dict[str, Any]
    lines: dict[tuple[str, ...], int]

    def at(self, *path: str) -> str:
        """`conveyor.toml:12` for the line setting `path` (else its table's), or the file."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return f"{self.shown}:{self.lines[path[:end]]}"
        return self.shown


def find_file(named: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """The configuration file to read: `named` (by configure() or --config), else the one
    CONFIG_ENV names, else ./conveyor.toml, else ./pyproject.toml if it has [tool.conveyor];
    None if there is none. ConfigError if a file named does not exist."""
    how = "--config (or configure())" if named is not None else CONFIG_ENV
    named = named if named is not None else environ.get(CONFIG_ENV) or None
    if named is not None:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"configuration file {str(path)!r}, named by {how}, is not a file")
        return path
    if Path(FILE_NAME).is_file():
        return Path(FILE_NAME)
    pyproject = Path(PYPROJECT)
    if pyproject.is_file() and _has_tool_table(_text(pyproject)):
        return pyproject
    return None


def shadowed(found: Path | None) -> list[str]:
    """A warning when ./conveyor.toml, found without being named, leaves the [tool.conveyor]
    table of ./pyproject.toml unread: settings added there would be ignored without a word."""
    pyproject = Path(PYPROJECT)
    if found != Path(FILE_NAME) or not pyproject.is_file():
        return []
    try:
        has_table = _has_tool_table(_text(pyproject))
    except ConfigError:  # not UTF-8: not conveyor's concern, as it is not read
        return []
    if not has_table:
        return []
    return [
        f"{PYPROJECT} has a [tool.conveyor] table, which is not read: {FILE_NAME} is; move its"
        f" settings into {FILE_NAME} (or remove {FILE_NAME} to use pyproject.toml's)"
    ]


def _has_tool_table(text: str) -> bool:
    """Whether a pyproject.toml has conveyor's table, however TOML spells it ([tool.conveyor],
    [tool."conveyor"], conveyor.retry = 1 under [tool], an inline table). One that is not
    valid TOML has it when a header says so: read_file then names the mistake; without one,
    the file's mistake is not conveyor's concern."""
    try:
        tool = tomllib.loads(text).get("tool")
    except tomllib.TOMLDecodeError:
        return bool(_TOOL_TABLE.search(text))
    return isinstance(tool, dict) and "conveyor" in tool


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a BOM (Notepad's) is skipped
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset"
            f" {exc.start}): a TOML file is UTF-8; save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc


def read_file(path: Path) -> ConfigFile:
    """Parse `path` with tomllib; the conveyor table is [tool.conveyor] in pyproject.toml."""
    shown = str(path)
    text = _text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{shown}: tables or arrays nested too deep to read") from None
    prefix = ("tool", "conveyor") if path.name == PYPROJECT else ()
    for part in prefix:
        if part not in data:  # only a file named by --config or CONVEYOR_CONFIG gets here
            raise ConfigError(
                f"{shown}: has no [tool.conveyor] table: add one, or name the file that holds"
                " conveyor's settings"
            )
        data = data[part]
        if not isinstance(data, dict):
            raise ConfigError(f"{shown}: [tool.conveyor] must be a table")
    return ConfigFile(shown, data, _key_lines(text, prefix))


_TOOL_TABLE = re.compile(r"^\s*\[\s*tool\s*\.\s*conveyor\s*[.\]]", re.MULTILINE)
_ANY_TOOL = re.compile(r"""^\s*\[\s*tool\s*\.\s*["']?([A-Za-z0-9_-]+)["']?\s*[.\]]""")


def misspelt_tables(named: Path | None) -> list[str]:
    """A warning for each [tool.X] table of the pyproject.toml conveyor reads (`named`, else
    ./pyproject.toml when no conveyor.toml is there) whose X looks like conveyor misspelt
    (`conveyr`, `Conveyor`): it would be ignored without a word."""
    path = named or (None if Path(FILE_NAME).is_file() else Path(PYPROJECT))
    if path is None or path.name != PYPROJECT or not path.is_file():
        return []
    first: dict[str, int] = {}  # each misspelt name at its first line
    for number, line in enumerate(_text(path).splitlines(), start=1):
        found = _ANY_TOOL.match(line)
        if found and found[1] != "conveyor" and _near_conveyor(found[1]):
            first.setdefault(found[1], number)
    return [
        f"{path}:{number}: [tool.{name}] looks like a misspelling of [tool.conveyor], the"
        f" only table conveyor reads: ignored; rename it [tool.conveyor]"
        for name, number in first.items()
    ]


def _near_conveyor(name: str) -> bool:
    folded = name.lower().replace("-", "").replace("_", "")
    return difflib.SequenceMatcher(None, folded, "conveyor").ratio() >= 0.8


_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*(?P<key>{_DOTTED})\s*\]")
_ASSIGN = re.compile(rf"^\s*(?P<key>{_DOTTED})\s*=")
_PART = re.compile(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


def _key_lines(text: str, prefix: tuple[str, ...]) -> dict[tuple[str, ...], int]:
    """The first line of every table header and key, by its path below `prefix`. tomllib
    keeps no positions; a plain scan of headers and `key =` lines finds them in every file
    written the usual way (an inline table's keys get the line of the table)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        assign = _ASSIGN.match(line)
        if header:
            table = path = _parts(header["key"])
        elif assign:
            path = table + _parts(assign["key"])
        else:
            continue
        for end in range(len(prefix) + 1, len(path) + 1):  # [a.b.c] is where a.b starts too
            if path[: len(prefix)] == prefix:
                lines.setdefault(path[len(prefix) : end], number)
    return lines


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(a or b or c for a, b, c in _PART.findall(dotted))


@dataclass(slots=True)
class FileValues:
    """What a file gives: values by target, driver options, and each named section's line."""

    values: dict[Target, Given] = field(default_factory=dict)
    options: dict[str, dict[str, Given]] = field(default_factory=dict)
    sections: dict[tuple[Scope, str], str] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    file: ConfigFile | None = None


def file_values(file: ConfigFile, problems: list[str]) -> FileValues:
    """Every value of `file`, read and checked; each mistake is added to `problems`."""
    found = FileValues(file=file)
    wide = BY_SCOPE["conveyor"]
    for key, value in file.data.items():
        if key in SECTIONS:
            _sections(file, key, value, found, problems)
        elif key == "schedules":
            found.schedules = read_schedules(value, file.at, problems)
        elif key in wide:
            _read(file, wide[key], "", value, (key,), found, problems)
        else:
            expected = ", ".join([*wide, *SECTIONS, "schedules"])
            tables = [table for table, scope in SECTIONS.items() if key in BY_SCOPE[scope]]
            hint = "".join(
                f"; {key} is a setting of each {SECTIONS[table]}: write it in [{table}.<name>]"
                for table in tables[:1]
            )
            problems.append(
                f"{file.at(key)}: unknown key {key!r}: expected one of {expected}{hint}"
            )
    return found


def _sections(
    file: ConfigFile, table: str, sections: Any, found: FileValues, problems: list[str]
) -> None:
    scope = SECTIONS[table]
    if not isinstance(sections, dict):
        problems.append(f"{file.at(table)}: {table} must be [{table}.<name>] sections")
        return
    for name, section in sections.items():
        where = file.at(table, name)
        try:
            check_name(scope, name)
        except ConveyorError as exc:
            problems.append(f"{where}: [{table}.{name}]: {exc}")
            continue
        if not isinstance(section, dict):
            problems.append(
                f"{where}: {name} = {section!r} is directly under [{table}]: a setting goes in"
                f" the section of its {scope}, [{table}.<name>]"
            )
            continue
        found.sections[(scope, name)] = where
        for key, value in section.items():
            path = (table, name, key)
            if scope == "driver" and key != "url":
                _option(file, name, key, value, path, found, problems)
            elif key in BY_SCOPE[scope]:
                _read(file, BY_SCOPE[scope][key], name, value, path, found, problems)
            else:
                expected = ", ".join(BY_SCOPE[scope])
                dotted = (  # [queues.mail.send] is queue "mail" holding a table "send"
                    f"; a {scope} named {name}.{key} is written with quotes,"
                    f' [{table}."{name}.{key}"]'
                    if isinstance(value, dict)
                    else ""
                )
                problems.append(
                    f"{file.at(*path)}: [{table}.{name}] unknown key {key!r}:"
                    f" expected one of {expected}{dotted}"
                )


def _read(
    file: ConfigFile,
    key: Key,
    name: str,
    raw: Any,
    path: tuple[str, ...],
    found: FileValues,
    problems: list[str],
) -> None:
    where = f"{file.at(*path)}: {_label(key, name)} = {quoted(key, raw)}"
    try:
        value = key.kind.from_toml(raw)
        check(key, name, value)
    except (ValueError, TypeError, ConveyorError) as exc:
        problems.append(f"{where}: {exc}")
        return
    found.values[(key.scope, name, key.name)] = Given(value, file.at(*path), where)


def _option(
    file: ConfigFile,
    name: str,
    key: str,
    value: Any,
    path: tuple[str, ...],
    found: FileValues,
    problems: list[str],
) -> None:
    if not isinstance(value, str | int | float | bool):
        problems.append(
            f"{file.at(*path)}: [drivers.{name}] {key}: expected a text, number or true/false"
            " (it is added to the driver's URL as an option)"
        )
        return
    if key in SECONDS_OPTIONS and isinstance(value, str):
        # "30s", as every duration of the file may be written; the URL takes seconds. Text that
        # is no duration goes on as it is: the driver's own message says what it takes.
        with contextlib.suppress(ValueError):
            seconds = duration.parse(value)
            value = str(int(seconds)) if seconds.is_integer() else repr(seconds)  # never 1e+06
    found.options.setdefault(name, {})[key] = Given(value, file.at(*path))


def _label(key: Key, name: str) -> str:
    if key.scope == "conveyor":
        return key.name
    return f"[{key.scope}s.{name}] {key.name}"
