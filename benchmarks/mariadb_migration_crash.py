"""Migrations under disconnects, on a private MariaDB that may crash: the reproduction of the
shared server's signal 11 in ha_maria::drop_table (2026-12-06, MariaDB 10.11.19).

Only ever a private server (tests/backends/private.py: mariadb-install-db, a spare loopback
port, deleted afterwards), never the shared one. For `--seconds` it runs, in worker processes
of `--threads` threads each:

- fresh table prefixes, each migrated statement by statement, then its tables found in
  information_schema.tables and dropped (as tests/backends/mysql.py's drop_tables does);
- the steps that differ between MariaDB and MySQL alone, fast, for recent and never-made
  prefixes;
- about one statement in 30 sent and its connection closed before the answer;
- a killer that finds the running statements in information_schema.processlist (as
  tests/backends/limits.py does) and sends KILL or KILL QUERY to some, and SIGKILLs a worker
  process now and then (a test run killed: all its connections drop at once).

`--statements mysql` sends what MariaDB was sent before the fix (MySQL's statements, which read
information_schema to decide each step); `mariadb` what it is sent now. It prints what ran and
whether the server's error log says "got signal".

Here (2 cores, 2026-12-07): with `mysql` the server crashed in 2 runs of 3 (after 13 and 25 s;
the third ran 150 s), always at the same instruction as the shared server (ha_maria::drop_table
+ 0x13, a NULL handler: dmesg); with `mariadb`, in 1 run of 4 (after 37 s; the others ran 150,
200 and 250 s), where this script's own information_schema reads (tables, processlist) were the
only ones left.

    .venv/bin/python benchmarks/mariadb_migration_crash.py --statements mysql --seconds 150
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymysql

from conveyor.drivers.sql.mysql.session import server_statements
from conveyor.drivers.sql.queries import load_migrations
from tests.backends.private import PrivateMariadb

PACKAGE = "conveyor.drivers.sql.mysql"
#: What each side is sent: MySQL's statements (information_schema) or MariaDB's.
SERVER_INFO = {"mysql": "8.0.36", "mariadb": "10.11.19-MariaDB"}
USER = "crash"


def connect(port: int) -> Any:
    return pymysql.connect(
        host="127.0.0.1", port=port, user=USER, password=USER, database="test",
        autocommit=True, connect_timeout=5,
    )  # fmt: skip


def migration_statements(prefix: str, side: str) -> list[str]:
    return [
        statement
        for migration in load_migrations(PACKAGE, prefix)
        for statement in server_statements(migration.sql, SERVER_INFO[side])
    ]


def send_and_vanish(connection: Any, statement: str) -> None:
    """Send `statement` and close the socket without reading the answer."""
    connection._execute_command(pymysql.constants.COMMAND.COM_QUERY, statement)
    connection._sock.shutdown(socket.SHUT_RDWR)
    connection._sock.close()
    raise ConnectionAbortedError


def migrate(port: int, side: str, stop: float, counts: Counter[str], recent: list[str]) -> None:
    """Fresh prefixes, migrated and dropped."""
    while time.time() < stop:
        prefix = f"t{uuid.uuid4().hex[:12]}_"
        recent[:] = [*recent[-19:], prefix]
        try:
            connection = connect(port)
        except pymysql.Error:
            continue
        try:
            with connection.cursor() as cursor:
                for statement in migration_statements(prefix, side):
                    if random.random() < 1 / 30:
                        send_and_vanish(connection, statement)
                    cursor.execute(statement)
                counts["migrated"] += 1
                cursor.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND LEFT(table_name, %s) = %s",
                    (len(prefix), prefix),
                )
                tables = ", ".join(row[0] for row in cursor.fetchall())
                cursor.execute(f"DROP TABLE IF EXISTS {tables}")
        except (pymysql.Error, OSError):
            counts["broken"] += 1
        finally:
            if connection.open:
                connection.close()


def steps(prefix: str, side: str) -> list[str]:
    """The statements that differ by side: MySQL's reads of information_schema (then the
    prepared ALTER), MariaDB's ALTERs that check for themselves."""
    marks = ("/* MySQL */ SET", "/* MariaDB */")
    return [
        statement for statement in migration_statements(prefix, side) if statement.startswith(marks)
    ]


