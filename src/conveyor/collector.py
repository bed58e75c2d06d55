"""The garbage collector's settings for a process that runs workers (`conveyor work`).

Every job allocates a few dozen container objects (its task, its futures, its records, the
client library's own), most freed at once by reference counting. Python collects its youngest
generation after every 700 net allocations (2,000 from Python 3.13 on), and a worker with a
hundred jobs in flight crosses that every few jobs: each collection walks the objects of the
jobs in flight, promotes them, and every hundredth or so walks every object the process holds
(the imported modules above all). With a one-command job body that cost 15-35 µs per job
here, a fifth of the job's CPU (docs/benchmarks.md). `tune_for_work` collects once, freezes
what start-up left (modules, the app, the registry: walked never again) and collects the
youngest generation after YOUNG_THRESHOLD net allocations instead. Garbage that only the
collector can free (reference cycles) then waits a little longer, a few megabytes at most.

`conveyor work` calls it before its workers start; a program that runs a `Worker` itself may
call it too. It changes settings of the whole process (the `gc` module's), so the library
never calls it on its own.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_for_work"]

#: Net allocations of container objects between two collections of the youngest generation,
#: in a process tuned for work (Python's default is 700; 2,000 from 3.13 on).
YOUNG_THRESHOLD = 10_000


def tune_for_work() -> None:
    """Collect, freeze what survives (`gc.freeze`), and raise the youngest generation's
    threshold to YOUNG_THRESHOLD. A collector turned off, or a higher threshold already set,
    is left as it is."""
    young, middle, old = gc.get_threshold()
    if not gc.isenabled() or young == 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
