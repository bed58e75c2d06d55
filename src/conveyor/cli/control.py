"""`conveyor cancel`, `queue pause|resume`, `schedule list`, `chain`, `migrate`, `backup`,
`restore`, `prune`: job control and upkeep."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from conveyor import backups
from conveyor.chain import ChainInfo
from conveyor.cli.app import (
    app_option,
    echo_json,
    error_line,
    fail,
    fields,
    iso,
    job_json,
    json_option,
    kept,
    load_app,
    progress,
    run,
    table,
    unsearched,
    when,
)
from conveyor.cli.inspect import unreachable
from conveyor.errors import BackendUnavailableError
from conveyor.job import JobInfo, JobState
from conveyor.registry import Registry

#: The drivers that keep a queue's pause (amqp has none).
CONTROLLED = "sqlite, postgres, mysql, redis"


@click.command()
@click.argument("job_id")
@app_option
def cancel(job_id: str, app: str) -> None:
    """Cancel the job JOB_ID: at once if it is pending or delayed; if it is running, its worker
    stops it at the next lease renewal."""
    registry = load_app(app)

    async def cancel_and_look() -> JobInfo | ChainInfo | bool:
        if not await registry.cancel(job_id):
            return await registry.chain_info(job_id) or False  # a chain's id given for a job's
        return await registry.job_info(job_id) or True  # gone since: say it was cancelled

    found = run(cancel_and_look(), registry)
    if isinstance(found, ChainInfo):
        raise fail(_chain_not_job(found))
    if not found:
        raise fail(f"no unfinished job {job_id!r}: it finished, or never existed")
    if isinstance(found, JobInfo) and found.state is JobState.RESERVED:
        click.echo(f"job {job_id} is running: its worker stops it at its next lease renewal")
    else:
        click.echo(f"job {job_id} cancelled")


def _chain_not_job(chain: ChainInfo) -> str:
    """What `cancel` says when given a chain's id: a chain is stopped by its latest page."""
    said = f"{chain.id!r} is a chain, not a job: nothing cancelled"
    if chain.state != "running":
        return f"{said}; it is {chain.state} already"
    return (
        f"{said}; to stop it, cancel its latest page: conveyor cancel {chain.last.id}"
        f" (page {chain.pages - 1}, {chain.last.state.value})"
    )


@click.group()
def queue() -> None:
    """Pause or resume a queue."""


@queue.command(name="pause")
@click.argument("name")
@app_option
def queue_pause(name: str, app: str) -> None:
    """Stop every worker reserving from queue NAME (within one poll interval); pushes still
    succeed and running jobs finish."""
    registry = load_app(app)

    async def pause() -> None:
        await kept(registry, name, "the pause", kinds=CONTROLLED)
        await registry.pause(name)

    run(pause(), registry)
    click.echo(f"queue {name!r} paused")


@queue.command(name="resume")
@click.argument("name")
@app_option
def queue_resume(name: str, app: str) -> None:
    """Let workers reserve from queue NAME again."""
    registry = load_app(app)

    async def resume() -> None:
        await kept(registry, name, "the resume", kinds=CONTROLLED)
        await registry.resume(name)

    run(resume(), registry)
    click.echo(f"queue {name!r} resumed")


@click.group()
def schedule() -> None:
    """Inspect the app's schedules."""


