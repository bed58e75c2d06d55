"""`benchmarks/soak.py --minutes M`: a `conveyor work` process soaked for M minutes, with
disruptions. See soak.py's docstring and docs/benchmarks.md.

The worker is the real command line (`conveyor work w --app soak_app:registry`) in a
subprocess; this process pushes from `--threads` threads with `registry.blocking.push` at
`--rate` jobs/s (the mix of soak_app.kind). Every `--every` seconds it samples the worker
process (RSS, fds, threads from /proc), what its `probe` job reports from inside (asyncio
tasks, the length of every dict, list, set and deque the worker and its drivers hold), the
server's connections of this run (by its own names, or its own database on MariaDB), conveyor's
own tables or keys, and the SQLite write-ahead log. With `--disrupt`, every third sample in
turn: SIGTERM and a new worker, SIGKILL and a new worker, this run's server connections
dropped (postgres pg_terminate_backend, MariaDB KILL, redis CLIENT KILL, each only on
connections of this run; not on amqp, whose rabbitmqctl the run only reads). At the end it
waits for the queue to drain and checks that every pushed job was accounted for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

HERE = Path(__file__).resolve().parent
CONVEYOR = Path(sys.executable).parent / "conveyor"
#: MariaDB's database of the run: the processlist is counted, and killed, by it.
MYSQL_DB = "soak_conveyor"


#: `--driver` by name: the run's own prefix on each server.
SHORT = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix=soak_",
    "mysql": f"mysql://root@127.0.0.1:3306/{MYSQL_DB}?prefix=soak_",
    "redis": "redis://127.0.0.1:6379/0?prefix=soak:",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/?prefix=soak.",
}


def short_url(driver: str) -> tuple[str, str]:
    """The driver URL `--driver` names (sqlite: a file of its own), and its prefix."""
    if driver == "sqlite":
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-{os.getpid()}.db"
        return f"sqlite:///{path}?prefix=soak_", "soak_"
    url = SHORT.get(driver, driver)
    query = dict(parse_qsl(urlsplit(url).query))
    return url, query.get("prefix", "")


def scheme(driver: str) -> str:
    return urlsplit(driver).scheme.split("+")[0]


# -- the worker process -----------------------------------------------------------------------


class WorkerProcess:
    """The `conveyor work` subprocess, restarted after each stop or kill."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        command = [str(CONVEYOR), "work", "w", "--app", "soak_app:registry"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, env=self.env, cwd=HERE, stdout=out, stderr=out)
        self.starts += 1

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit; its status."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def figures(self) -> dict[str, float]:
        return figures(self.pid)


def figures(pid: int | str, suffix: str = "") -> dict[str, float]:
    """Process `pid`'s RSS (MB), open fds and threads, from /proc."""
    proc = Path(f"/proc/{pid}")
    status = (proc / "status").read_text()
    rss = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
    found = {"rss_mb": rss / 1024, "fds": len(os.listdir(proc / "fd"))}
    found["threads"] = len(os.listdir(proc / "task"))
    return {f"{key}{suffix}": value for key, value in found.items()}


# -- the server side ---------------------------------------------------------------------------


async def server_side(driver: str, prefix: str, drop: bool = False) -> dict[str, int]:
    """This run's connections on the server (dropped first if `drop`) and the rows or keys of
    conveyor's own tables under `prefix`."""
    kind = scheme(driver)
    if kind in ("postgresql", "postgres"):
        return await _postgres(driver, prefix, drop)
    if kind in ("mysql", "mariadb"):
        return await _mysql(driver, prefix, drop)
    if kind == "redis":
        return await _redis(driver, prefix, drop)
    if kind == "amqp":
        return await _amqp()
    if kind == "sqlite":
        return _sqlite(driver, prefix)
    return {}


def _sqlite(driver: str, prefix: str) -> dict[str, int]:
    import sqlite3

    path = "/" + urlsplit(driver).path.lstrip("/")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {t: db.execute(f"SELECT count(*) FROM {prefix}{t}").fetchone()[0] for t in TABLES}


