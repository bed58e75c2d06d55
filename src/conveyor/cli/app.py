"""What every command shares: the `conveyor` group, loading the app, running a coroutine
against it, masking passwords, and printing tables or one JSON document."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Coroutine
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import click

from conveyor import __version__
from conveyor import loop as event_loop
from conveyor.cli.logs import error_line_json, json_lines, setup_logging, terminal_text
from conveyor.config import CONFIG_ENV
from conveyor.drivers import DATABASE_ENV, Location
from conveyor.drivers.location import hide_passwords
from conveyor.errors import ConveyorError
from conveyor.job import JobInfo
from conveyor.payload import not_utf8
from conveyor.registry import Registry

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")

APP_HELP = "Where your registry is, as module:attribute (or set CONVEYOR_APP)."

#: The options of `conveyor` itself, which go before the command.
GLOBAL_OPTIONS = {"--config": "PATH", "--log-level": "LEVEL", "--log-format": "json"}

#: The seed's spellings, each the name of the command it stands for.
ALIASES = {"queue:work": "work", "queue:list": "list"}


class Conveyor(click.Group):
    """The `conveyor` group: resolves the aliases, and turns any error a command did not
    expect into one line on stderr and exit status 1, never a traceback."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        except click.ClickException as exc:
            if not json_lines():
                raise
            # With --log-format json every line on stderr is a JSON object: the error's too.
            click.echo(error_line_json(exc.format_message()), err=True)
            raise click.exceptions.Exit(exc.exit_code) from None

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            if exc.option_name not in GLOBAL_OPTIONS:
                raise
            given = f"{exc.option_name} {GLOBAL_OPTIONS[exc.option_name]}"
            message = (
                f"{exc.option_name} is an option of conveyor itself: put it before the command,"
                f" as conveyor {given} {ctx.invoked_subcommand} ..."
            )
            raise click.NoSuchOption(exc.option_name, message, ctx=exc.ctx) from None
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except ConveyorError as exc:
            raise click.ClickException(masked(str(exc))) from exc
        except BrokenPipeError:  # whoever read stdout stopped (conveyor config | head -1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the last flush
            raise click.exceptions.Exit(1) from None
        except Exception as exc:  # a fault of ours or of a library: one line, still
            logging.getLogger("conveyor.cli").debug("unexpected error", exc_info=True)
            raise click.ClickException(masked(f"{type(exc).__name__}: {exc}")) from exc


@click.group(cls=Conveyor)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: every log line is one JSON object (time, level, logger, message and the "
    "job's id, job, queue, attempt, duration, outcome where there is one).",
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    default=None,
    help=f"The configuration file [default: {CONFIG_ENV}, else ./conveyor.toml, else "
    "pyproject.toml's [tool.conveyor]].",
)
@click.version_option(__version__, prog_name="conveyor", message="%(prog)s %(version)s")
def main(log_level: str, log_format: str, config_path: str | None) -> None:
    """conveyor: background jobs for Python.

    Exit status: 0 ok, 1 an error (one line on stderr), 2 a usage mistake. The seed's
    spellings `queue:work` and `queue:list` run `work` and `list`."""
    setup_logging(log_level.upper(), log_format)
    for argument in sys.argv[1:]:
        if not argument.isascii() and not_utf8(argument):
            raise click.UsageError(
                f"the argument {argument!r} is not UTF-8 text: write it in UTF-8, or run"
                " conveyor under a UTF-8 locale (LANG=C.UTF-8)"
            )


