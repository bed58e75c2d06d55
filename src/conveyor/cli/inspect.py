"""`conveyor list`, `conveyor job ID`, `conveyor config`: what the app's queues, workers, jobs
and settings look like now."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from conveyor.cli.app import (
    app_option,
    echo_json,
    error_line,
    fail,
    fields,
    iso,
    job_json,
    json_option,
    load_app,
    masked,
    run,
    table,
    unsearched,
    when,
    yes,
)
from conveyor.cli.logs import terminal_text
from conveyor.config import effective
from conveyor.drivers.base import ALIVE_WITHIN
from conveyor.errors import ConveyorError
from conveyor.job import JobInfo, JobState


@click.command(name="list")
@app_option
@json_option
def list_(app: str, as_json: bool) -> None:
    """Show queues (pending, delayed, reserved, succeeded and kept, failed, cancelled, paused,
    oldest pending job's age), workers (processed, ...) and the worker processes alive. A
    backend that cannot be reached has its queues shown as unreachable, the rest as they are,
    and the command exits with status 1."""
    registry = load_app(app)
    seen = run(registry.overview(), registry)
    if seen.down and not seen.counts:
        unreachable(seen.down, shown=False)  # no backend answered: nothing to show
    queues, workers, paused, alive = seen.counts, seen.workers, seen.paused, seen.alive
    if as_json:
        echo_json(
            {
                "queues": {
                    name: {
                        "pending": c.pending,
                        "delayed": c.delayed,
                        "reserved": c.reserved,
                        "succeeded": c.succeeded,
                        "failed": c.failed,
                        "cancelled": c.cancelled,
                        "paused": name in paused,
                        "oldest_pending_age": c.oldest_pending_age,
                    }
                    for name, c in queues.items()
                },
                "unreachable": seen.down,
                "not_created": seen.unmade,
                "delayed_not_counted": sorted(seen.uncounted),
                "workers_not_shared": sorted(seen.unshared),
                "workers": {
                    name: {
                        "processed": c.processed,
                        "succeeded": c.succeeded,
                        "failed": c.failed,
                        "retried": c.retried,
                    }
                    for name, c in workers.items()
                },
                "alive": [
                    {
                        "identity": p.identity,
                        "worker": p.worker,
                        "started_at": iso(p.started_at),
                        "seen_at": iso(p.seen_at),
                    }
                    for p in alive
                ],
            }
        )
        unreachable(seen.down)
        return
    rows: list[list[Any]] = []
    for name, c in queues.items():
        delayed, succeeded = ("?", "?") if name in seen.uncounted else (c.delayed, c.succeeded)
        shown = [c.pending, delayed, c.reserved, succeeded, c.failed, c.cancelled]
        rows.append([name, *shown, yes(name in paused)])
    rows += [[name, *["?"] * 6, "unreachable"] for name in seen.down]
    heads = ["pending", "delayed", "reserved", "succeeded", "failed", "cancelled", "paused"]
    table(["queue", *heads], rows)
    waiting = [[n, age(c.oldest_pending_age)] for n, c in queues.items() if c.pending]
    if waiting:
        click.echo()
        table(["queue", "oldest pending"], waiting)
    click.echo()
    rows = [[n, c.processed, c.succeeded, c.failed, c.retried] for n, c in workers.items()]
    table(["worker", "processed", "succeeded", "failed", "retried"], rows)
    click.echo()
    if not alive:
        click.echo(f"no worker process alive (none heard from in the last {ALIVE_WITHIN:g}s)")
    else:
        rows = [[p.identity, p.worker, when(p.started_at), when(p.seen_at)] for p in alive]
        table(["alive", "worker", "started", "last seen"], rows, align_right=False)
    _partial(seen.uncounted, seen.unshared)
    for why, names in _grouped(seen.unmade).items():
        click.echo(f"\n{_names(set(names))}: {why}")
    unreachable(seen.down)


def _grouped(reasons: dict[str, str]) -> dict[str, list[str]]:
    """Queue -> reason, as reason -> its queues."""
    grouped: dict[str, list[str]] = {}
    for queue, reason in reasons.items():
        grouped.setdefault(reason, []).append(queue)
    return grouped


def _partial(uncounted: set[str], unshared: set[str]) -> None:
    """Say which queues' backends (amqp) leave out what the tables above would show of them:
    their delayed and succeeded jobs (shown ?), or the workers serving them, which only a
    worker's own process sees: without this, `no worker process alive` of a running amqp
    worker."""
    if uncounted:
        click.echo(
            f"\ndelayed, succeeded ?: the backend of {_names(uncounted)} does not count delayed"
            " or succeeded jobs"
        )
    if unshared:
        click.echo(
            f"the backend of {_names(unshared)} keeps worker totals and processes in each"
            " worker's own process: the workers serving them are not counted or shown above"
        )


def _names(queues: set[str]) -> str:
    return f"queue(s) {', '.join(map(repr, sorted(queues)))}"


def unreachable(down: dict[str, str], shown: bool = True, doing: str = "read") -> None:
    """Name each unreachable backend's queues and why, in one line on stderr, and exit with
    status 1 (what was shown leaves out what that backend holds)."""
    if not down:
        return
    why = _grouped(down)
    if not shown:  # nothing answered: the reason alone, as any other command says it
        raise fail("; ".join(why))
    raise fail(
        "; ".join(
            f"could not {doing} queues {', '.join(map(repr, q))}: {r}" for r, q in why.items()
        )
    )


def age(seconds: float | None) -> str:
    """A duration as short text: 4.2s, 3m 05s, 2h 10m, 3d 4h."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


@click.command(name="job")
@click.argument("job_id")
@app_option
@json_option
def job(job_id: str, app: str, as_json: bool) -> None:
    """Show the job JOB_ID: its state, attempts, times, payload, the error of each failed
    attempt with its traceback (the last 20), and its result when kept."""
    registry = load_app(app)

    async def find() -> tuple[JobInfo | None, str]:
        info = await registry.job_info(job_id)
        return info, "" if info is not None else await unsearched(registry)

    info, blind = run(find(), registry)
    if info is None:
        raise fail(
            f"no job {job_id!r}: it was never pushed, or was deleted (purged, or pruned after"
            f" its queue's retention){blind}"
        )
    if as_json:
        echo_json(job_json(info))
        return
    fields(_job_rows(info))
    for item in info.errors:
        click.echo()
        earlier = "earlier " if info.state is JobState.SUCCEEDED else ""
        said = terminal_text(f"{item.error.type}: {item.error.message}")
        click.echo(f"{earlier}attempt {item.attempt} failed at {when(item.at)}: {said}")
        if item.error.traceback:
            click.echo(terminal_text(item.error.traceback.rstrip()))
    if not info.errors and info.error is not None and info.error.traceback:
        click.echo()
        click.echo(terminal_text(info.error.traceback.rstrip()))


_RESERVED_OR_FINISHED = {JobState.RESERVED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def _job_rows(info: JobInfo) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("job", f"{info.id} ({info.name})"),
        ("queue", info.queue),
        ("state", info.state.value + (" (cancel requested)" if info.cancel_requested else "")),
        ("attempts", f"{info.attempt} of {info.max_attempts}"),
        ("priority", info.priority),
        ("payload", info.payload),
        ("created", when(info.created_at)),
        ("due", when(info.available_at)),
    ]
    if info.reserved_at is not None:
        # A pending or delayed job reserved before waits to run again (a retry, a stop's
        # release, `failed retry`): its last reservation is over, so it is not running.
        label = "reserved" if info.state in _RESERVED_OR_FINISHED else "last reserved"
        rows.append((label, f"{when(info.reserved_at)} by {info.worker or '?'}"))
    if info.finished_at is not None:
        rows.append(("finished", when(info.finished_at)))
        if info.reserved_at is not None:
            rows.append(("ran for", age(max(0.0, info.finished_at - info.reserved_at))))
    elif info.reserved_at is not None and info.state is JobState.RESERVED:
        rows.append(("running for", age(max(0.0, time.time() - info.reserved_at))))
    if info.rescued:
        rows.append(("rescued", f"{info.rescued} time(s) from a worker that died"))
    if info.meta:
        rows.append(("meta", json.dumps(info.meta)))
    if info.unique is not None:
        rows.append(("unique", info.unique))
    if info.error is not None:
        rows.append(("error", error_line(info)))
    if info.result is not None:
        rows.append(("result", info.result))
    return rows


@click.command(name="config")
@app_option
@json_option
def config_(app: str, as_json: bool) -> None:
    """Show every setting in force and where it came from (passwords masked)."""
    registry = load_app(app)
    try:
        settings = effective(registry)
    except ConveyorError as exc:
        raise fail(masked(str(exc), registry)) from exc
    if as_json:
        keys = ("scope", "name", "key", "value", "source")
        echo_json([{key: getattr(s, key) for key in keys} for s in settings])
        return
    rows = [[s.scope, s.name, s.key, s.value, s.source] for s in settings]
    table(["scope", "name", "key", "value", "source"], rows, align_right=False)
