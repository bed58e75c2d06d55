"""The backends the shared suites run on: one module per driver kind, one line in `KINDS`.

Each module `tests/backends/<kind>.py` defines `storage(tmp_path)`, an async context manager
yielding a `Storage`: fresh, empty storage for one test (a file, a table prefix, a key
prefix) that it removes afterwards. A kind whose module is missing is skipped; a kind whose
service is down is skipped with how to start it, or fails the run when CI=true.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import pytest

from conveyor.drivers.base import Driver

D = TypeVar("D", bound=Driver)

#: Every driver kind the contract and worker suites run on, in order.
KINDS = ["memory", "sqlite", "postgres", "mysql", "redis", "amqp"]


def storage_of(kind: str, tmp_path: Path) -> AbstractAsyncContextManager[Storage]:
    """Fresh storage of one kind, or skip when that backend is not written yet."""
    try:
        module = importlib.import_module(f"tests.backends.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tests.backends.{kind}":
            raise
        pytest.skip(f"no {kind} backend in tests/backends yet")
    factory: Callable[[Path], AbstractAsyncContextManager[Storage]] = module.storage
    return factory(tmp_path)


def require_service(kind: str, port: int, start: str) -> None:
    """Skip (or, under CI, fail) unless something listens on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        message = f"{kind} is not reachable on 127.0.0.1:{port} ({exc}); start it with: {start}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


class Drivers(Generic[D]):
    """Drivers of one kind made for one test, all on its table prefix; `close_all` at its end."""

    def __init__(self, make: Callable[..., D], url: str, prefix: str) -> None:
        self._make = make
        self.url = url
        self.prefix = prefix
        self.made: list[D] = []

    def make(self, url: str | None = None, **options: Any) -> D:
        options.setdefault("prefix", self.prefix)
        driver = self._make(url or self.url, **options)
        self.made.append(driver)
        return driver

    async def open(self, url: str | None = None, **options: Any) -> D:
        driver = self.make(url, **options)
        await driver.open()
        return driver

    async def close_all(self) -> None:
        for driver in self.made:
            await driver.close()


def driver_class(module: str, name: str) -> Any:
    """Import a driver class; the import error is the failure when its module is broken."""
    return getattr(importlib.import_module(module), name)


#: Text that is not UTF-8, and what pickle.dumps({"a": 1}) writes: raw values a test stores
#: behind a driver's back.
NOT_UTF8 = b"caf\xe9 \xff\xfe"
PICKLED = b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."


@dataclass(frozen=True)
class Damage:
    """One field of a stored job overwritten behind the driver's back: with `raw` (bytes are
    written as text that is not UTF-8, `Blob` as a binary value, None deletes the field where
    the backend can), and what must become of the job: `fail` (a worker fails it, naming the
    field) or `tolerate` (the backend or the driver repairs it on reserve; the job runs)."""

    field: str
    raw: object
    outcome: Literal["fail", "tolerate"] = "fail"
    error: str = "conveyor.errors.CorruptJobError"


class Blob(bytes):
    """A raw value written as a binary value (an SQLite BLOB) rather than as text."""


#: Writes `raw` into `field` of the stored job with this id.
DamageWriter = Callable[[str, str, object], Awaitable[None]]


class Storage:
    """Fresh, empty storage for one test, and the drivers connected to it.

    `connect` builds an unopened driver on this storage: a new instance for a real backend (a
    second connection, as another process would have), the same instance for `memory`, whose
    storage is the object itself. `damage` writes raw values into a stored job behind the
    driver's back; `damages` lists the kinds of damage this backend can hold at all.
    """

    def __init__(
        self,
        connect: Callable[[], Driver],
        damage: DamageWriter | None = None,
        damages: Sequence[Damage] = (),
    ) -> None:
        self.connect = connect
        self.damages = list(damages)
        self._damage = damage
        self._open: list[Driver] = []

    async def damage(self, job_id: str, field: str, raw: object) -> None:
        """Overwrite `field` of job `job_id` with `raw`, as a bug, a person or a disk would."""
        assert self._damage is not None, "this backend cannot be damaged"
        await self._damage(job_id, field, raw)

    async def open_driver(self) -> Driver:
        """A driver on this storage, opened; closed when the test ends."""
        driver = self.connect()
        await driver.open()
        if all(other is not driver for other in self._open):
            self._open.append(driver)
        return driver

    async def close_driver(self, driver: Driver) -> None:
        """Close one driver now, as a process that stops would."""
        await driver.close()
        self._open = [other for other in self._open if other is not driver]

    async def close_all(self) -> None:
        """Close every driver still open, newest first."""
        while self._open:
            await self._open.pop().close()


def needs(flag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a contract or worker test that needs the `Capabilities` flag `flag`: on a driver
    that declares it False, the test skips, naming the capability (see `skip_without`)."""

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        return pytest.mark.needs(flag)(test)

    return mark


def skip_without(item: pytest.Item, driver: Driver) -> None:
    """Skip `item` when it is marked `needs(flag)` and `driver` declares that flag False."""
    for marker in item.iter_markers("needs"):
        flag = marker.args[0]
        if not getattr(driver.capabilities, flag):
            pytest.skip(f"{driver.kind} declares no {flag} capability")