def load_app(spec: str, *, output: bool = True) -> Registry:
    """Import `module:attribute` and return the Registry it names. With `output` (a command
    whose stdout is its output: an id, a table, one JSON document, which a script reads), what
    the module prints as it is imported goes to stderr; `work` and `dashboard` leave it be."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise _bad_app(f"{spec!r} is not module:attribute, e.g. myapp.jobs:registry")
    if module_name.endswith(".py") or "/" in module_name:
        raise _bad_app(
            f"{module_name!r} is a file's path: give the module's dotted name, as myapp.jobs "
            "for myapp/jobs.py, from the folder that holds myapp"
        )
    module = _imported(module_name, output)
    if not hasattr(module, attribute):
        found = _registries(module)
        where = f"; its registry: {' or '.join(found)}" if found else ": it holds no Registry"
        raise _bad_app(f"module {module_name!r} has no attribute {attribute!r}{where}")
    registry = getattr(module, attribute)
    if not isinstance(registry, Registry):
        raise _bad_app(f"{spec!r} is not a conveyor Registry (found {registry!r})")
    config_path = click.get_current_context().find_root().params.get("config_path")
    if config_path is not None:
        try:
            registry.configure(config_path)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from exc
    return registry


def _imported(module_name: str, output: bool) -> ModuleType:
    """The module `module_name`, imported from the working directory (what it prints sent to
    stderr when the command's `output` is on stdout); a usage error saying why it cannot be."""
    sys.path.insert(0, os.getcwd())
    printing = contextlib.redirect_stdout(sys.stderr) if output else contextlib.nullcontext()
    try:
        with printing:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and module_name.startswith(exc.name or " ")
        hint = "; run conveyor in the folder that holds it, or add that to PYTHONPATH"
        raise _bad_app(f"cannot import {module_name!r}: {exc}{hint if missing else ''}") from exc
    except Exception as exc:  # the module itself failed (a registry mistake, a syntax error)
        # Where, as Python's traceback says it, without this call's and the import machinery's.
        frames = traceback.extract_tb(exc.__traceback__)[1:]
        frames = [frame for frame in frames if "importlib" not in frame.filename]
        where = "".join(traceback.format_list(frames)).rstrip()
        raise _bad_app(
            masked(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}\n{where}".rstrip())
        ) from exc
    except SystemExit as exc:  # its own command line (argparse), run on import: not conveyor's
        raise _bad_app(
            masked(
                f"importing {module_name!r} called sys.exit({exc.code!r}): move the code that"
                ' exits under `if __name__ == "__main__":`, or name a module that only'
                " builds the registry"
            )
        ) from None
    return module


def _registries(module: ModuleType) -> list[str]:
    """The module's Registry attributes as --app values, for a --app that missed them."""
    found = (name for name, value in vars(module).items() if isinstance(value, Registry))
    return [f"{module.__name__}:{name}" for name in sorted(found)]


def _bad_app(message: str) -> click.BadParameter:
    """The usage error of a --app (or CONVEYOR_APP) that names no registry."""
    return click.BadParameter(message, param_hint="'--app' (or CONVEYOR_APP)")


app_option = click.option("--app", "app", envvar="CONVEYOR_APP", required=True, help=APP_HELP)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead."
)


def run(coroutine: Coroutine[Any, Any, T], registry: Registry, loop: str = "asyncio") -> T:
    """Run `coroutine` on a new event loop of kind `loop` (see conveyor.loop), then close the
    registry's drivers; a ConveyorError becomes one line on stderr and exit status 1."""

    async def with_close() -> T:
        try:
            return await coroutine
        finally:
            await registry.close()

    try:
        return event_loop.run(with_close(), loop)
    except ConveyorError as exc:
        coroutine.close()  # not started when no loop could be made (no uvloop): no warning
        raise click.ClickException(masked(str(exc), registry)) from exc


def masked(message: str, registry: Registry | None = None) -> str:
    """`message` with the passwords of the driver URLs the app names masked. Every message is
    masked where it is made; this is the second line, for one that was not."""
    locations = [os.environ.get(name, "") for name in ("CONVEYOR_DRIVER", *DATABASE_ENV)]
    if registry is not None:
        locations += [registry.default_driver, *(q.driver for q in registry.queues.values())]
    for location in locations:
        message = Location.parse(location).mask(message)
    return hide_passwords(message)  # of a URL none of them is (the app's own error)


async def unsearched(registry: Registry) -> str:
    """Why a job looked up by id may be missing besides being gone: "" when every queue's
    driver can find one, else the clause naming the queues whose driver cannot (amqp)."""
    blind = [q for q in registry.queues if not registry.driver_for(q).capabilities.lookup]
    if not blind:
        return ""
    names = ", ".join(repr(q) for q in blind)
    return (
        f"; queue(s) {names} were not searched: their driver cannot find a job by id "
        "(see them with conveyor list and conveyor failed list)"
    )


