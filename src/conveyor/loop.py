"""The event loop conveyor's commands run on: asyncio's own (the default) or uvloop's, an
opt-in (`pip install "conveyor[uvloop]"`, then `conveyor work --loop uvloop`).

uvloop is libuv under asyncio's API: the same code runs on it, its sockets and callbacks cost
less, so a worker whose jobs are short spends less of each job in the loop. docs/benchmarks.md
has what it gains here. In your own program, pass `loop_factory("uvloop")` to
`asyncio.Runner` (or call `uvloop.run`); conveyor itself needs nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from conveyor.errors import ConfigError

__all__ = ["LOOPS", "loop_factory", "run"]

T = TypeVar("T")

#: The loops a command can run on, the default first.
LOOPS = ("asyncio", "uvloop")


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
