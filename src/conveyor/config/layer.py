"""The layers above the file: the environment and the command line.

conveyor's own names are CONVEYOR_<KEY> for a conveyor-wide setting, CONVEYOR_QUEUE_<NAME>_<KEY>,
CONVEYOR_WORKER_<NAME>_<KEY> and CONVEYOR_DRIVER_<NAME>_URL, the name in upper case with `_`
for `.:-`; RapidGo's QUEUE_DRIVER, QUEUE_DEFAULT, QUEUE_MAX_ATTEMPTS, QUEUE_RETRY_DELAY and
QUEUE_TIMEOUT keep their meaning (see `conveyor.config.schema`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.config.schema import (
    BY_SCOPE,
    NAMED_ENV_PREFIXES,
    Given,
    Key,
    Scope,
    Target,
    check,
    env_name,
    env_part,
    quoted,
)
from conveyor.errors import ConveyorError


@dataclass(frozen=True, slots=True)
class Override:
    """A value given on the command line, the highest layer, e.g.
    `Override("worker", "main", "concurrency", 8, "--concurrency")`. A text value is read as
    the environment's would be ("30s"); any other is taken as the code would take it."""

    scope: Scope
    name: str
    key: str
    value: Any
    flag: str


def env_values(
    environ: Mapping[str, str],
    targets: Iterable[tuple[Scope, str]],
    problems: list[str],
) -> dict[Target, list[Given]]:
    """The environment's values for conveyor-wide settings (scope "conveyor", name "") or for
    the named queues, workers and drivers; a seed's name comes before conveyor's own, which
    therefore wins when both are set. Empty variables count as unset."""
    found: dict[Target, list[Given]] = {}
    looked: dict[str, list[tuple[Key, str]]] = {}
    for scope, name in targets:
        for key in BY_SCOPE[scope].values():
            if scope == "conveyor":
                for seed in key.seeds:
                    _env(environ, seed.env, seed.read, key, name, found, problems)
            looked.setdefault(env_name(key, name), []).append((key, name))
    for env, owners in looked.items():
        if len(owners) > 1 and environ.get(env):
            named = " and ".join(f"{key.scope} {name!r}" for key, name in owners)
            sections = " or ".join(f'[{key.scope}s."{name}"]' for key, name in owners)
            problems.append(
                f"environment variable {env} is ambiguous: it fits {named}: unset it and write"
                f" {owners[0][0].name} in the configuration file's {sections} section instead"
            )
        elif owners:
            key, name = owners[0]
            _env(environ, env, key.kind.from_text, key, name, found, problems)
    return found


#: conveyor's variables that are no setting: read by the command line and the drivers.
OTHER_ENV = frozenset(
    f"CONVEYOR_{name}"
    for name in (
        "CONFIG", "APP", "DATABASE_URL", "REDIS_URL", "AMQP_URL",
        "DASHBOARD_TOKEN", "DASHBOARD_BASIC_AUTH",
    )
)  # fmt: skip


def unused_env(environ: Mapping[str, str], targets: Iterable[tuple[Scope, str]]) -> list[str]:
    """A warning for each set CONVEYOR_ variable that conveyor does not read: one naming no
    registered queue, worker or driver, or no setting of one, or no conveyor-wide setting; and
    for one of conveyor's names (or a seed's) spelt in another case, which is not read either."""
    targets = list(targets)
    wide = [env_name(key) for key in BY_SCOPE["conveyor"].values()]
    known = {env_name(key, name) for scope, name in targets for key in BY_SCOPE[scope].values()}
    seeds = {seed.env for key in BY_SCOPE["conveyor"].values() for seed in key.seeds}
    read = {*known, *wide, *OTHER_ENV, *seeds}
    warnings: list[str] = []
    for env, text in environ.items():
        upper = env_part(env)  # CONVEYOR_WORKER_MAIL_SEND_LEASE for conveyor_worker_mail-send_lease
        if not (upper.startswith("CONVEYOR_") or upper in seeds) or not text or env in read:
            continue
        if upper in read:
            warnings.append(
                f"environment variable {env} is not read: conveyor's name for it is {upper}"
                " (upper case, _ for . : and -): ignored; rename it"
            )
        elif upper.startswith(NAMED_ENV_PREFIXES):
            warnings.append(
                f"environment variable {env} names no registered queue, worker or driver, or"
                f" no setting of one{_settings_of(upper, targets)}: ignored"
            )
        else:
            warnings.append(
                f"environment variable {env} is no conveyor setting (the conveyor-wide ones:"
                f" {', '.join(wide)}): ignored"
            )
    return warnings


def _settings_of(env: str, targets: list[tuple[Scope, str]]) -> str:
    """' (worker 'main' has CONVEYOR_WORKER_MAIN_CONCURRENCY, ...)' for the registered name
    `env` starts with, so that a misspelt key shows the right spelling; else the registered
    names of its kind (' (registered workers: main)'), so that a misspelt name does; else ''."""
    for scope, name in sorted(targets, key=lambda target: -len(target[1])):
        if env.startswith(f"CONVEYOR_{scope.upper()}_{env_part(name)}_"):
            names = ", ".join(env_name(key, name) for key in BY_SCOPE[scope].values())
            return f" ({scope} {name!r} has {names})"
    for kind in ("queue", "worker", "driver"):
        registered = [name for scope, name in targets if scope == kind]
        if env.startswith(f"CONVEYOR_{kind.upper()}_") and registered:
            return f" (registered {kind}s: {', '.join(registered)})"
    return ""


def _env(
    environ: Mapping[str, str],
    env: str,
    read: Callable[[str], Any],
    key: Key,
    name: str,
    found: dict[Target, list[Given]],
    problems: list[str],
) -> None:
    text = environ.get(env, "")
    if not text:
        return
    where = f"environment variable {env}={quoted(key, text)}"
    try:
        value = read(text)
        check(key, name, value)
    except (ValueError, ConveyorError) as exc:
        problems.append(f"{where}: {exc}")
        return
    found.setdefault((key.scope, name, key.name), []).append(Given(value, f"env {env}", where))


def override_values(
    overrides: Iterable[Override], problems: list[str]
) -> dict[Target, list[Given]]:
    """The command line's values, read and checked."""
    found: dict[Target, list[Given]] = {}
    for override in overrides:
        key = BY_SCOPE.get(override.scope, {}).get(override.key)
        if key is None:
            problems.append(f"{override.flag}: no {override.scope} setting {override.key!r}")
            continue
        where = f"{override.flag} {quoted(key, override.value)}"
        try:
            text = isinstance(override.value, str)
            value = key.kind.from_text(override.value) if text else override.value
            check(key, override.name, value)
        except (ValueError, ConveyorError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        given = Given(value, f"flag {override.flag}", where)
        found.setdefault((key.scope, override.name, key.name), []).append(given)
    return found