@schedule.command(name="list")
@app_option
@json_option
def schedule_list(app: str, as_json: bool) -> None:
    """Show each schedule, its next three ticks, and the last job it pushed with its state."""
    registry = load_app(app)

    async def gather() -> list[dict[str, Any]]:
        registry.freeze()  # the file's schedules too
        found = []
        for name, item in registry.schedules.items():
            queue = registry.schedule_queue(item)
            tick = None
            if registry.driver_for(queue).unmade() is None:  # else read nothing, create none
                tick = (await (await registry.driver_of(queue)).ticks([name])).get(name)
            job = None if tick is None else await registry.job_info(tick.job_id)
            found.append({
                "schedule": name, "rule": item.rule, "job": item.job, "queue": queue,
                "tz": item.tz, "next_ticks": [t.isoformat() for t in item.next_ticks(3)],
                "next": [t.strftime("%Y-%m-%d %H:%M:%S %Z") for t in item.next_ticks(3)],
                "last_tick": None if tick is None else tick.at,
                "last_job": None if tick is None else tick.job_id,
                "state": None if tick is None else (job.state.value if job else "pruned"),
            })  # fmt: skip
        return found

    found = run(gather(), registry)
    if as_json:
        for item in found:
            item["last_tick"] = iso(item["last_tick"])
            del item["next"]
        echo_json(found)
        return
    rows = [
        [s["schedule"], s["rule"], s["job"], s["queue"], ", ".join(s["next"]),
         "never" if s["last_tick"] is None else when(s["last_tick"], s["tz"]),
         s["state"] or "", s["last_job"] or ""]
        for s in found
    ]  # fmt: skip
    header = ["schedule", "rule", "job", "queue", "next ticks", "last tick", "state", "last job"]
    table(header, rows, align_right=False)


@click.command()
@click.argument("chain_id")
@app_option
@json_option
def chain(chain_id: str, app: str, as_json: bool) -> None:
    """Show how far the cursor-chained job CHAIN_ID got: pages, state, last cursor."""
    registry = load_app(app)

    async def find() -> tuple[ChainInfo | None, str]:
        info = await registry.chain_info(chain_id)
        return info, "" if info is not None else await unsearched(registry)

    info, blind = run(find(), registry)
    if info is None:
        raise fail(f"no chain {chain_id!r}: its first page was never pushed, or was pruned{blind}")
    if as_json:
        echo_json(
            {"chain": info.id, "state": info.state, "pages": info.pages, "cursor": info.cursor,
             "started_at": iso(info.started_at), "last": job_json(info.last)}
        )  # fmt: skip
        return
    rows: list[tuple[str, Any]] = [
        ("chain", info.id),
        ("state", info.state),
        ("pages", info.pages),
        ("last cursor", json.dumps(info.cursor)),
        ("started", "" if info.started_at is None else when(info.started_at)),
        ("last page", f"{info.last.id} ({info.last.state.value}, attempt {info.last.attempt})"),
    ]
    if info.last.error is not None:
        rows.append(("error", error_line(info.last)))
    fields(rows)


@click.command()
@app_option
def migrate(app: str) -> None:
    """Create or update the tables every queue's driver needs (safe to run again)."""
    registry = load_app(app)
    kinds = run(registry.migrate(), registry)
    click.echo(f"schema up to date on {len(kinds)} driver(s): {', '.join(kinds)}")


#: `backup` and `restore`: which store, when the app's queues live in several.
store_option = click.option(
    "--queue", default=None, help="A queue of the store, when the app's queues live in several."
)


@click.command()
@click.argument("path")
@store_option
@app_option
def backup(path: str, queue: str | None, app: str) -> None:
    """Copy the jobs store (SQLite) to the new file PATH while workers run: every push that
    returned before the backup began is in the copy. How to restore it: docs/deploying.md."""
    registry = load_app(app)
    driver = run(backups.backup(registry, path, queue), registry)
    click.echo(f"backed up {driver.kind} {driver.where()} to {path}")


@click.command()
@click.argument("path")
@store_option
@app_option
def restore(path: str, queue: str | None, app: str) -> None:
    """Replace the jobs store (SQLite) with the backup at PATH that `conveyor backup` made, in
    one transaction. Stop every worker first: refused while one is alive. Jobs done since the
    backup run again; jobs running at backup time run again once their lease runs out."""
    registry = load_app(app)
    driver = run(backups.restore(registry, path, queue), registry)
    click.echo(f"restored {driver.kind} {driver.where()} from {path}")


