"""How a push wakes the idle workers of other processes on this machine at once, where the
backend has no signal of its own to give them (SQLite; MySQL and MariaDB have no LISTEN/NOTIFY).
Each driver that waits for jobs binds a Unix datagram socket in a folder named after the jobs'
store, and a driver that pushed, released or retried jobs sends every socket there one byte
after its commit (`RingingWakeup`). A byte lost costs only the wait for the driver's own way of
looking (SQLite's watcher, MySQL's probe), which stays as the fallback: without Unix sockets
(Windows), with a folder that cannot be made, and for processes on other machines.

SQLite's folder is beside the database file (`jobs.db-wake/`); a store named by a server's
address, and a file path too long for a socket's address, get one in the temporary folder under
a hash of the name and the user's id (`private_folder`), used only if it is the user's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable

from conveyor.drivers.local import LocalWakeup

__all__ = ["Doorbell", "Ringer", "RingingWakeup", "folder_of", "private_folder"]

#: Seconds a ringer keeps its list of sockets while the folder's mtime stays the same: a socket
#: bound within the same clock tick as the last listing leaves the mtime as it was.
RELIST_EVERY = 1.0

#: The longest socket address Linux and macOS take (sun_path), less its terminating NUL.
_MAX_ADDRESS = 103

#: The longest name a socket gets in the folder: the process id in hex, a dot, 4 hex digits.
_NAME = 11

#: The most bytes of queue names a ring carries; a push to more queues rings for any queue.
_MAX_RING = 2048

#: What a ring for any queue carries (a release: its queue is not known). No name has a '*'.
_ANY = b"*"

#: What the drivers waiting in this process are told: the queues rung for, or None for any.
Heard = Callable[[frozenset[str] | None], None]


def folder_of(path: str) -> str:
    """The folder of the sockets of the workers waiting on the database file `path`: beside it,
    or, where that would make an address too long, `private_folder(path)`."""
    beside = f"{path}-wake"
    if len(os.fsencode(beside)) + 1 + _NAME <= _MAX_ADDRESS:
        return beside
    return private_folder(path)


def private_folder(name: str) -> str:
    """A folder in the temporary folder for the store called `name`, the same in every process
    of this user on this machine."""
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"conveyor-wake-{_user():x}-{digest}")


def _user() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _made(folder: str) -> bool:
    """Make `folder` if needed; whether sockets may be bound in it. In the temporary folder,
    which every user shares, only a folder of the user's own, made private; elsewhere any (a
    database file's folder may be shared by the users who share the file)."""
    if os.path.dirname(folder) != tempfile.gettempdir():
        os.makedirs(folder, exist_ok=True)
        return True
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.stat(folder).st_uid == _user()


class Doorbell:
    """A waiting driver's socket; `notify` runs in the event loop each time it rings, with the
    queues it was rung for."""

    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._socket: socket.socket | None = None
        self._address = ""
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tried = False

    def open(self, notify: Heard) -> None:
        """Bind the socket and listen on the running loop: tried once until `close`, and
        quietly nothing where it cannot be done (the driver's own looks remain)."""
        if self._tried or not hasattr(socket, "AF_UNIX"):
            return
        self._tried = True
        address = os.path.join(self._folder, f"{os.getpid():x}.{secrets.token_hex(2)}")
        if len(os.fsencode(address)) > _MAX_ADDRESS:
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if not _made(self._folder):
                raise PermissionError(self._folder)
            listener.setblocking(False)
            listener.bind(address)
        except OSError:
            listener.close()
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(listener.fileno(), _rang, listener, notify)
        self._socket, self._address, self._pid = listener, address, os.getpid()

    def close(self) -> None:
        """Stop listening and remove the socket (not in a forked child: it is the parent's)."""
        listener, self._socket, self._tried = self._socket, None, False
        if listener is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError, ValueError):  # another thread's loop
                self._loop.remove_reader(listener.fileno())
        listener.close()
        if self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self._address)


def _rang(listener: socket.socket, notify: Heard) -> None:
    """Read every ring waiting in the socket; tell `notify` the queues they were for."""
    queues: set[str] = set()
    anything = False
    with contextlib.suppress(OSError):  # BlockingIOError once every ring is read
        while True:
            ring = listener.recv(_MAX_RING)
            if ring == _ANY or not ring:
                anything = True
            else:
                queues.update(ring.decode(errors="replace").split("\n"))
    notify(None if anything else frozenset(queues))


class Ringer:
    """Rings every socket in the folder: from the event loop or from plain threads."""

    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._addresses: tuple[str, ...] = ()
        self._listed: tuple[int, float] | None = None  # the folder's mtime, monotonic time
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def ring(self, queues: Iterable[str] | None = None) -> None:
        """Tell each waiting driver that jobs are due in `queues` (None: in any queue, as far as
        this driver knows); a dead process's socket is removed. No queue, no ring."""
        try:
            mtime = os.stat(self._folder).st_mtime_ns
        except OSError:
            return  # no driver has waited on this store
        if queues is None:
            ring = _ANY
        else:
            ring = "\n".join(sorted(set(queues))).encode()
            if not ring:
                return
            if len(ring) > _MAX_RING:
                ring = _ANY
        listed, now = self._listed, time.monotonic()
        if listed is None or listed[0] != mtime or now - listed[1] > RELIST_EVERY:
            with contextlib.suppress(OSError):
                names = os.listdir(self._folder)
                self._addresses = tuple(os.path.join(self._folder, name) for name in names)
                self._listed = (mtime, now)
        for address in self._addresses:
            try:
                self._sender().sendto(ring, address)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(address)  # no socket bound there: its process has ended
            except OSError:
                pass  # its buffer is full (it has many rings to read already), or else

    def _sender(self) -> socket.socket:
        with self._lock:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            return self._socket

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class RingingWakeup(LocalWakeup):
    """A driver's LocalWakeup whose `notify` (this driver pushed, released or retried jobs)
    also rings the waiting drivers of other processes; `heard` is what their ringing calls,
    and it wakes this driver's waits only for a queue in `serving`: a push to a queue no
    worker here reserves from costs the workers here nothing."""

    def __init__(self, ringer: Ringer) -> None:
        super().__init__()
        self._ringer = ringer
        #: The queues this driver's workers reserve from (added to by each `waiting`).
        self.serving: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # where the driver's waits run

    def waiting(self, queues: Iterable[str]) -> None:
        """Called as a driver's `wait` begins, on its loop: it serves `queues`."""
        self.serving.update(queues)
        self._loop = asyncio.get_running_loop()

    def pushed_in_thread(self, queues: Iterable[str]) -> None:
        """`notify`, from a plain thread that pushed (`push_in_thread`): the driver's own
        waiting workers are woken on their loop, other processes' rung from here."""
        queues = tuple(queues)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(self.heard, queues)
        self._ringer.ring(queues)

    def notify(self, queues: Iterable[str] | None = None) -> None:
        super().notify(queues)
        self._ringer.ring(queues)

    def heard(self, queues: Collection[str] | None = None) -> None:
        if queues is None or not self.serving.isdisjoint(queues):
            super().notify()