TABLES = ("jobs", "workers", "worker_processes", "finished_counts", "schedule_ticks")


async def _postgres(driver: str, prefix: str, drop: bool) -> dict[str, int]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(driver.split("?")[0], autocommit=True) as c:
        if drop:
            sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            await c.execute(sql + " WHERE application_name = 'soak_worker'")
        sql = "SELECT application_name, count(*) FROM pg_stat_activity"
        sql += " WHERE application_name LIKE 'soak_%%' GROUP BY 1"
        rows = await (await c.execute(sql)).fetchall()
        figures = {f"conn_{name.removeprefix('soak_')}": n for name, n in rows}
        for table in TABLES:
            row = await (await c.execute(f"SELECT count(*) FROM {prefix}{table}")).fetchone()
            figures[table] = row[0] if row else 0
    return figures


async def _mysql(driver: str, prefix: str, drop: bool) -> dict[str, int]:
    from raw import mysql_connection

    connection = await mysql_connection(driver)
    try:
        async with connection.cursor() as cursor:
            sql = "SELECT id FROM information_schema.processlist"
            await cursor.execute(sql + " WHERE db = %s AND id <> CONNECTION_ID()", (MYSQL_DB,))
            ids = [row[0] for row in await cursor.fetchall()]
            for one in ids if drop else []:
                with contextlib.suppress(Exception):  # gone meanwhile
                    await cursor.execute(f"KILL {int(one)}")
            figures = {"conn_all": len(ids)}
            for table in TABLES:
                await cursor.execute(f"SELECT count(*) FROM {prefix}{table}")
                figures[table] = (await cursor.fetchone())[0]
    finally:
        await connection.ensure_closed()
    return figures


async def _redis(driver: str, prefix: str, drop: bool) -> dict[str, int]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(driver.split("?")[0])
    try:
        clients = [c for c in await client.client_list() if c["name"].startswith("soak_")]
        for one in clients if drop else []:
            if one["name"] == "soak_worker":
                await client.execute_command("CLIENT", "KILL", "ID", one["id"])
        figures = {f"conn_{r}": sum(c["name"] == f"soak_{r}" for c in clients) for r in ROLES}
        keys = jobs = 0
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            keys += 1
            jobs += b":job:" in key
        figures.update(keys_other=keys - jobs, keys_job=jobs)
    finally:
        await client.aclose()
    return figures


ROLES = ("worker", "pusher")


async def _amqp() -> dict[str, int]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "client_properties", "channels"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    figures = {}
    for role in ROLES:
        lines = [x for x in out.stdout.splitlines() if f'"soak_{role}"' in x]
        figures[f"conn_{role}"] = len(lines)
        figures[f"chan_{role}"] = sum(int(x.split()[-1]) for x in lines)
    return figures


# -- the run -----------------------------------------------------------------------------------


class Pusher:
    """`threads` threads pushing the soak mix with `registry.blocking.push` until stopped."""

    def __init__(self, registry: Any, rate: float, threads: int, unique: bool) -> None:
        self.registry, self.rate, self.unique = registry, rate, unique
        self.pushed = 0
        self.unique_ids: set[str] = set()
        self.looked_up: list[str] = []
        self.uniques = 0
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._push, args=(i,)) for i in range(threads)]
        self.errors: list[str] = []

    def _push(self, offset: int) -> None:
        from soak_app import Tick, kind

        began, n = time.monotonic(), offset + 1  # n 0 is the schedule's
        while not self.stopped.is_set():
            chosen: dict[str, Any] = {}
            what = kind(n)
            if what == "timeout":
                chosen["retry"] = 0
            elif what == "delayed":
                chosen["delay"] = 0.5
            elif what == "unique" and self.unique:
                chosen["unique"] = f"u{n % 50}"
            try:
                self.uniques += what == "unique"
                name = "plain" if what == "plain" else "tick"
                job_id = self.registry.blocking.push("soak", name, Tick(n), **chosen)
            except Exception as exc:  # the backend dropped: said, counted as not pushed
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(0.2)
                continue
            with self.lock:
                self.pushed += 1
                if what == "unique":  # may return the id of a job pushed before
                    self.unique_ids.add(job_id)
                elif self.pushed % 64 == 0:  # a sample to look up: all of them would grow
                    self.looked_up.append(job_id)
                ahead = self.pushed / self.rate - (time.monotonic() - began)
            n += len(self.threads)
            if ahead > 0:
                time.sleep(ahead)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


