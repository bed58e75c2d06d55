"""Configuration from outside the code: a TOML file, the environment and the command line,
applied over what the code registered, keeping where every value came from.

    # conveyor.toml, or [tool.conveyor] in pyproject.toml, or the file CONVEYOR_CONFIG names
    driver = "database"          # every queue that names none
    retry = 2                    # every queue that does not say

    [queues.mail]
    workers = ["mailer"]
    timeout = "30s"

    [workers.mailer]
    concurrency = 10

    [drivers.main]
    url = "postgresql://app@db/app"
    pool_size = 20

Precedence, lowest first: conveyor's defaults, the code's registration, the file, the
environment, the command line (`Override`). A value for one queue wins over a conveyor-wide
one (`retry`, `QUEUE_MAX_ATTEMPTS`, ...), which only fills in what the queue leaves unsaid.

`Registry.freeze()`, which every push, worker and command runs first, calls `apply`, so an app
that pushes and `conveyor work` both read ./conveyor.toml. A section for a queue or worker the
code did not register is a warning; an unknown key or a wrong value is a ConfigError naming the
file, line, key, value and what was expected, and nothing starts. Values are checked by the
code's own checks (`conveyor.config.schema.check`). docs/configuration.md lists every setting.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from conveyor.config.file import (
    CONFIG_ENV,
    FILE_NAME,
    FileValues,
    file_values,
    find_file,
    misspelt_tables,
    read_file,
    shadowed,
)
from conveyor.config.layer import Override, env_values, override_values, unused_env
from conveyor.config.schema import BY_SCOPE, Given, Key, Scope, Target, env_name
from conveyor.drivers import (
    DATABASE,
    KIND_URL_ENV,
    SCHEMES,
    Location,
    database_url,
    driver_from_url,
    safe_url,
)
from conveyor.drivers.base import Driver
from conveyor.errors import ConfigError, ConveyorError, PayloadError
from conveyor.registration import Declaration, Effective, Registration
from conveyor.spec import NAME_PATTERN, QueueSpec, Setting, WorkerSpec, queue_spec, worker_spec

__all__ = ["CONFIG_ENV", "FILE_NAME", "Override", "Request", "Setting", "apply", "effective"]

log = logging.getLogger("conveyor.config")


@dataclass(frozen=True, slots=True)
class Request:
    """Where a registry's configuration comes from (`Registry.configure` sets it): a file
    (else CONVEYOR_CONFIG, else ./conveyor.toml, else ./pyproject.toml's [tool.conveyor]), an
    environment (else os.environ, read at freeze()) and the command line's overrides."""

    path: str | os.PathLike[str] | None = None
    environ: Mapping[str, str] | None = None
    overrides: tuple[Override, ...] = ()


def effective(registry: Registration) -> list[Setting]:
    """Every value in force for the registry's queues, workers and drivers, and conveyor-wide,
    with where each came from; passwords masked. Freezes the registry (applying the
    configuration) first, so a bad file raises ConfigError here."""
    registry.freeze()
    return list(registry.settings)


def apply(registry: Registration, request: Request) -> Effective:
    """What is in force for `registry`: its code's registration under the file, environment
    and command line of `request`. Logs a warning for each section or variable naming nothing
    registered; raises ConfigError listing every mistake."""
    environ = os.environ if request.environ is None else request.environ
    path = find_file(request.path, environ)
    problems: list[str] = []
    found = FileValues() if path is None else file_values(read_file(path), problems)
    flags = override_values(request.overrides, problems)
    # Conveyor-wide first: the default queue it settles decides what exists implicitly.
    wide_env = env_values(environ, [("conveyor", "")], problems)
    wide_layers = _layers(found.values, wide_env, flags)
    wide = {
        key.name: [Given(key.default, "default"), *_code(registry, key), *layer][-1]
        for key in BY_SCOPE["conveyor"].values()
        for layer in [wide_layers.get(("conveyor", "", key.name), [])]
    }
    declared = registry.declaration(wide["default_queue"].value)
    _check_default_queue(registry, declared, wide["default_queue"])
    _check_schedules(registry, declared, wide["default_queue"].value, found, problems)
    targets = _targets(declared, found)
    _check_overrides(request.overrides, targets, problems)
    layers = _layers(found.values, env_values(environ, targets, problems), flags)
    build = _Builder(declared, wide, layers, problems)
    queues = {name: build.queue(name) for name in declared.queues}
    workers = {name: build.worker(name) for name in declared.workers}
    drivers = build.drivers(found, environ, {spec.driver for spec in queues.values() if spec})
    build.check_served()
    build.check_run_times(queues, drivers)
    # An instance's URL variable is refused above (build.drivers), not warned of as unused.
    instances: list[tuple[Scope, str]] = [("driver", name) for name in _instances(declared)]
    unused = unused_env(environ, [*targets, *instances])
    named = request.path is not None or bool(environ.get(CONFIG_ENV))
    _warn(declared, found, [*shadowed(None if named else path), *misspelt_tables(path), *unused])
    if problems:
        raise ConfigError("the configuration has mistakes:\n- " + "\n- ".join(problems))
    return Effective(
        default_driver=wide["driver"].value,
        default_queue=wide["default_queue"].value,
        queues={name: spec for name, spec in queues.items() if spec is not None},
        workers={name: spec for name, spec in workers.items() if spec is not None},
        drivers=drivers,
        settings=tuple(build.settings),
        schedules=found.schedules,
    )


def _check_overrides(
    overrides: Iterable[Override], targets: list[tuple[Scope, str]], problems: list[str]
) -> None:
    for override in overrides:
        if override.scope != "conveyor" and (override.scope, override.name) not in targets:
            problems.append(f"{override.flag}: no {override.scope} is named {override.name!r}")


def _check_schedules(
    registry: Registration,
    declared: Declaration,
    default_queue: str,
    found: FileValues,
    problems: list[str],
) -> None:
    """A schedule of the file pushing a job or to a queue the code did not register, or a
    payload its job refuses, is a problem naming the file's line (the registry's own check
    would name only the code)."""
    for name, schedule in found.schedules.items():
        at = found.file.at if found.file else (lambda *path: "")
        queue = registry.schedule_queue(schedule, default_queue)
        if schedule.job not in registry.jobs:
            problems.append(
                f"{at('schedules', name, 'job')}: [schedules.{name}] job = {schedule.job!r} is"
                f" not a registered job: name one of {', '.join(registry.jobs) or 'none'}"
            )
        elif queue not in declared.queues:
            problems.append(
                f"{at('schedules', name, 'queue')}: [schedules.{name}] pushes to queue {queue!r},"
                f" which is not registered: set queue = to one of {', '.join(declared.queues)}"
            )
        else:
            try:
                registry.jobs[schedule.job].codec.encode(schedule.payload)
            except PayloadError as exc:
                problems.append(f"{at('schedules', name, 'payload')}: [schedules.{name}] {exc}")


def _check_default_queue(registry: Registration, declared: Declaration, given: Given) -> None:
    """Warn of a default queue the file or environment names that is no declared queue (a
    typo) while a job names no queue of its own: its handle's push without one would fail."""
    homeless = [name for name, spec in registry.jobs.items() if spec.queue is None]
    if given.where and given.value not in declared.queues and homeless:
        log.warning(
            "%s: %r is no registered queue (registered: %s): a push of job %s without queue="
            " will be refused; name a registered queue",
            given.where, given.value, ", ".join(declared.queues), ", ".join(homeless),
        )  # fmt: skip


def _code(registry: Registration, key: Key) -> list[Given]:
    value = registry.code_defaults.get(key.name)
    return [] if value is None else [Given(value, "code")]


def _instances(declared: Declaration) -> list[str]:
    """The drivers the code registered as instances, which no configuration can change."""
    return [name for name, url in declared.drivers.items() if url is None]


def _targets(declared: Declaration, found: FileValues) -> list[tuple[Scope, str]]:
    drivers = [name for name, url in declared.drivers.items() if url is not None]
    drivers += [name for scope, name in found.sections if scope == "driver"]
    return [
        *(("queue", name) for name in declared.queues),
        *(("worker", name) for name in declared.workers),
        *(("driver", name) for name in dict.fromkeys(drivers)),
    ]


def _layers(
    file: Mapping[Target, Given], *above: Mapping[Target, list[Given]]
) -> dict[Target, list[Given]]:
    """Every value given for each target, lowest layer first: file, environment, flags."""
    layers: dict[Target, list[Given]] = {target: [given] for target, given in file.items()}
    for layer in above:
        for target, values in layer.items():
            layers.setdefault(target, []).extend(values)
    return layers


def _warn(declared: Declaration, found: FileValues, unused: list[str]) -> None:
    for (scope, name), where in found.sections.items():
        known = declared.queues if scope == "queue" else declared.workers
        if scope != "driver" and name not in known:
            log.warning(
                "%s: [%ss.%s] names a %s the code did not register: ignored (registered: %s)",
                where, scope, name, scope, ", ".join(known) or "none",
            )  # fmt: skip
    for warning in unused:
        log.warning("%s", warning)


class _Builder:
    """Builds the specs in force from every layer, noting each value's source."""

    def __init__(
        self,
        declared: Declaration,
        wide: dict[str, Given],
        layers: dict[Target, list[Given]],
        problems: list[str],
    ) -> None:
        self.declared = declared
        self.wide = wide
        self.layers = layers
        self.problems = problems
        self.settings: list[Setting] = []
        #: Each queue's driver, when the file, environment or a flag named it.
        self.named_drivers: dict[str, Given] = {}
        self.timeouts: dict[str, Given] = {}
        #: Each queue's workers in force.
        self.served_by: dict[str, Given] = {}
        for key in BY_SCOPE["conveyor"].values():
            self._note(key, "", wide[key.name])

    def _note(self, key: Key, name: str, given: Given) -> None:
        shown = key.kind.show(given.value)
        self.settings.append(Setting(key.scope, name, key.name, shown, given.source))

    def _settled(self, scope: Scope, name: str, args: Mapping[str, Any]) -> dict[str, Given]:
        code = "implicit" if (scope, name) in self.declared.implicit else "code"
        settled: dict[str, Given] = {}
        for key in BY_SCOPE[scope].values():
            chain = [Given(args[key.name], code)] if key.name in args else []
            chain += self.layers.get((scope, name, key.name), [])
            if chain:
                settled[key.name] = chain[-1]
            elif key.inherits:
                settled[key.name] = self.wide[key.name]
            else:
                settled[key.name] = Given(key.default, "default")
            self._note(key, name, settled[key.name])
        return settled

    def queue(self, name: str) -> QueueSpec | None:
        """The queue's spec in force, or None after adding the problem to the list."""
        settled = self._settled("queue", name, self.declared.queues[name])
        args = {key: given.value for key, given in settled.items() if given.source != "default"}
        if settled["driver"].where:
            self.named_drivers[name] = settled["driver"]
        self.timeouts[name] = settled["timeout"]
        workers = self.served_by[name] = settled["workers"]
        if workers.where and not workers.value:
            self.problems.append(
                f"{workers.where}: queue {name!r} needs a worker to run its jobs: name one of"
                f" {', '.join(self.declared.workers) or 'none'}"
            )
        for worker in workers.value if workers.where else ():
            if worker not in self.declared.workers:
                self.problems.append(
                    f"{workers.where}: worker {worker!r} is not registered: name one of"
                    f" {', '.join(self.declared.workers) or 'none'}, or register it in the code"
                    f" (registry.worker({worker!r}))"
                )
        try:
            return queue_spec(name, **{**args, "driver": settled["driver"].value})
        except ConveyorError as exc:
            self.problems.append(f"queue {name!r}: {exc}")
            return None

    def worker(self, name: str) -> WorkerSpec | None:
        """The worker's spec in force, or None after adding the problem to the list."""
        settled = self._settled("worker", name, self.declared.workers[name])
        args = {key: given.value for key, given in settled.items() if given.source != "default"}
        try:
            return worker_spec(name, **args)
        except ConveyorError as exc:
            self.problems.append(f"worker {name!r}: {exc}")
            return None

    def drivers(
        self, found: FileValues, environ: Mapping[str, str], used: set[str]
    ) -> dict[str, Driver]:
        """The drivers the file or the environment define or change, made now so that a bad
        URL is reported with where it came from; and "database", read from `environ`."""
        made: dict[str, Driver] = {}
        defined = [name for scope, name in _targets(self.declared, found) if scope == "driver"]
        for name in defined:
            self._driver(name, found, made)
        for (scope, name), where in found.sections.items():
            if scope == "driver" and self.declared.drivers.get(name, "") is None:
                self.problems.append(
                    f"{where}: [drivers.{name}]: driver {name!r} is an instance made in code,"
                    " which configuration cannot change: register it as a URL instead"
                )
        for name in _instances(self.declared):
            if environ.get(env := env_name(BY_SCOPE["driver"]["url"], name)):
                self.problems.append(
                    f"environment variable {env}: driver {name!r} is an instance made in code,"
                    " which configuration cannot change: register it as a URL instead"
                )
        if DATABASE in used and DATABASE not in self.declared.drivers and DATABASE not in made:
            self._database(environ, made)
        for given in dict.fromkeys(self.named_drivers.values()):
            if given.value not in {*self.declared.drivers, *defined, *made, DATABASE}:
                self._named(given, made, environ)
        return made

    def check_served(self) -> None:
        """A worker the code has serve a queue that the configuration's `workers = ...` leaves
        serving none is a problem naming where that was given (the registry's own check would
        tell to change the code, which is right)."""
        served = {worker for given in self.served_by.values() for worker in given.value}
        for worker in self.declared.workers:
            moved = [
                (queue, given.where)
                for queue, given in self.served_by.items()
                if given.where
                and given.value  # none at all, or one not registered, is a problem said already
                and set(given.value) <= set(self.declared.workers)
                and worker in self.declared.queues[queue].get("workers", ())
            ]
            if worker not in served and moved:
                queue, where = moved[0]
                self.problems.append(
                    f"{where}: worker {worker!r} is then left serving no queue (it served"
                    f" {queue!r}): keep it in the workers of {queue!r}, or name it in another"
                    " queue's workers"
                )

    def check_run_times(
        self, queues: Mapping[str, QueueSpec | None], drivers: Mapping[str, Driver]
    ) -> None:
        """A queue whose configured timeout is longer than its configured driver lets a job
        run (amqp: the broker's consumer_timeout) is a problem naming where each was given."""
        for name, spec in queues.items():
            driver, given = drivers.get(spec.driver) if spec else None, self.timeouts[name]
            limit = driver.max_job_time if driver else None
            if spec and limit is not None and given.where and given.value > limit:
                self.problems.append(
                    f"{given.where}: queue {name!r} would let a job run longer than its driver"
                    f" {spec.driver!r} lets one stay unacknowledged ({limit:g} s, the broker's"
                    " consumer_timeout): lower the timeout, or raise consumer_timeout on the"
                    " broker and tell the driver with ?consumer_timeout= in its URL"
                )

    def _named(self, given: Given, made: dict[str, Driver], environ: Mapping[str, str]) -> None:
        """Make the driver a queue's configured `driver = ...` names when it is no name
        registered or defined (a URL), so that a mistake names where it was written: for a
        bare redis or amqp, the variable holding its URL when one is set."""
        env = KIND_URL_ENV.get(given.value, "")
        url = environ.get(env, "").strip() if env else ""
        scheme, separator, rest = url.partition("://")
        if url and (not separator or scheme.lower() not in (given.value, f"{given.value}s")):
            self.problems.append(
                f"environment variable {env}={safe_url(url)!r}: the {given.value} driver's URL"
                f" must start with {given.value}:// (or {given.value}s:// for TLS)"
            )
            return
        url = f"{scheme.lower()}://{rest}" if url else ""  # as the driver reads it itself
        try:
            made[given.value] = driver_from_url(url or given.value)
        except ConveyorError as exc:
            if url:
                self.problems.append(f"environment variable {env}: {exc}")
                return
            message = str(exc)  # the value shown with its password masked
            if NAME_PATTERN.fullmatch(given.value) and given.value not in SCHEMES:
                message = (
                    f"no driver is named {given.value!r}: define it in a [drivers.{given.value}]"
                    ' section with url = "...", or give a URL such as sqlite:///jobs.db'
                )
            self.problems.append(f"{given.where}: {message}")
            return
        if env:
            shown = Location.parse(url or str(getattr(made[given.value], "url", ""))).shown
            source = f"env {env}" if url else "default"
            self.settings.append(Setting("driver", given.value, "url", shown, source))

    def _driver(self, name: str, found: FileValues, made: dict[str, Driver]) -> None:
        code = self.declared.drivers.get(name)
        chain = [Given(code, "code")] if code else []
        chain += self.layers.get(("driver", name, "url"), [])
        options = found.options.get(name, {})
        if not chain:
            where = found.sections.get(("driver", name), "")
            self.problems.append(f'{where}: [drivers.{name}] needs url = "..."')
            return
        url = chain[-1]
        if url.source.startswith(("env ", "flag ")):
            # A URL given above the file keeps its own options: the file's do not undo them.
            own = _query_keys(url.value)
            options = {key: option for key, option in options.items() if key not in own}
        location = _with_options(url.value, {key: given.value for key, given in options.items()})
        hide = Location.parse(location)
        self.settings.append(Setting("driver", name, "url", hide.shown, url.source))
        for key, given in options.items():
            shown = hide.mask(_option_text(given.value))
            self.settings.append(Setting("driver", name, key, shown, given.source))
        if url.source == "code" and not options:
            return
        try:
            made[name] = driver_from_url(location)
        except ConveyorError as exc:
            where = url.where or f"{url.source}: [drivers.{name}]"
            # The line of the option the driver's message names (outside the URL it quotes).
            said = re.sub(r"'[a-z+]+://[^']*'", "", str(exc))
            named = [key for key in options if re.search(rf"(?<!\w){re.escape(key)}['\"=]", said)]
            if named:
                where = f"{options[named[0]].source}: [drivers.{name}] {named[0]}"
            self.problems.append(f"{where}: {exc}")

    def _database(self, environ: Mapping[str, str], made: dict[str, Driver]) -> None:
        env = ""
        try:
            location, env = database_url(environ)
            made[DATABASE] = driver_from_url(location)
        except ConveyorError as exc:  # a URL database_url accepted names its variable here
            self.problems.append(f"environment variable {env}: {exc}" if env else str(exc))
            return
        source = f"env {env}" if env else "default"
        self.settings.append(
            Setting("driver", DATABASE, "url", Location.parse(location).shown, source)
        )


def _with_options(url: str, options: Mapping[str, Any]) -> str:
    """`url` with `options` added to its query, as the drivers read them."""
    if not options:
        return url
    query = "&".join(
        f"{quote(key, safe='')}={quote(_option_text(value), safe='')}"
        for key, value in options.items()
    )
    joiner = "&" if "?" in url.rpartition("@")[2] else "?"
    return f"{url}{joiner}{query}"


def _query_keys(url: str) -> set[str]:
    """The option names in `url`'s query (after its userinfo, where a password may hold `?`)."""
    query = url.rpartition("@")[2].partition("?")[2]
    return {key for key, _ in parse_qsl(query, keep_blank_values=True)}


def _option_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
