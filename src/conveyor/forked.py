"""After `os.fork()`: a child never uses its parent's connections or event loop.

gunicorn --preload, multiprocessing's fork start method and the like fork a process whose
registry may have opened its drivers already: their sockets, pools and SQLite handles, and the
event loop they belong to (a thread that does not exist in the child), are the parent's. In
the child each registry forgets them (`RegistryCore.after_fork`): a driver made from a URL is
made anew from it and opens on first use, as in a fresh process. The parent's drivers are kept
in the child, never closed nor collected, as closing one there could end the parent's
connection too. A driver instance the code made itself cannot be made anew: the child's first
call to one its parent had opened raises RegistryError saying so. The blocking facade's loop
thread does not survive the fork either: the child's facade starts one of its own.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Protocol

from conveyor.drivers import driver_from_url, url_of
from conveyor.drivers.base import Driver
from conveyor.errors import RegistryError


class ForkAware(Protocol):
    def after_fork(self) -> None:
        """Drop what belongs to the parent; called in the child, in its only thread."""


_watched: weakref.WeakSet[ForkAware] = weakref.WeakSet()
#: The parent's drivers, kept alive in the child so that nothing closes them there.
_abandoned: list[Driver] = []
#: The ids of those not made from a URL: the child cannot use them.
_refused: set[int] = set()


def watch(item: ForkAware) -> None:
    """Call `item.after_fork()` in every child forked from this process while `item` lives."""
    _watched.add(item)


def remake(
    drivers: Mapping[str, Driver], opened: set[int], substitute: Driver | None
) -> dict[str, Driver]:
    """`drivers` by name, each opened one made anew from its URL. An opened one not made from
    a URL (and an opened `substitute`) stays, refused from now on (`refuse_parents`)."""
    made: dict[int, Driver] = {}
    remade: dict[str, Driver] = {}
    for name, driver in drivers.items():
        url = url_of(driver)
        if id(driver) in opened and url is not None:
            if id(driver) not in made:
                made[id(driver)] = driver_from_url(url)
                _abandoned.append(driver)
            driver = made[id(driver)]
        elif id(driver) in opened:
            _refuse(driver)
        remade[name] = driver
    if substitute is not None and id(substitute) in opened:
        _refuse(substitute)
    return remade


def refuse_parents(driver: Driver, queue: str) -> None:
    """RegistryError if `driver` is one a parent process opened that could not be made anew."""
    if id(driver) in _refused:
        raise RegistryError(
            f"queue {queue!r}'s {driver.kind} driver was opened before this process was forked,"
            " and its connections are the parent's: register it by URL, which a forked process"
            " makes anew, or make the instance after the fork"
        )


def _refuse(driver: Driver) -> None:
    _abandoned.append(driver)  # kept, so that its id is never another driver's
    _refused.add(id(driver))


def _in_child() -> None:
    for item in list(_watched):
        item.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_in_child)
