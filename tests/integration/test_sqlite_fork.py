"""A process forked while other threads of its parent write to an SQLite database.

SQLite notes the locks of all a process's connections to a file in one table of that process,
which a child inherits: forked while a parent's thread was inside a write, the child found the
write lock noted as held forever, and every write of its own (on connections it opened itself)
waited out the 30 s busy timeout and failed, for as long as it lived. Half the children of a
parent whose request threads were pushing could push nothing. Now a fork waits for the
statements running (conveyor.drivers.sql.sqlite.forking), and each child pushes at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = r"""
import os, signal, sys, threading, time
from conveyor import Registry

registry = Registry(default_driver=f"sqlite:///{sys.argv[1]}")
registry.queue("q", workers=["w"])
registry.worker("w")

@registry.job("j", queue="q")
def j(job): pass

registry.blocking.push("q", "j", {})
stop = threading.Event()

def push_until_stopped(unique):
    n = 0
    while not stop.is_set():  # from this thread, and (a unique key) through the event loop
        registry.blocking.push("q", "j", {}, **({"unique": f"{unique}-{n}"} if unique else {}))
        n += 1

threads = [threading.Thread(target=push_until_stopped, args=(i % 2 and i,)) for i in range(6)]
for thread in threads: thread.start()
time.sleep(0.2)
children = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:  # the child's own threads and loop push, as a request thread would
        signal.alarm(8)  # the busy timeout is 30 s: a child that cannot write is killed
        started = time.monotonic()
        registry.blocking.push("q", "j", {"child": 1})
        registry.blocking.push("q", "j", {"child": 1}, unique=f"child-{os.getpid()}")
        registry.blocking.close()
        os._exit(0 if time.monotonic() - started < 5 else 1)
    children.append(pid)
    time.sleep(0.05)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
stop.set()
for thread in threads: thread.join()
print(codes)
registry.blocking.close()
"""


def test_children_forked_while_the_parent_writes_can_write(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "jobs.db")],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str([0] * 8), done.stdout
