"""Servers of a test's own, on spare loopback ports, that the test may kill and restart: a
redis-server with `appendfsync always`, a PostgreSQL cluster made with initdb, and a MariaDB
server made with mariadb-install-db. The shared servers the rest of the suite uses are never
touched.

PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to the
`postgres` user (its files in a folder of its own) and is run through `runuser`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def spare_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, up: bool, timeout: float = 30.0, every: float = 0.05) -> None:
    """Wait until 127.0.0.1:`port` accepts connections (`up`) or refuses them, trying
    `every` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            listening = True
        except OSError:
            listening = False
        if listening == up:
            return
        assert time.monotonic() < deadline, f"port {port} never became {'up' if up else 'free'}"
        time.sleep(every)


class PrivateRedis:
    """redis-server on a spare port, its append-only file fsynced at every write; not
    `persistent`, it keeps nothing on disk (a restart empties it); `options`, more of
    redis-server's arguments (`["--maxclients", "3"]`)."""

    def __init__(
        self, folder: Path, *, persistent: bool = True, options: Sequence[str] = ()
    ) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.folder = folder
        self.persistent = persistent
        self.options = list(options)
        self.port = spare_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes" if self.persistent else "no",
             "--appendfsync", "always", "--save", "", *self.options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, up=True)

    def kill(self) -> None:
        """SIGKILL: what survives is what reached the append-only file."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        wait_for_port(self.port, up=False)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def _redis(port: int, password: str | None = None) -> Any:
    """A redis-py client of the redis-server (or sentinel) on 127.0.0.1:`port`."""
    import redis

    return redis.Redis(port=port, password=password, decode_responses=True, socket_timeout=5)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `check()` is true, trying every 50 ms; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened within {timeout:g}s"
        time.sleep(0.05)


@contextlib.contextmanager
def private_replicated_redis(
    folder: Path, password: str | None = None
) -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    """A private master and its replica (REPLICAOF), the replica in sync when yielded; with
    `password`, both require it (and the replica gives it to its master)."""
    (folder / "master").mkdir()
    (folder / "replica").mkdir()
    at_once = ["--repl-diskless-sync-delay", "0"]  # not 5 s for more replicas to come
    if password is not None:
        at_once += ["--requirepass", password, "--masterauth", password]
    with private_redis(folder / "master", options=at_once) as master:
        options = [*at_once, "--replicaof", "127.0.0.1", str(master.port)]
        with private_redis(folder / "replica", options=options) as replica:
            wait_until(lambda: streaming(master, password), "the replica's first sync")
            yield master, replica


def streaming(master: PrivateRedis, password: str | None = None) -> bool:
    """Whether a write to `master` reaches its replica (WAIT). After a full sync the master
    streams nothing until the replica's first acknowledgement, up to a second later: a replica
    "up" before that misses every write of that second if the master dies then."""
    with _redis(master.port, password) as client:
        client.set("private-sync-probe", 1)
        reached = client.execute_command("WAIT", 1, 100) == 1
        client.delete("private-sync-probe")
        return bool(reached)


class PrivateSentinel:
    """redis-server --sentinel on a spare port, watching the master on `master_port` as the
    service SERVICE: quorum 1 (it alone decides), the master down after `down_after` ms of
    silence, a failover given up after 3 s."""

    SERVICE = "conveyor-test"

    def __init__(
        self,
        folder: Path,
        master_port: int,
        *,
        down_after: int = 1000,
        master_password: str | None = None,
        password: str | None = None,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """`tls`: (certificate, key, CA) files: it then speaks TLS only, to its clients and
        to the servers it watches."""
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.folder = folder
        self.port = spare_port()
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{self.SERVICE}/0"
        folder.mkdir(exist_ok=True)
        service = self.SERVICE
        listen = f"port {self.port}\n"
        if tls is not None:
            listen = f"port 0\ntls-port {self.port}\ntls-replication yes\ntls-auth-clients no\n"
            listen += "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n".format(*tls)
        (folder / "sentinel.conf").write_text(
            f"{listen}bind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} {down_after}\n"
            f"sentinel failover-timeout {service} 3000\n"
            + (f"sentinel auth-pass {service} {master_password}\n" if master_password else "")
            + (f"requirepass {password}\n" if password else "")
        )
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", str(self.folder / "sentinel.conf"), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, up=True)

    def master_port(self) -> int:
        """The port of the server this sentinel names master now."""
        with _redis(self.port, self.password) as client:
            _, port = client.sentinel_get_master_addr_by_name(self.SERVICE)
            return int(port)

    def knows_replicas(self) -> bool:
        """Whether this sentinel found a replica of the master that it can promote."""
        with _redis(self.port, self.password) as client:
            replicas = client.sentinel_slaves(self.SERVICE)
        return any(not r["is_sdown"] and not r["is_disconnected"] for r in replicas)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def private_sentinel(
    folder: Path, *, master_password: str | None = None, password: str | None = None
) -> Iterator[tuple[PrivateSentinel, PrivateRedis, PrivateRedis]]:
    """A private master, its replica and a sentinel watching them, the sentinel aware of the
    replica when yielded: (sentinel, master, replica). `master_password` is the servers',
    `password` the sentinel's own."""
    with private_replicated_redis(folder, master_password) as (master, replica):
        sentinel = PrivateSentinel(
            folder / "sentinel", master.port, master_password=master_password, password=password
        )
        sentinel.start()
        try:
            wait_until(sentinel.knows_replicas, "the sentinel finding the replica")
            yield sentinel, master, replica
        finally:
            sentinel.close()


