"""The standard library as the interpreter made it, under gevent's or eventlet's monkey
patching (gunicorn -k gevent, celery -P gevent), for the few calls that must not wait.

Patched, `select.select(..., 0)` and `poll(0)` are the library's own, which switch to its hub
(eventlet's for a whole turn) even with nothing to wait for. Called from the event loop,
which runs in a greenlet there, that switch stops the loop mid-callback: under eventlet,
PostgreSQL's check of each connection taken from the pool (`ended_by_server`) made 50
greenlets pushing at once store 90 jobs a second instead of 1,100. Neither library is imported
here: one that is not loaded has patched nothing.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

__all__ = ["unpatched"]


@functools.cache
def unpatched(module: str, name: str) -> Any:
    """`module.name` as it was before gevent or eventlet patched it (None if there is none,
    as `select.poll` on Windows). Cached: the original never changes."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched(module):
        return gevent.get_original(module, name)
    eventlet = sys.modules.get("eventlet.patcher")
    if eventlet is not None and eventlet.is_monkey_patched(module):
        return getattr(eventlet.original(module), name, None)
    return getattr(importlib.import_module(module), name, None)
