"""`conveyor failed list|retry|purge QUEUE`: a queue's failed storage."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import click

from conveyor.cli.app import (
    app_option,
    echo_json,
    error_line,
    fail,
    job_json,
    json_option,
    jsonable,
    load_app,
    progress,
    run,
    table,
)
from conveyor.errors import ConveyorError
from conveyor.job import JobInfo, JobState
from conveyor.registry import Registry
from conveyor.spec import check_name

#: Ids named on the command line are retried this many to a call, the progress bar between.
BATCH = 1000


@click.group()
def failed() -> None:
    """Inspect, retry or purge the jobs in a queue's failed storage."""


#: The most --limit and --offset take: far past any queue, and within every backend's integers
#: (SQLite's and PostgreSQL's are 64-bit: a larger number was an OverflowError).
MOST = 10**12


def _job_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--name as given, once it is a name a job can have (a typo such as a space would list,
    retry or purge nothing, without a word)."""
    if value is not None:
        try:
            check_name("job", value)
        except ConveyorError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@failed.command(name="list")
@click.argument("queue")
@app_option
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=MOST),
    default=50,
    show_default=True,
    help="How many to show.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0, max=MOST),
    default=0,
    show_default=True,
    help="How many to skip.",
)
@click.option(
    "--name",
    default=None,
    callback=_job_name,
    help="Only the jobs of this job name; one the app does not register that finds none is an"
    " error.",
)
@click.option(
    "--after",
    default=None,
    metavar="ID",
    help="Only the jobs after this id (the last one listed): the next page, which skips"
    " nothing though the jobs listed before were retried or purged since (--offset would).",
)
@json_option
def failed_list(
    queue: str,
    app: str,
    limit: int,
    offset: int,
    name: str | None,
    after: str | None,
    as_json: bool,
) -> None:
    """Show QUEUE's failed jobs, oldest first (by id), with the error that failed each."""
    registry = load_app(app)
    rows: list[list[Any]] = []
    started = False

    def show(page: list[JobInfo]) -> None:
        nonlocal started
        if not as_json:
            rows.extend([job.id, job.name, job.attempt, error_line(job)] for job in page)
        elif page:  # the document `echo_json` prints, a page at a time
            shown = [job_json(job, history=False) for job in page]  # `conveyor job ID`: errors
            text = json.dumps(shown, default=jsonable, indent=2)[1:-2]  # no "[", "\n]"
            click.echo(("," if started else "[") + text, nl=False)
            started = True

    run(_pages(registry, queue, limit, offset, name, after, show), registry)
    if not (rows or started) and after is None and offset == 0:
        _known(registry, queue, name, 0)
    if as_json:
        click.echo("\n]" if started else "[]")
    else:
        table(["id", "job", "attempts", "error"], rows)


#: How many failed jobs `failed list` reads at a time: a --limit of a million never holds a
#: million jobs (payloads, errors) in memory at once.
LIST_PAGE = 1000


async def _pages(
    registry: Registry,
    queue: str,
    limit: int,
    offset: int,
    name: str | None,
    after: str | None,
    show: Callable[[list[JobInfo]], None],
) -> None:
    """Hand `show` the failed jobs `failed list` prints, LIST_PAGE at a time, each page after
    the last id of the one before (the offset skipped once, by the first)."""
    while limit > 0:
        page = await registry.list_jobs(
            queue, JobState.FAILED, limit=min(limit, LIST_PAGE), offset=offset, name=name,
            after=after,
        )  # fmt: skip
        show(page)
        if len(page) < min(limit, LIST_PAGE):
            return
        limit, offset, after = limit - len(page), 0, page[-1].id


NAME_HELP = (
    "Only the failed jobs of this job name (not with IDS); one the app does not register that"
    " finds none is an error."
)


@failed.command(name="retry")
@click.argument("queue")
@click.argument("ids", nargs=-1)
@app_option
@click.option("--name", default=None, callback=_job_name, help=NAME_HELP)
@json_option
def failed_retry(
    queue: str, ids: tuple[str, ...], app: str, name: str | None, as_json: bool
) -> None:
    """Move QUEUE's failed jobs (all, only IDS, or only those of --name) back to pending,
    attempts reset. An ID that is no failed job of QUEUE makes the exit status 1, once the
    others moved."""
    _one_of(ids, name)
    registry = load_app(app)
    moved = _interruptible(_retry(registry, queue, list(ids), name), registry, "retried", "pending")
    if as_json:
        echo_json({"queue": queue, "name": name, "retried": moved})
    else:
        click.echo(f"{moved} failed job(s) of {_which(queue, name)} moved back to pending")
    left = "" if ids else run(_left(registry, queue, name), registry)
    if left:
        click.echo(f"{left} still failed: {HELD}", err=True)
    _all_found(queue, ids, moved, f", or {HELD}")
    _known(registry, queue, name, moved or len(left))


