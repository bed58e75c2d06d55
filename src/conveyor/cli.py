"""The `conveyor` command: parses arguments and calls the public API; no logic of its own."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from conveyor.config import CONFIG_ENV, effective
from conveyor.drivers import DATABASE_ENV, Location
from conveyor.errors import ConveyorError
from conveyor.job import JobInfo, JobState
from conveyor.registry import Registry
from conveyor.worker import Stopped, Worker

APP_HELP = "Where your registry is, as module:attribute (or set CONVEYOR_APP)."


def load_app(spec: str) -> Registry:
    """Import `module:attribute` and return the Registry it names."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not module:attribute, e.g. myapp.jobs:registry")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module itself failed (a registry mistake, a syntax error)
        raise click.BadParameter(
            _masked(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")
        ) from exc
    registry = getattr(module, attribute, None)
    if not isinstance(registry, Registry):
        raise click.BadParameter(f"{spec!r} is not a conveyor Registry (found {registry!r})")
    config_path = click.get_current_context().find_root().params.get("config_path")
    if config_path is not None:
        try:
            registry.configure(config_path)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from exc
    return registry


app_option = click.option("--app", "app", envvar="CONVEYOR_APP", required=True, help=APP_HELP)


@click.group()
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    default=None,
    help=f"The configuration file [default: {CONFIG_ENV}, else ./conveyor.toml, else "
    "pyproject.toml's [tool.conveyor]].",
)
def main(log_level: str, config_path: str | None) -> None:
    """conveyor: background jobs for Python."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.argument("worker", required=False)
@app_option
@click.option("--burst", is_flag=True, help="Stop once the worker's queues are empty.")
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Give up (exit status 1) if the backend cannot be reached for this long at start "
    "[default: keep trying].",
)
@click.option(
    "--no-schedules",
    "no_schedules",
    is_flag=True,
    help="Do not push the ticks of the schedules of this worker's queues.",
)
def work(
    worker: str | None, app: str, burst: bool, startup_timeout: float | None, no_schedules: bool
) -> None:
    """Run WORKER until SIGTERM/SIGINT (a second signal stops at once). Without WORKER: the
    default queue's worker when the app declares no queue, else its only worker. It also
    pushes the ticks of the schedules of its queues, unless --no-schedules or --burst."""
    registry = load_app(app)

    async def work() -> tuple[str, Stopped]:
        name = worker or registry.default_worker()
        runner = Worker(
            registry,
            name,
            burst=burst,
            startup_timeout=startup_timeout,
            schedules=not no_schedules,
        )
        return name, await runner.run(handle_signals=True)

    name, stopped = _run(work(), registry)
    if not stopped.clean:
        raise click.ClickException(_cut_short(stopped, registry.worker_spec(name).stop_timeout))


@main.command(name="list")
@app_option
def list_(app: str) -> None:
    """Show queues (pending, delayed, reserved, failed, cancelled, paused) and workers
    (processed, ...)."""
    registry = load_app(app)

    async def gather() -> tuple[dict[str, Any], dict[str, Any], set[str]]:
        return (
            await registry.queue_info(),
            await registry.worker_info(),
            await registry.paused_queues(),
        )

    queues, workers, paused = _run(gather(), registry)
    rows = [
        [name, c.pending, c.delayed, c.reserved, c.failed, c.cancelled, _yes(name in paused)]
        for name, c in queues.items()
    ]
    _table(["queue", "pending", "delayed", "reserved", "failed", "cancelled", "paused"], rows)
    click.echo()
    rows = [[n, c.processed, c.succeeded, c.failed, c.retried] for n, c in workers.items()]
    _table(["worker", "processed", "succeeded", "failed", "retried"], rows)


@main.command(name="config")
@app_option
def config_(app: str) -> None:
    """Show every setting in force and where it came from (passwords masked)."""
    registry = load_app(app)
    try:
        settings = effective(registry)
    except ConveyorError as exc:
        raise click.ClickException(_masked(str(exc), registry)) from exc
    rows = [[s.scope, s.name, s.key, s.value, s.source] for s in settings]
    _table(["scope", "name", "key", "value", "source"], rows, align_right=False)


@main.group()
def failed() -> None:
    """Inspect, retry or purge the jobs in a queue's failed storage."""


@failed.command(name="list")
@click.argument("queue")
@app_option
@click.option("--limit", default=50, show_default=True, help="How many to show.")
@click.option("--offset", default=0, show_default=True, help="How many to skip.")
def failed_list(queue: str, app: str, limit: int, offset: int) -> None:
    """Show QUEUE's failed jobs, oldest first, with the error that failed each."""
    registry = load_app(app)
    jobs = _run(registry.list_jobs(queue, JobState.FAILED, limit=limit, offset=offset), registry)
    rows = [[job.id, job.name, job.attempt, _error_line(job)] for job in jobs]
    _table(["id", "job", "attempts", "error"], rows)


@failed.command(name="retry")
@click.argument("queue")
@click.argument("ids", nargs=-1)
@app_option
def failed_retry(queue: str, ids: tuple[str, ...], app: str) -> None:
    """Move QUEUE's failed jobs (all, or only IDS) back to pending, attempts reset."""
    registry = load_app(app)
    moved = _run(registry.retry_failed(queue, list(ids) or None), registry)
    click.echo(f"{moved} failed job(s) of queue {queue!r} moved back to pending")


