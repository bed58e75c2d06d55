"""`conveyor push QUEUE JOB --payload JSON` (one job) or `--file jobs.jsonl` (one job per line,
pushed in batches of 1000 with a progress bar)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from conveyor.cli.app import (
    app_option,
    echo_json,
    fail,
    json_option,
    kept,
    load_app,
    progress,
    run,
)
from conveyor.duration import FORMS, parse, seconds, span
from conveyor.errors import ConfigError, ConveyorError, PayloadError
from conveyor.options import MAX_PRIORITY, MAX_RETRY, MIN_PRIORITY, check_unique
from conveyor.registry import Registry

#: Lines of a --file pushed per push_many (one round trip each, all or none stored).
BATCH = 1000


class DurationType(click.ParamType[float]):
    """Seconds, or text such as 500ms, 30s, 5m, 1h30m: more than 0 (or 0 too, with `zero_ok`)
    and at most 100 years, or a usage error naming the option."""

    name = "duration"

    def __init__(self, *, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(value) if isinstance(value, float | int) else parse(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration: expected {FORMS}", param, ctx)
        try:
            return seconds(number, "it", zero_ok=self.zero_ok)
        except ConfigError:
            self.fail(f"it must be {span(self.zero_ok)}, not {value!r}", param, ctx)


DELAY = DurationType(zero_ok=True)
DURATION = DurationType()


def _unique(ctx: click.Context, param: click.Parameter, key: str | None) -> str | None:
    """--unique as given, once it is a key every driver stores (a usage error otherwise)."""
    try:
        check_unique(key)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    return key


@click.command()
@click.argument("queue")
@click.argument("job_name", metavar="JOB")
@app_option
@click.option("--payload", metavar="JSON", default=None, help="The job's payload, as JSON.")
@click.option(
    "--file",
    "path",
    metavar="PATH",
    default=None,
    help="Push one job per line of PATH (JSON lines; - reads stdin), in batches of 1000.",
)
@click.option("--delay", type=DELAY, default=None, help="Run it this late: 5s, 10m, 1h.")
@click.option(
    "--unique",
    metavar="KEY",
    default=None,
    callback=_unique,
    help="Not again while one with KEY is unfinished: print its id, and say so on stderr (not"
    " with --file).",
)
@click.option(
    "--priority",
    type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
    default=None,
    help="Higher runs first.",
)
@click.option(
    "--retry", type=click.IntRange(0, MAX_RETRY), default=None, help="Retries after the first."
)
@click.option("--timeout", type=DURATION, default=None, help="Stop an attempt after: 30s, 5m.")
@click.option(
    "--meta", multiple=True, metavar="KEY=VALUE", help="Metadata (repeatable, each key once)."
)
@json_option
def push(
    queue: str,
    job_name: str,
    app: str,
    payload: str | None,
    path: str | None,
    delay: float | None,
    unique: str | None,
    priority: int | None,
    retry: int | None,
    timeout: float | None,
    meta: tuple[str, ...],
    as_json: bool,
) -> None:
    """Push the job JOB to QUEUE and print its id: its payload from --payload, or one job per
    line of --file."""
    if (payload is None) == (path is None):
        raise click.UsageError("give either --payload JSON or --file PATH")
    if path is not None and unique is not None:
        raise click.UsageError("--unique is for one job: it cannot go with --file")
    options: dict[str, Any] = {
        "delay": delay, "priority": priority, "retry": retry, "timeout": timeout,
        "meta": _meta(meta) or None,
    }  # fmt: skip
    registry = load_app(app)
    if payload is not None:
        try:
            value = _json(payload)
        except ValueError as exc:
            raise fail(f"--payload is not JSON: {exc}") from exc

        async def push_one() -> tuple[str, str]:
            await kept(registry, queue, "a job pushed by conveyor push", inline=True)
            read = _read_as_json(registry, job_name, value)
            new = registry.new_job(queue, job_name, read, unique=unique, **options)
            return await registry.store(new), new.id

        with _handlers_print_to_stderr():
            job_id, new_id = run(push_one(), registry)
        if job_id != new_id:  # on stderr: stdout holds the id (or the JSON) alone
            click.echo(
                f"stored nothing: unfinished job {job_id} holds --unique {unique!r}", err=True
            )
        if as_json:  # stored: false when an unfinished job held the --unique key
            echo_json({"id": job_id, "queue": queue, "job": job_name, "stored": job_id == new_id})
        else:
            click.echo(job_id)
        return
    assert path is not None
    try:
        opened = click.open_file(path, encoding="utf-8-sig")  # a BOM (Notepad's) is skipped
    except OSError as exc:
        message = f"cannot read {path!r}: {exc.strerror}"
        raise click.BadParameter(message, param_hint="--file") from exc
    ids: list[str] = []  # filled as batches are stored, and read if Ctrl-C stops it
    sent: list[tuple[int, Any]] = []  # the batch on its way to the backend
    with opened as lines:
        size = os.fstat(lines.fileno()).st_size if path != "-" else None
        pushing = _push_file(registry, queue, job_name, lines, size or None, options, ids, sent)
        try:
            with _handlers_print_to_stderr():
                run(pushing, registry)
        except KeyboardInterrupt:  # say what is stored, before click's "Aborted!"
            click.echo(_interrupted(len(ids), sent), err=True)
            raise
        finally:  # stopped by an error or Ctrl-C too: the ids of the jobs stored before it
            if as_json:
                echo_json({"queue": queue, "job": job_name, "ids": ids})
    if not as_json:
        click.echo(f"{len(ids)} job(s) {job_name!r} pushed to queue {queue!r}")


def _handlers_print_to_stderr() -> contextlib.AbstractContextManager[object]:
    """Around a push: what a handler prints goes to stderr (a sync:// queue runs its job inside
    the push), so stdout holds the id or the JSON document alone."""
    return contextlib.redirect_stdout(sys.stderr)


def _meta(pairs: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sign, value = pair.partition("=")
        if not sign or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        if key in found:  # one value would be dropped without a word
            raise click.BadParameter(
                f"{key!r} is given twice: give each key once", param_hint="--meta"
            )
        found[key] = value
    return found


async def _push_file(
    registry: Registry,
    queue: str,
    job_name: str,
    lines: IO[str],
    size: int | None,
    options: dict[str, Any],
    ids: list[str],
    sent: list[tuple[int, Any]],
) -> None:
    """Push a job per line, a batch at a time, adding their ids to `ids`, with the batch under
    way in `sent`; an error (a bad line, a backend gone) names the line where it can and says
    how many jobs were pushed before it."""
    await kept(registry, queue, "a job pushed by conveyor push", inline=True)
    with progress() as bars:
        task = bars.add_task(f"pushing {job_name} to {queue}", total=size)
        try:
            for batch, read in _batches(lines):
                sent[:] = batch
                ids += await _push_batch(registry, queue, job_name, batch, options)
                sent.clear()
                bars.advance(task, read)
        except ConveyorError as exc:
            raise ConveyorError(
                f"{exc}; {len(ids)} job(s) from the lines before its batch were pushed, none "
                "from it or after"
            ) from exc


def _interrupted(pushed: int, sent: list[tuple[int, Any]]) -> str:
    """What a push --file stopped by Ctrl-C had stored."""
    line = f"interrupted: {pushed} job(s) pushed"
    if not sent:
        return line + ", none from the lines after them"
    first, last = sent[0][0], sent[-1][0]
    lines = f"line {first} was" if first == last else f"lines {first} to {last} were"
    return (
        f"{line}; {lines} on the way and may be stored too (all or none): look with conveyor"
        " list before pushing them again"
    )


async def _push_batch(
    registry: Registry,
    queue: str,
    job_name: str,
    batch: list[tuple[int, Any]],
    options: dict[str, Any],
) -> list[str]:
    """Push one batch, all or none; a payload the job refuses is named by its line."""
    try:
        payloads = [_read_as_json(registry, job_name, payload) for _, payload in batch]
        return await registry.push_many(queue, job_name, payloads, **options)
    except PayloadError as exc:
        raise ConveyorError(_culprit(registry, job_name, batch, exc)) from exc


def _read_as_json(registry: Registry, job_name: str, payload: Any) -> Any:
    """The payload as a worker will read it (from JSON, as it was given: a strict model takes
    a time as text only there); as given for a job the push will say is unknown."""
    spec = registry.jobs.get(job_name)
    return payload if spec is None else spec.codec.from_json(payload)


def _batches(lines: IO[str]) -> Iterator[tuple[list[tuple[int, Any]], int]]:
    """Batches of (line number, payload), each with the characters it read; blank lines are
    skipped, a line that is not JSON is an error naming it."""
    batch: list[tuple[int, Any]] = []
    read = 0
    for number, line in _numbered(lines):
        read += len(line)
        if not line.strip():
            continue
        try:
            batch.append((number, _json(line)))
        except ValueError as exc:
            raise ConveyorError(f"line {number} is not JSON: {exc}") from exc
        if len(batch) == BATCH:
            yield batch, read
            batch, read = [], 0
    if batch:
        yield batch, read


def _json(text: str) -> Any:
    """`text` read as JSON; ValueError also when it nests deeper than Python's json reads
    (which raises RecursionError, caught by nobody)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(
            "its arrays or objects nest too deeply to read (about 1,000 levels; 10,000 from"
            " Python 3.13 on): flatten it"
        ) from None


def _numbered(lines: IO[str]) -> Iterator[tuple[int, str]]:
    """The lines with their numbers; ConveyorError if the file is not UTF-8 text."""
    try:
        yield from enumerate(lines, start=1)
    except UnicodeDecodeError as exc:
        raise ConveyorError(f"--file is not UTF-8 text ({exc.reason}): save it as UTF-8") from exc


def _culprit(
    registry: Registry, job_name: str, batch: list[tuple[int, Any]], error: PayloadError
) -> str:
    """The first line of `batch` whose payload the job refuses, with why."""
    codec = registry.jobs[job_name].codec
    for number, payload in batch:
        try:
            codec.encode(codec.from_json(payload))
        except PayloadError as exc:
            return f"line {number}: {exc}"
    return str(error)
