"""Blocking pushes from many green threads (gevent, eventlet) next to as many plain threads:
what a `gunicorn -k gevent` worker serving N requests at once gets, per driver.

Each run is a fresh interpreter (the patching must come before anything else is imported):
N threads, greenlets once patched, each pushing PER jobs through `registry.blocking.push`,
after a few pushes that open the driver; the best of three rounds is printed, in pushes a
second. Tables, keys and broker queues have a prefix of their own, removed afterwards. Run by
hand; never part of the tests.

    .venv/bin/python benchmarks/green.py sqlite postgres mysql redis amqp --greenlets 50
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests: the clean-up
from tests.integration.processes import clean_backend

LIBRARIES = ("threads", "gevent", "eventlet")

#: What each kind runs first (the threads' run patches nothing).
PATCH = {
    "threads": "",
    "gevent": "from gevent import monkey\nmonkey.patch_all()\n",
    "eventlet": "import eventlet\neventlet.monkey_patch()\n",
}

#: Each driver's URL, with {prefix} (and sqlite's {folder}).
URLS = {
    "sqlite": "sqlite:///{folder}/{prefix}.db",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?prefix={prefix}",
    "mysql": "mysql://root@127.0.0.1:3306/test?prefix={prefix}",
    "redis": "redis://127.0.0.1:6379/0?prefix={prefix}",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/?prefix={prefix}",
}

RUN = r"""
import os, sys, threading, time
from dataclasses import dataclass
from conveyor import Job, Registry

url, greenlets, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
registry = Registry(default_driver=url)
registry.queue("q", workers=["w"])
registry.worker("w")

@dataclass
class Note:
    n: int

@registry.job("note")
def note(job: Job[Note]) -> None: ...

for n in range(3):
    registry.blocking.push("q", "note", Note(n))

def pushes() -> None:
    for n in range(per):
        registry.blocking.push("q", "note", Note(n))

best = 0.0
for _ in range(3):
    started = time.perf_counter()
    threads = [threading.Thread(target=pushes) for _ in range(greenlets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    best = max(best, greenlets * per / (time.perf_counter() - started))
registry.blocking.close()
print(round(best))
"""


def rate(kind: str, url: str, greenlets: int, per: int) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PATCH[kind] + RUN, url, str(greenlets), str(per)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.stdout.split()[-1] if done.returncode == 0 else "failed: " + done.stderr[-200:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("drivers", nargs="+", choices=sorted(URLS))
    parser.add_argument("--greenlets", type=int, default=50, help="threads or greenlets")
    parser.add_argument("--per", type=int, default=20, help="pushes each")
    parser.add_argument("--folder", default="/tmp", help="where sqlite's file goes")
    args = parser.parse_args()
    print(f"pushes/s, {args.greenlets} at once, {args.per} each: " + " / ".join(LIBRARIES))
    for driver in args.drivers:
        prefix = f"greenbench{uuid.uuid4().hex[:8]}_"
        url = URLS[driver].format(folder=args.folder, prefix=prefix)
        try:
            figures = [rate(kind, url, args.greenlets, args.per) for kind in LIBRARIES]
        finally:
            asyncio.run(clean_backend(driver, prefix))
            Path(args.folder, f"{prefix}.db").unlink(missing_ok=True)
        print(f"{driver:9} " + " / ".join(figures), flush=True)


if __name__ == "__main__":
    main()