def _interruptible(work: Coroutine[Any, Any, int], registry: Registry, done: str, now: str) -> int:
    """`run(work)`; stopped by Ctrl-C, first says what became of the jobs (click then says
    "Aborted!"): they go in batches, each all or none, so a second run goes on."""
    try:
        return run(work, registry)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: the failed jobs are {done} in batches, each all or none; those"
            f" {done} so far are {now}, the rest still failed: run the command again to go on",
            err=True,
        )
        raise


def _one_of(ids: tuple[str, ...], name: str | None) -> None:
    """A usage error when both IDS and --name are given: each names which jobs."""
    if ids and name is not None:
        raise click.UsageError(
            "give IDS or --name, not both: IDS names those jobs, --name every failed job of"
            " that job name"
        )


def _known(registry: Registry, queue: str, name: str | None, found: int) -> None:
    """Exit status 1 when --name found no failed job and the app registers no job of that name
    either: a misspelt name would list, retry or purge nothing, without a word. (An unknown
    name that finds jobs is fine: a job the app registered once, in an older deploy.)"""
    if name is None or found or name in registry.jobs:
        return
    registered = ", ".join(map(repr, sorted(registry.jobs))) or "none"
    raise fail(
        f"no failed job of {_which(queue, name)}, and the app registers no job named {name!r}"
        f" (its jobs: {registered}): check the name"
    )


def _which(queue: str, name: str | None) -> str:
    """The jobs a command acted on, for its message: "queue 'mail'", or with a job name
    "name 'mail.send' in queue 'mail'"."""
    return f"queue {queue!r}" if name is None else f"name {name!r} in queue {queue!r}"


async def _left(registry: Registry, queue: str, name: str | None) -> str:
    """The failed jobs `queue` has left ("3 job(s) of queue 'mail'"; of a job name, not
    counted: that would read them all), or "" when it has none."""
    if name is None:
        left = (await registry.queue_info())[queue].failed
        return f"{left} job(s) of queue {queue!r}" if left > 0 else ""
    found = await registry.list_jobs(queue, JobState.FAILED, limit=1, name=name)
    return f"job(s) of {_which(queue, name)}" if found else ""


#: Why `retry_failed` leaves a failed job failed (on every driver with unique keys).
HELD = (
    "an unfinished job of their name holds their unique key (a failed job whose key is held"
    " stays failed: retry it once that job has finished)"
)


def _all_found(queue: str, ids: tuple[str, ...], done: int, more: str = "") -> None:
    """Exit status 1 naming how many of `ids` were no failed job of `queue`, if any were;
    `more` says what else may have left them as they were."""
    missed = len(set(ids)) - done
    if ids and missed > 0:
        raise fail(
            f"{missed} of the {len(set(ids))} id(s) named are not failed jobs of queue {queue!r}"
            f" (see them with: conveyor failed list {queue}){more}"
        )


async def _retry(registry: Registry, queue: str, ids: list[str], name: str | None) -> int:
    if not ids:
        with progress() as bars:
            bars.add_task(f"retrying the failed jobs of {_which(queue, name)}", total=None)
            return await registry.retry_failed(queue, name=name)
    moved = 0
    with progress() as bars:
        task = bars.add_task(f"retrying failed jobs of {queue}", total=len(ids))
        for start in range(0, len(ids), BATCH):
            part = ids[start : start + BATCH]
            moved += await registry.retry_failed(queue, part)
            bars.advance(task, len(part))
    return moved


@failed.command(name="purge")
@click.argument("queue")
@click.argument("ids", nargs=-1)
@app_option
@click.option("--name", default=None, callback=_job_name, help=NAME_HELP)
@click.option("--yes", is_flag=True, help="Purge all of them without asking.")
@json_option
def failed_purge(
    queue: str, ids: tuple[str, ...], app: str, name: str | None, yes: bool, as_json: bool
) -> None:
    """Delete QUEUE's failed jobs (all, only IDS, or only those of --name) for good. An ID
    that is no failed job of QUEUE makes the exit status 1, once the others are deleted."""
    _one_of(ids, name)
    registry = load_app(app)  # an app that does not load, or a queue it lacks: before asking
    registry.freeze()
    registry.queue_spec(queue)
    if not ids and not yes:  # with --json, asked on stderr: stdout holds the JSON alone
        click.confirm(f"Delete every failed job of {_which(queue, name)}?", abort=True, err=as_json)
    purging = registry.purge(queue, JobState.FAILED, list(ids) or None, name=name)
    deleted = _interruptible(purging, registry, "deleted", "gone")
    if as_json:
        echo_json({"queue": queue, "name": name, "purged": deleted})
    else:
        click.echo(f"{deleted} failed job(s) of {_which(queue, name)} deleted")
    _all_found(queue, ids, deleted)
    _known(registry, queue, name, deleted)