@failed.command(name="purge")
@click.argument("queue")
@click.argument("ids", nargs=-1)
@app_option
@click.option("--yes", is_flag=True, help="Purge all of them without asking.")
def failed_purge(queue: str, ids: tuple[str, ...], app: str, yes: bool) -> None:
    """Delete QUEUE's failed jobs (all, or only IDS) for good."""
    if not ids and not yes:
        click.confirm(f"Delete every failed job of queue {queue!r}?", abort=True)
    registry = load_app(app)
    deleted = _run(registry.purge(queue, JobState.FAILED, list(ids) or None), registry)
    click.echo(f"{deleted} failed job(s) of queue {queue!r} deleted")


@main.command()
@click.argument("job_id")
@app_option
def cancel(job_id: str, app: str) -> None:
    """Cancel the job JOB_ID: at once if it is pending or delayed; if it is running, its worker
    stops it at the next lease renewal."""
    registry = load_app(app)
    found = _run(registry.cancel(job_id), registry)
    if not found:
        raise click.ClickException(f"no unfinished job {job_id!r}: it finished, or never existed")
    click.echo(f"job {job_id} cancelled (a running job stops at its next lease renewal)")


@main.group()
def queue() -> None:
    """Pause or resume a queue."""


@queue.command(name="pause")
@click.argument("name")
@app_option
def queue_pause(name: str, app: str) -> None:
    """Stop every worker reserving from queue NAME (within one poll interval); pushes still
    succeed and running jobs finish."""
    registry = load_app(app)
    _run(registry.pause(name), registry)
    click.echo(f"queue {name!r} paused")


@queue.command(name="resume")
@click.argument("name")
@app_option
def queue_resume(name: str, app: str) -> None:
    """Let workers reserve from queue NAME again."""
    registry = load_app(app)
    _run(registry.resume(name), registry)
    click.echo(f"queue {name!r} resumed")


@main.group()
def schedule() -> None:
    """Inspect the app's schedules."""


@schedule.command(name="list")
@app_option
def schedule_list(app: str) -> None:
    """Show each schedule, its next three ticks, and the last job it pushed with its state."""
    registry = load_app(app)

    async def gather() -> list[list[Any]]:
        rows = []
        for name, item in registry.schedules.items():
            queue = registry.schedule_queue(item)
            tick = (await (await registry.driver_of(queue)).ticks([name])).get(name)
            job = None if tick is None else await registry.job_info(tick.job_id)
            ticks = [when.strftime("%Y-%m-%d %H:%M:%S %Z") for when in item.next_ticks(3)]
            last = "never" if tick is None else _when(tick.at, item.tz)
            state = "" if tick is None else (job.state.value if job else "pruned")
            rows.append([name, item.rule, item.job, queue, ", ".join(ticks), last, state,
                         "" if tick is None else tick.job_id])  # fmt: skip
        return rows

    rows = _run(gather(), registry)
    header = ["schedule", "rule", "job", "queue", "next ticks", "last tick", "state", "last job"]
    _table(header, rows, align_right=False)


@main.command()
@click.argument("chain_id")
@app_option
def chain(chain_id: str, app: str) -> None:
    """Show how far the cursor-chained job CHAIN_ID got: pages, state, last cursor."""
    registry = load_app(app)
    info = _run(registry.chain_info(chain_id), registry)
    if info is None:
        raise click.ClickException(
            f"no chain {chain_id!r}: its first page was never pushed, or was pruned"
        )
    started = "" if info.started_at is None else _when(info.started_at, "UTC")
    rows = [
        ["chain", info.id],
        ["state", info.state],
        ["pages", info.pages],
        ["last cursor", json.dumps(info.cursor)],
        ["started", started],
        ["last page", f"{info.last.id} ({info.last.state.value}, attempt {info.last.attempt})"],
    ]
    if info.last.error is not None:
        rows.append(["error", _error_line(info.last)])
    for label, value in rows:
        click.echo(f"{label + ':':<13}{value}")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _when(moment: float, tz: str) -> str:
    return datetime.fromtimestamp(moment, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _cut_short(stopped: Stopped, stop_timeout: float) -> str:
    """The error line of a stop that cut running jobs short."""
    parts = []
    if stopped.released:
        parts.append(f"released to run again: {', '.join(stopped.released)}")
    if stopped.left:
        parts.append(f"left to their threads until their lease ends: {', '.join(stopped.left)}")
    details = "; ".join(parts)
    return f"stopped with jobs still running after stop_timeout ({stop_timeout:g}s): {details}"


def _error_line(job: JobInfo) -> str:
    if job.error is None:
        return ""
    return f"{job.error.type}: {job.error.message}".splitlines()[0][:120]


@main.command()
@app_option
def migrate(app: str) -> None:
    """Create or update the tables every queue's driver needs (safe to run again)."""
    registry = load_app(app)
    kinds = _run(registry.migrate(), registry)
    click.echo(f"schema up to date on {len(kinds)} driver(s): {', '.join(kinds)}")


def _run(coroutine: Any, registry: Registry) -> Any:
    async def with_close() -> Any:
        try:
            return await coroutine
        finally:
            await registry.close()

    try:
        return asyncio.run(with_close())
    except ConveyorError as exc:
        raise click.ClickException(_masked(str(exc), registry)) from exc


def _masked(message: str, registry: Registry | None = None) -> str:
    """`message` with the passwords of the driver URLs the app names masked. Every message is
    masked where it is made; this is the second line, for one that was not."""
    locations = [os.environ.get(name, "") for name in ("CONVEYOR_DRIVER", *DATABASE_ENV)]
    if registry is not None:
        locations += [registry.default_driver, *(q.driver for q in registry.queues.values())]
    for location in locations:
        message = Location.parse(location).mask(message)
    return message


def _table(header: list[str], rows: list[list[Any]], *, align_right: bool = True) -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        cells = [
            str(v).ljust(w) if i == 0 or not align_right else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())
