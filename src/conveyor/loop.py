"""The event loop conveyor's commands run on: asyncio's own (the default) or uvloop's, an
opt-in (`pip install "conveyor[uvloop]"`, then `conveyor work --loop uvloop`).

uvloop is libuv under asyncio's API: the same code runs on it, its sockets and callbacks cost
less, so a worker whose jobs are short spends less of each job in the loop. docs/benchmarks.md
has what it gains here. In your own program, pass `loop_factory("uvloop")` to
`asyncio.Runner` (or call `uvloop.run`); conveyor itself needs nothing more.

A registry's drivers belong to the loop that opened them (`refuse_other_loop`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from conveyor.errors import ConfigError, RegistryError

__all__ = ["LOOPS", "loop_factory", "made_by_facade", "refuse_other_loop", "run"]

T = TypeVar("T")

#: The loops a command can run on, the default first.
LOOPS = ("asyncio", "uvloop")

#: The loops the blocking facade runs in threads of its own (conveyor.blocking).
_facade_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a new loop of kind `name`, for `asyncio.Runner`: None for asyncio's own
    default, uvloop's `new_event_loop` for uvloop. ConfigError for another name, or for
    uvloop when it is not installed (naming the extra to install)."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise ConfigError(f"event loop {name!r} is not known: use one of {', '.join(LOOPS)}")
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            'the uvloop event loop needs uvloop: pip install "conveyor[uvloop]"'
        ) from None
    return uvloop.new_event_loop


def run(coroutine: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """`asyncio.run(coroutine)`, on a new loop of kind `loop`."""
    try:
        factory = loop_factory(loop)
    except ConfigError:
        coroutine.close()  # never awaited: say nothing of it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def refuse_other_loop(owner: asyncio.AbstractEventLoop | None) -> None:
    """RegistryError when the registry's drivers were opened on `owner`, a loop still running
    in another thread (a worker's), and this call runs on a loop of its own (`asyncio.run` in
    a plain handler): their connections belong to `owner`, and used from another loop they
    break it (redis: the worker's next call fails with "Event loop is closed")."""
    if owner is None or owner is asyncio.get_running_loop() or not owner.is_running():
        return  # the common case first: one test per call of the registry's
    if owner in _facade_loops:
        return  # code outside any loop that also runs the async API (conveyor.testing's run_all)
    raise RegistryError(
        "this registry's drivers were opened on an event loop that runs in another thread (a"
        " worker's), so it cannot be awaited on a loop of its own (asyncio.run(...) in a plain"
        " handler): call registry.blocking (registry.blocking.push(...)), which runs the call"
        " on that loop"
    )


def made_by_facade(loop: asyncio.AbstractEventLoop) -> None:
    """Note `loop` as the blocking facade's own: `refuse_other_loop` lets other loops use the
    drivers it opened, as a test outside any loop does (`asyncio.run(queues.run_all())`)."""
    _facade_loops.add(loop)
