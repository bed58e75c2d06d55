"""`conveyor work WORKER [WORKER ...]`: run workers in this process until a signal."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import sys
from types import FrameType

import click

from conveyor import health
from conveyor.cli.app import app_option, fail, load_app, run
from conveyor.collector import tune_for_work
from conveyor.loop import LOOPS
from conveyor.registry import Registry
from conveyor.spec import MAX_CONCURRENCY, WorkerSpec
from conveyor.stop import Stopped
from conveyor.worker import Worker, log


@click.command()
@click.argument("workers", nargs=-1)
@app_option
@click.option(
    "--burst",
    is_flag=True,
    help="Stop once the workers' queues hold no pending, delayed or reserved job (a delayed "
    "job is waited for).",
)
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
    help="Do not push the ticks of the schedules of these workers' queues.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=None,
    metavar="N",
    help="Run up to N jobs at once in each worker [default: the worker's setting].",
)
@click.option(
    "--queues",
    default=None,
    metavar="A,B",
    help="Work these registered queues, comma-separated [default: those naming the worker].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (needs conveyor[metrics]).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Where --metrics-port listens."
)
@click.option(
    "--health-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    metavar="PORT",
    help="Answer probes on http://HOST:PORT/health (200 while this process answers) and "
    "/ready (200 while its workers work, else 503).",
)
@click.option(
    "--health-host", default="127.0.0.1", show_default=True, help="Where --health-port listens."
)
@click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default=LOOPS[0],
    show_default=True,
    help='The event loop: uvloop is faster (needs pip install "conveyor[uvloop]").',
)
def work(
    workers: tuple[str, ...],
    app: str,
    burst: bool,
    startup_timeout: float | None,
    no_schedules: bool,
    concurrency: int | None,
    queues: str | None,
    metrics_port: int | None,
    metrics_host: str,
    health_port: int | None,
    health_host: str,
    loop: str,
) -> None:
    """Run each WORKER, all in this process, until SIGTERM/SIGINT (a second signal stops at
    once). Without WORKER: the default queue's worker when the app declares no queue, else its
    only worker. It also pushes the ticks of the schedules of its queues, unless
    --no-schedules or --burst. Exit status 1, with a line naming the jobs, when a stop cut
    running jobs short or could not write a job's outcome."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        # What handlers print reaches a pipe (a container's log collector) line by line,
        # not a block at a time (Python's default off a terminal): at exit, or lost to SIGKILL.
        sys.stdout.reconfigure(line_buffering=True)
    if os.getpid() == 1:
        log.warning(
            "running as PID 1 (a container's first process): processes your handlers leave"
            " behind (`cmd &`, a daemon) are never reaped and stay zombies; run conveyor under"
            " an init: tini, docker run --init (docs/deploying.md)"
        )
    # Until the workers' own handlers are in place: as PID 1 (a container's process) the
    # kernel drops a signal nothing handles, so a SIGTERM while the app loads went unseen.
    signal.signal(signal.SIGTERM, _not_started)
    early: list[signal.Signals] = []  # a SIGTERM after that stops the workers as they start
    try:
        registry = load_app(app, output=False)  # a worker's app logs where it chose
    except _NotStarted:
        log.info("SIGTERM received while loading the app: not started")
        return
    finally:
        signal.signal(signal.SIGTERM, lambda signum, _: early.append(signal.SIGTERM))
    chosen = [q.strip() for q in queues.split(",") if q.strip()] if queues is not None else None
    if chosen == []:
        raise click.BadParameter("name at least one queue", param_hint="--queues")

    async def work_all() -> list[tuple[Worker, Stopped]]:
        names = list(dict.fromkeys(workers)) or [registry.default_worker()]
        runners = [
            Worker(
                registry,
                name,
                burst=burst,
                startup_timeout=startup_timeout,
                schedules=not no_schedules,
                spec=_spec(registry, name, concurrency),
                queues=chosen,
            )
            for name in names
        ]
        servers = []
        try:
            if metrics_port is not None:
                from conveyor import metrics

                servers.append(await metrics.serve(registry, metrics_port, metrics_host))
            if health_port is not None:
                servers.append(await health.serve(runners, health_port, health_host))
            for name in names:  # once nothing of the command line can fail any more
                log.info("worker %s settings: %s", name, _provenance(registry, name, concurrency))
            return list(zip(runners, await _run_together(runners, early), strict=True))
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()

    tune_for_work()  # see conveyor/collector.py
    results = run(work_all(), registry, loop)
    cut = [s.summary(w.name, w.spec.stop_timeout) for w, s in results if not s.clean]
    if cut:
        raise fail("; ".join(cut))


def _spec(registry: Registry, name: str, concurrency: int | None) -> WorkerSpec:
    registry.freeze()  # the worker as the file and the environment set it up
    spec = registry.worker_spec(name)
    return spec if concurrency is None else dataclasses.replace(spec, concurrency=concurrency)


def _provenance(registry: Registry, name: str, concurrency: int | None) -> str:
    """'concurrency 16 (env CONVEYOR_WORKER_MAIN_CONCURRENCY), lease 30s (default), ...': the
    worker's settings in force and where each came from, --concurrency included."""
    shown = {s.key: (s.value, s.source) for s in registry.settings if s.scope == "worker"
             and s.name == name}  # fmt: skip
    if concurrency is not None:
        shown["concurrency"] = (str(concurrency), "flag --concurrency")
    return ", ".join(f"{key} {value} ({source})" for key, (value, source) in shown.items())


class _NotStarted(BaseException):
    """SIGTERM came while the app loaded (a BaseException: the app's `except Exception` and
    load_app's own handling let it through)."""


def _not_started(signum: int, frame: FrameType | None) -> None:
    raise _NotStarted


async def _run_together(runners: list[Worker], early: list[signal.Signals]) -> list[Stopped]:
    """Run the workers side by side, one signal handler stopping them all; a worker that
    fails stops the others, and its error is raised once they stopped. A signal in `early`
    (it came before the handler) stops them at once as they start."""
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        log.info("%s received: %s", signal.Signals(signum).name, "stopping now" if stopping else
                 "stopping after running jobs (send again to stop at once)")  # fmt: skip
        for runner in runners:
            runner.stop(now=stopping)
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    for signum in early[:1]:
        on_signal(signum)
    try:
        tasks = [asyncio.ensure_future(runner.run()) for runner in runners]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(task.done() and task.exception() for task in tasks):
            for runner in runners:
                runner.stop()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    errors = [outcome for outcome in done if isinstance(outcome, BaseException)]
    if errors:
        raise errors[0]
    return [outcome for outcome in done if isinstance(outcome, Stopped)]