async def kept(
    registry: Registry,
    queue: str,
    lost: str,
    *,
    inline: bool = False,
    kinds: str = "sqlite, postgres, mysql, redis, amqp",
) -> None:
    """ConveyorError unless `queue`'s driver keeps what a command does there once it exits (or,
    with `inline`, runs a job inside its push, as sync does): `lost`, "a job pushed by conveyor
    push", would go with the memory driver's process, unseen; `kinds` are the drivers advised."""
    driver = await registry.driver_of(queue)
    if driver.capabilities.durable or (inline and driver.capabilities.inline):
        return
    raise ConveyorError(
        f"queue {queue!r} is on the {driver.kind} driver, which keeps jobs in one process"
        f" only: {lost} would be lost when it exits; put the queue on a driver that keeps"
        f" them ({kinds})"
    )


def fail(message: str) -> click.ClickException:
    """The exception that ends a command with `message` on stderr and exit status 1."""
    return click.ClickException(message)


def echo_json(document: Any) -> None:
    """Print `document` as one JSON document (times as ISO 8601 text)."""
    click.echo(json.dumps(document, default=jsonable, indent=2))


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: times as ISO 8601 text, sets sorted."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value)
    return str(value)


def table(header: list[str], rows: list[list[Any]], *, align_right: bool = True) -> None:
    """Print `rows` under `header`, columns padded; numbers right-aligned unless told."""
    rows = [[terminal_text(v, keep="") if isinstance(v, str) else v for v in row] for row in rows]
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        cells = [
            str(v).ljust(w) if i == 0 or not align_right else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


def fields(rows: list[tuple[str, Any]]) -> None:
    """Print `label: value` lines, the values lined up."""
    width = max((len(label) for label, _ in rows), default=0) + 2
    for label, value in rows:
        shown = terminal_text(value) if isinstance(value, str) else value
        click.echo(f"{label + ':':<{max(width, 13)}}{shown}")


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def when(moment: float | None, tz: str = "UTC") -> str:
    """A backend timestamp as local text in `tz`; "" for None."""
    if moment is None:
        return ""
    return datetime.fromtimestamp(moment, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def iso(moment: float | None) -> str | None:
    """A backend timestamp as ISO 8601 UTC, for JSON; None stays None."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, ZoneInfo("UTC")).isoformat()


def error_line(job: JobInfo) -> str:
    if job.error is None:
        return ""
    return f"{job.error.type}: {job.error.message}".splitlines()[0][:120]


def job_json(job: JobInfo, *, history: bool = True) -> dict[str, Any]:
    """The JSON form of a stored job, as `conveyor job --json` and `failed list --json` print;
    `history=False` leaves out `errors`, which a listing does not read (it would show [])."""
    shown = {
        "id": job.id,
        "queue": job.queue,
        "job": job.name,
        "state": job.state.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "payload": _parsed(job.payload),
        "meta": job.meta,
        "unique": job.unique,
        "worker": job.worker,
        "created_at": iso(job.created_at),
        "available_at": iso(job.available_at),
        "reserved_at": iso(job.reserved_at),
        "finished_at": iso(job.finished_at),
        "rescued": job.rescued,
        "cancel_requested": job.cancel_requested,
        "error": None if job.error is None else job.error.to_dict(),
        "errors": [
            {"attempt": item.attempt, "at": iso(item.at), **item.error.to_dict()}
            for item in job.errors
        ],
        "result": None if job.result is None else _parsed(job.result),
    }
    if not history:
        del shown["errors"]
    return shown


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json reads
        return text


def progress() -> Progress:
    """Progress bars on stderr for long work, shown only on a terminal (stdout stays clean
    for --json and pipes): `with progress() as bars: task = bars.add_task("...", total=n)`."""
    # rich takes ~30 ms to import: only the commands that draw bars pay it.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )
