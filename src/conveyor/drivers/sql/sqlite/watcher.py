"""The SQLite driver's watcher: how an idle worker hears of a commit made by another process.

`PRAGMA data_version`, read on a connection, changes when any other connection has committed
to the file since; reading it costs a look at shared memory, not at the file.

It looks only while a `wait` is in progress (`looking`). A busy worker never waits: looks made
then (every 2 ms after a reserve that found jobs) told it nothing, and cost it 3-4 µs of CPU a
job and hand-overs of the GIL to this thread (docs/benchmarks.md, 2026-12-06). A commit made
while it did not look still shows: its first look as a wait begins compares the version with
the one it last read, from before the reserve that came before the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator

from conveyor.drivers.sql.sqlite.forking import GUARD

__all__ = ["Watcher"]


class Watcher:
    """A daemon thread with a connection of its own, counting the commits other connections
    make (PRAGMA data_version) and calling `notify` in the event loop after each."""

    def __init__(self, path: str, busy_timeout: float, interval: Callable[[], float]) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.interval = interval  # seconds until the next look; read before each
        self.commits = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._waits = 0  # `wait`s in progress, on the event loop's thread
        self._wanted = threading.Event()  # set while any is: the thread looks only then

    def start(self, notify: Callable[[], None]) -> None:
        """Start watching, unless already watching; `notify` runs in the running loop. The
        first version is read here, so every commit after this call is counted."""
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
            first = _version_of(db)
        except sqlite3.Error:
            return  # the driver's own connection reports the problem; `wait` then polls
        loop = asyncio.get_running_loop()
        self._stopping, self._wanted = threading.Event(), threading.Event()
        if self._waits:
            self._wanted.set()
        self._thread = threading.Thread(
            target=self._run,
            args=(db, first, loop, notify, self._stopping, self._wanted),
            name="conveyor-sqlite-watch",
            daemon=True,
        )
        self._thread.start()

    @contextlib.contextmanager
    def looking(self) -> Iterator[None]:
        """Look while the block runs (a driver's `wait`), at once as it begins."""
        self._waits += 1
        self._wanted.set()
        try:
            yield
        finally:
            self._waits -= 1
            if not self._waits:
                self._wanted.clear()

    def stop(self) -> threading.Thread | None:
        """Stop the thread; it ends within one look, closing its connection. The thread (None
        if none ran), for a caller that must know its connection closed: SqliteDriver.close."""
        self._stopping.set()
        # Woken to see that it stops; a wait ending after this marks a new event, never the
        # stopped thread's (cleared before it looked again, it would sleep on it for good).
        self._wanted.set()
        self._wanted = threading.Event()
        thread, self._thread = self._thread, None
        return thread

    def _run(
        self,
        db: sqlite3.Connection,
        last: int,
        loop: asyncio.AbstractEventLoop,
        notify: Callable[[], None],
        stopping: threading.Event,
        wanted: threading.Event,
    ) -> None:
        try:
            while wanted.wait() and not stopping.is_set():
                version = _version_of(db)
                if version != last:
                    last, self.commits = version, self.commits + 1
                    loop.call_soon_threadsafe(notify)
                if stopping.wait(self.interval()):
                    break
        except (sqlite3.Error, RuntimeError):
            pass  # the file went away, or the loop closed: stop watching, polling remains
        finally:
            db.close()


def _version_of(db: sqlite3.Connection) -> int:
    with GUARD.statement():  # no fork in the middle of it (forking.py)
        return int(db.execute("PRAGMA data_version").fetchone()[0])