def hammer(port: int, side: str, stop: float, counts: Counter[str], recent: list[str]) -> None:
    """The steps alone, one at a time, for recent prefixes and unknown ones."""
    while time.time() < stop:
        try:
            connection = connect(port)
        except pymysql.Error:
            continue
        try:
            with connection.cursor() as cursor:
                for _ in range(random.randint(1, 40)):
                    known = recent and random.random() < 0.5
                    prefix = random.choice(recent) if known else f"t{uuid.uuid4().hex[:12]}_"
                    statement = random.choice(steps(prefix, side))
                    if random.random() < 1 / 30:
                        send_and_vanish(connection, statement)
                    with contextlib.suppress(pymysql.err.ProgrammingError):
                        cursor.execute(statement)  # MariaDB's fail on a prefix never made
                    counts["statements"] += 1
        except (pymysql.Error, OSError):
            counts["broken"] += 1
        finally:
            if connection.open:
                connection.close()


def worker(port: int, side: str, stop: float, threads: int) -> None:
    counts: Counter[str] = Counter()
    recent: list[str] = []
    jobs = [migrate if n % 3 == 0 else hammer for n in range(threads)]
    running = [
        threading.Thread(target=job, args=(port, side, stop, counts, recent), daemon=True)
        for job in jobs
    ]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    print(f"worker {os.getpid()}: {dict(counts)}", flush=True)


def killer(port: int, stop: float, counts: Counter[str]) -> None:
    """KILL or KILL QUERY some running statements of the workers."""
    admin: Any = None
    while time.time() < stop:
        try:
            admin = admin or connect(port)
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE user = %s AND command = 'Query'",
                    (USER,),
                )
                for (found,) in cursor.fetchall():
                    if random.random() < 0.03:
                        kill = random.choice(["KILL QUERY", "KILL"])
                        cursor.execute(f"{kill} {int(found)}")
                        counts["kills"] += 1
        except pymysql.Error:
            admin = None
        time.sleep(random.uniform(0, 0.01))


def crashed(log: Path) -> bool:
    return log.exists() and "got signal" in log.read_text(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", choices=sorted(SERVER_INFO), default="mariadb")
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=24)
    args = parser.parse_args()
    server = PrivateMariadb(["--max-connections=1000"])
    log = server.folder / "error.log"
    server.options.append(f"--log-error={log}")
    try:
        server.start()
        server.sql(
            f"CREATE DATABASE test; CREATE USER {USER}@'127.0.0.1' IDENTIFIED BY '{USER}';"
            f" GRANT ALL ON *.* TO {USER}@'127.0.0.1'"
        )
        print(server.sql("SELECT VERSION(), @@tmpdir, @@aria_used_for_temp_tables").strip())
        stop = time.time() + args.seconds
        counts: Counter[str] = Counter()
        threading.Thread(target=killer, args=(server.port, stop, counts), daemon=True).start()
        workers: list[multiprocessing.Process] = []
        while time.time() < stop and not crashed(log):
            workers = [process for process in workers if process.is_alive()]
            while len(workers) < args.processes:
                process = multiprocessing.Process(
                    target=worker, args=(server.port, args.statements, stop, args.threads)
                )
                process.start()
                workers.append(process)
            time.sleep(random.uniform(0.5, 3))
            if random.random() < 0.5:
                os.kill(random.choice(workers).pid, signal.SIGKILL)
                counts["processes SIGKILLed"] += 1
        elapsed = args.seconds - (stop - time.time())
        for process in workers:
            process.join(10)
            process.kill()
        time.sleep(3)  # the crash report is still being written
        print(f"{args.statements} statements, {elapsed:.0f} s: {dict(counts)}")
        if crashed(log):
            text = log.read_text(errors="replace")
            start = text.index("got signal")
            print("CRASHED:\n" + text[text.rfind("\n", 0, start - 200) : start + 3000])
        else:
            print(
                "no crash; server alive:",
                server.process is not None and server.process.poll() is None,
            )
    finally:
        server.close()


if __name__ == "__main__":
    main()