@click.command()
@click.argument("queues", nargs=-1)
@app_option
@json_option
def prune(queues: tuple[str, ...], app: str, as_json: bool) -> None:
    """Delete the finished jobs past their queue's retention now, in each QUEUE (default:
    every queue), as workers do every minute. A queue without retention keeps them. A backend
    that cannot be reached has its queues named, the rest pruned, and the command exits with
    status 1."""
    registry = load_app(app)
    pruned, down = run(_prune(registry, list(queues)), registry)
    if down and not pruned:
        unreachable(down, shown=False)
    if as_json:
        echo_json(pruned)
    else:
        for name, count in pruned.items():
            kept = registry.queue_spec(name).retention is None
            click.echo(f"queue {name!r}: " + ("no retention, nothing pruned" if kept else
                                              f"{count} finished job(s) pruned"))  # fmt: skip
    unreachable(down, doing="prune")


async def _prune(registry: Registry, queues: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """How many jobs each queue had pruned, and why each queue whose backend could not be
    reached was not (its backend's other queues are not asked again). Before, the first such
    queue ended the command: the queues after it, on backends that answered, kept their jobs."""
    registry.freeze()
    names = queues or list(registry.queues)
    for name in names:
        registry.queue_spec(name)  # UnknownQueueError before anything is deleted
    pruned: dict[str, int] = {}
    down: dict[str, str] = {}  # queue -> why
    why: dict[str, str] = {}  # driver -> why
    with progress() as bars:
        task = bars.add_task("pruning", total=len(names))
        for name in names:
            driver = registry.queue_spec(name).driver
            try:
                if driver not in why:
                    pruned[name] = await registry.prune(name)
            except BackendUnavailableError as exc:
                why[driver] = str(exc)
            if driver in why:
                down[name] = why[driver]
            bars.advance(task)
    return pruned, down


@click.command()
@app_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(min=1, max=65535), default=8080, show_default=True)
@click.option("--read-only", is_flag=True, help="Show, but offer no actions.")
@click.option(
    "--token",
    envvar="CONVEYOR_DASHBOARD_TOKEN",
    default=None,
    help="Ask every request for this token (or set CONVEYOR_DASHBOARD_TOKEN).",
)
@click.option(
    "--basic-auth",
    envvar="CONVEYOR_DASHBOARD_BASIC_AUTH",
    default=None,
    metavar="USER:PASSWORD",
    help="Ask for basic auth (or set CONVEYOR_DASHBOARD_BASIC_AUTH: an argument shows in ps).",
)
def dashboard(
    app: str, host: str, port: int, read_only: bool, token: str | None, basic_auth: str | None
) -> None:
    """Serve the web dashboard (needs conveyor[dashboard]) until interrupted."""
    token = _credential(token, "--token", "CONVEYOR_DASHBOARD_TOKEN")
    basic_auth = _credential(basic_auth, "--basic-auth", "CONVEYOR_DASHBOARD_BASIC_AUTH")
    auth = None
    if basic_auth is not None:
        user, colon, password = basic_auth.partition(":")
        if not colon or not user or not password:
            raise click.BadParameter("write USER:PASSWORD, both given", param_hint="--basic-auth")
        auth = (user, password)
    registry = load_app(app, output=False)
    from conveyor.dashboard.app import serve

    run(serve(registry, host=host, port=port, read_only=read_only, token=token,
              basic_auth=auth), registry)  # fmt: skip


def _credential(value: str | None, option: str, envvar: str) -> str | None:
    """`value`, refused when empty or blank, or when it is missing because `envvar` is set but empty
    (click reads an empty variable as unset: the dashboard would have served with no login,
    as a deploy whose secret did not reach the environment would)."""
    if (value is not None and not value.strip()) or (
        value is None and os.environ.get(envvar) == ""
    ):
        raise click.BadParameter(
            f"it is empty (or only spaces): give the secret, or unset {envvar} and leave out"
            f" {option} to serve with no login",
            param_hint=f"{option} (or {envvar})",
        )
    return value