def last_probe(path: Path) -> dict[str, int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["sizes"] if lines else {}


def wal_mb(driver: str) -> dict[str, float]:
    if scheme(driver) != "sqlite":
        return {}
    wal = Path(urlsplit(driver).path + "-wal")
    return {"wal_mb": wal.stat().st_size / 2**20 if wal.exists() else 0.0}


def run(args: argparse.Namespace, driver: str, prefix: str) -> None:
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-{os.getpid()}"
    scratch.mkdir()
    probe_file, log = scratch / "probe.jsonl", scratch / "worker.log"
    sys.path.insert(0, str(HERE))
    env = {**os.environ, "SOAK_DRIVER": driver, "SOAK_PROBE": str(probe_file)}
    env["SOAK_RETENTION"] = str(args.retention or "")
    asyncio.run(clear(driver, prefix))  # what a run that crashed left
    os.environ.update(env, SOAK_ROLE="pusher")
    if scheme(driver) in ("mysql", "mariadb"):
        asyncio.run(mysql_database(driver, "CREATE DATABASE IF NOT EXISTS"))
    import soak_app

    from conveyor.drivers import driver_from_url

    registry = soak_app.registry
    registry.blocking.migrate()
    worker = WorkerProcess({**env, "SOAK_ROLE": "worker"}, log)
    worker.start()
    pusher = Pusher(registry, args.rate, args.threads, driver_from_url(driver).capabilities.unique)
    pusher.start()
    print(f"conveyor work on {driver}, {args.rate}/s for {args.minutes} min; log {log}")
    try:
        history = soak(args, registry, worker, pusher, driver, prefix, probe_file)
        account(registry, worker, pusher, history, log)
    finally:
        pusher.stop()
        if worker.process is not None and worker.process.poll() is None:
            worker.stop()
        registry.blocking.close()
        asyncio.run(clear(driver, prefix))


def soak(
    args: argparse.Namespace,
    registry: Any,
    worker: WorkerProcess,
    pusher: Pusher,
    driver: str,
    prefix: str,
    probe_file: Path,
) -> list[dict[str, Any]]:
    """Sample every `--every` seconds for `--minutes`, disrupting the worker every third."""
    from soak_app import Tick

    started, samples, history = time.monotonic(), 0, []
    disruptions = [d for d in args.disrupt.split(",") if d]
    if scheme(driver) not in SERVED and "drop" in disruptions:
        sys.exit(f"--disrupt drop: this run drops no connection of {scheme(driver)}")
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            samples += 1
            registry.blocking.push("soak", "probe", Tick(samples))
            did = ""
            if disruptions and samples % 3 == 0:
                did = disruptions[(samples // 3 - 1) % len(disruptions)]
                disrupt(did, worker, driver, prefix)
            time.sleep(0.5)  # the probe's answer
            sample = {"s": round(time.monotonic() - started), "pushed": pusher.pushed}
            sample |= worker.figures() | figures("self", "_p")
            sample |= asyncio.run(server_side(driver, prefix)) | wal_mb(driver)
            probe = last_probe(probe_file)
            sample |= {"tasks": probe.get("tasks"), "probe": probe, "did": did}
            history.append(sample)
            print(line(sample), flush=True)
    finally:
        pusher.stop()
    return history


async def clear(driver: str, prefix: str) -> None:
    """Delete what the run created: its tables, keys, broker queues or database file."""
    sys.path.insert(0, str(HERE.parent))
    kind = scheme(driver)
    if kind in ("postgresql", "postgres"):
        from tests.backends.postgres import drop_tables

        await drop_tables(prefix)
    elif kind in ("mysql", "mariadb"):
        await mysql_database(driver, "DROP DATABASE IF EXISTS")
    elif kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(driver.split("?")[0])
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()
    elif kind == "amqp":
        from tests.backends.amqp import delete_prefix

        await delete_prefix(prefix, {"soak"})
    elif kind == "sqlite":
        path = "/" + urlsplit(driver).path.lstrip("/")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        shutil.rmtree(path + "-wake", ignore_errors=True)  # the doorbell's folder


async def mysql_database(driver: str, verb: str) -> None:
    """Run `verb` (CREATE DATABASE IF NOT EXISTS, DROP DATABASE IF EXISTS) on the run's own."""
    from raw import mysql_connection

    connection = await mysql_connection(driver.replace(f"/{MYSQL_DB}", "/test"))
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(f"{verb} {MYSQL_DB}")
    finally:
        await connection.ensure_closed()


SERVED = ("postgresql", "postgres", "mysql", "mariadb", "redis")


def disrupt(what: str, worker: WorkerProcess, driver: str, prefix: str) -> None:
    if what == "drop":
        asyncio.run(server_side(driver, prefix, drop=True))
        return
    worker.stop(signal.SIGTERM if what == "sigterm" else signal.SIGKILL)
    worker.start()


def line(sample: dict[str, Any]) -> str:
    skip = ("probe",)
    cells = [f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in sample.items()]
    return " ".join(c for c in cells if c.split("=")[0] not in skip)


def account(registry: Any, worker: WorkerProcess, pusher: Pusher, history: list[Any], log: Path):
    """Wait for the queue to drain; print what grew and whether every job is accounted for."""
    from soak_app import LEASE, RETENTION

    from conveyor.spec import DEFAULT_RETENTION

    deadline = time.monotonic() + LEASE * 3 + 30
    while time.monotonic() < deadline:
        counts = registry.blocking.queue_info()["soak"]
        if counts.pending + counts.delayed + counts.reserved == 0:
            break
        time.sleep(1)
    done = counts.succeeded + counts.failed + counts.cancelled
    distinct = pusher.pushed - pusher.uniques + len(pusher.unique_ids)
    print(
        f"\nafter the run: {counts}; pushed {pusher.pushed} jobs, {distinct} distinct,"
        f" {len(history)} probes; push errors {len(pusher.errors)};"
        f" worker started {worker.starts} times"
    )
    if RETENTION < DEFAULT_RETENTION:
        print("(finished jobs were pruned after --retention: none counted, none looked up)")
        return
    if not registry.driver_for("soak").capabilities.lookup:
        print("(no finished jobs kept on this driver, none looked up: the failed ones counted)")
        return
    ticks = done - distinct - len(history)
    print(
        f"finished beside them: {ticks}, the 1 s schedule's ticks (the run lasted about"
        f" {history[-1]['s']} s and the drain after it)"
    )
    lost = unfinished(registry, pusher.looked_up)
    print(f"of {len(pusher.looked_up)} pushed jobs looked up, not finished: {lost or 'none'}")
    for error in sorted(set(pusher.errors))[:5]:
        print("  push error:", error)
    compare(history)
    print("worker log, last lines:", *log.read_text().splitlines()[-3:], sep="\n  ")


def unfinished(registry: Any, ids: list[str]) -> list[str]:
    """Of `ids`, those not succeeded or failed (none, unless a job was lost)."""
    from conveyor import JobState

    states = [(i, registry.blocking.job_info(i)) for i in ids]
    done = (JobState.SUCCEEDED, JobState.FAILED)
    return [
        f"{i} {info and info.state}" for i, info in states if not info or info.state not in done
    ]


def compare(history: list[dict[str, Any]]) -> None:
    """The worker's containers at the first sample after a minute and at the end."""
    if len(history) < 3:
        return
    first = next((h for h in history if h["s"] >= 60), history[1])
    last = history[-1]
    print(f"\ncontainers, at {first['s']} s -> {last['s']} s (those that changed):")
    for key in sorted(set(first["probe"]) | set(last["probe"])):
        a, b = first["probe"].get(key), last["probe"].get(key)
        if a != b:
            print(f"  {key}: {a} -> {b}")