class PrivatePostgres:
    """A PostgreSQL cluster of its own on a spare port, trust authentication: made with initdb,
    or with `standby_of` a primary, a streaming standby of it (pg_basebackup -R)."""

    def __init__(self, standby_of: PrivatePostgres | None = None) -> None:
        if not POSTGRES_BIN:
            pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        self.bin = POSTGRES_BIN[-1]
        self.port = spare_port()
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: initdb cannot be run")
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        if standby_of is None:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")
        else:
            self._run("pg_basebackup", "-D", str(self.data), "-R", "-c", "fast", "-h",
                      "127.0.0.1", "-p", str(standby_of.port), "-U", "postgres")  # fmt: skip

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bin / program), *args],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
        log = self.folder / "log"
        said = log.read_text()[-2000:] if log.exists() else ""
        assert done.returncode == 0, f"{program} failed: {done.stdout.decode()}\n{said}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.folder / "log"), "-w", "start")  # fmt: skip
        wait_for_port(self.port, up=True)

    def configure(self, **settings: str) -> None:
        """Add `settings` to postgresql.conf and have a running server read them again."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "reload")

    def promote(self) -> None:
        """End a standby's recovery: it takes writes from now on."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def follow(self, primary: PrivatePostgres) -> None:
        """Before a start: come back as a standby of `primary` (read-only), as a failed
        primary does once a standby took over. Its history may have forked from the new
        primary's (pg_rewind's business): then it replays nothing, but stays in recovery."""
        (self.data / "standby.signal").touch()
        if self.as_user:
            shutil.chown(self.data / "standby.signal", "postgres", "postgres")
        info = f"host=127.0.0.1 port={primary.port} user=postgres"
        self.configure(primary_conninfo=info)

    def kill(self) -> None:
        """SIGKILL of the postmaster and its children, as a crash: the next start recovers
        from the write-ahead log."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "the postmaster survived SIGKILL"
            time.sleep(0.05)
        wait_for_port(self.port, up=False)
        # The dead postmaster may stay a zombie (its parent, pg_ctl, is gone and this
        # machine's init may not reap it at once), which the next start would take for a
        # live server: its lock files go, as after a reboot.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for stale in self.folder.glob(f".s.PGSQL.{self.port}*"):
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@contextlib.contextmanager
def private_redis(
    folder: Path, *, persistent: bool = True, options: Sequence[str] = ()
) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder, persistent=persistent, options=options)
    server.start()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_postgres_pair(
    *, synchronous: bool = True
) -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    """A private primary and its streaming standby, both running; with `synchronous`, a commit
    on the primary returns once the standby has it on disk (synchronous_standby_names '*').
    The standby does not inherit that setting: promoted, it takes writes on its own."""
    primary = PrivatePostgres()
    standby: PrivatePostgres | None = None
    try:
        primary.start()
        standby = PrivatePostgres(standby_of=primary)
        standby.start()
        if synchronous:
            primary.configure(synchronous_standby_names="*", synchronous_commit="on")
        yield primary, standby
    finally:
        primary.close()
        if standby is not None:
            standby.close()


class PrivateMariadb:
    """A MariaDB server of its own (mariadb-install-db) on a spare port, its files in a
    temporary folder; `options`, more of mariadbd's arguments.
    `disk`, a size ("64m"): the data folder on a tmpfs of that size, mounted (as root) for
    the server's life, so a test can fill it. Root logs in through the socket (`sql`); the
    test makes the users it needs."""

    def __init__(self, options: Sequence[str] = (), disk: str | None = None) -> None:
        for program in ("mariadbd", "mariadb-install-db", "mariadb"):
            if shutil.which(program) is None:
                pytest.skip(f"MariaDB's {program} is not installed")
        self.port = spare_port()
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-mariadb-"))
        self.socket = self.folder / "sock"
        self.data = self.folder / "data"
        self.options = list(options)
        self.as_user = ["--user=mysql"] if os.geteuid() == 0 else []
        self.mounted = disk is not None and _mount_tmpfs(self.data, disk)
        #: On a small disk, a redo log of 4 MiB (the default 96 MiB would not fit).
        self.small = ["--innodb-log-file-size=4M"] if self.mounted else []
        if self.as_user:
            for path in (self.folder, self.data) if self.mounted else (self.folder,):
                shutil.chown(path, "mysql", "mysql")
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
             "--auth-root-authentication-method=socket", "--skip-test-db", *self.as_user,
             *self.small],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            # By its full path: a crash report's backtrace (addr2line) needs it.
            [shutil.which("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={self.data}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
             f"--pid-file={self.folder / 'pid'}", "--skip-log-bin", *self.as_user,
             *self.small, *self.options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, up=True)

    def sql(self, statements: str) -> str:
        """Run `statements` as root; what they print."""
        done = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-e",
             statements],
            check=False, capture_output=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, f"mariadb: {done.stderr.decode()}"
        return done.stdout.decode()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.mounted:
            subprocess.run(["umount", str(self.data)], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of `size` on `folder` (made here); skip the test if that is refused."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        shutil.rmtree(folder.parent, ignore_errors=True)
        pytest.skip(f"a small disk needs a tmpfs mounted as root: {mounted.stderr.strip()}")
    return True


@contextlib.contextmanager
def private_mariadb(
    options: Sequence[str] = (), disk: str | None = None
) -> Iterator[PrivateMariadb]:
    server = PrivateMariadb(options, disk)
    try:
        server.start()
        yield server
    finally:
        server.close()
