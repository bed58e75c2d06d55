"""tune_for_work: what `conveyor work` does to the garbage collector before its workers start.
Each case runs in a Python process of its own, since the settings are the whole process's."""

from __future__ import annotations

import gc
import subprocess
import sys

from conveyor.collector import YOUNG_THRESHOLD

#: This Python's thresholds as a process starts: (700, 10, 10), (2000, 10, 10) from 3.13 on.
DEFAULT = gc.get_threshold()

#: Frozen: whether tune_for_work froze anything. Compared with the count before it, not with
#: 0: Python 3.12.1 starts with a few hundred objects in the permanent generation already.
SHOW = "print(*gc.get_threshold(), gc.get_freeze_count() > frozen, gc.isenabled())"


def settings_after(before: str) -> list[str]:
    """The thresholds, whether anything was frozen and whether the collector is on, after
    `before` then tune_for_work, in a new process."""
    code = (
        f"import gc; {before}; frozen = gc.get_freeze_count();"
        " from conveyor.collector import tune_for_work; tune_for_work()"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"{code}; {SHOW}"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_raises_the_young_threshold_and_freezes_what_start_up_left() -> None:
    young, middle, old, frozen, enabled = settings_after("pass")
    assert (int(young), int(middle), int(old)) == (YOUNG_THRESHOLD, *DEFAULT[1:])
    assert frozen == "True" and enabled == "True"


def test_keeps_a_higher_threshold_set_before() -> None:
    young, middle, old, _, _ = settings_after("gc.set_threshold(50_000, 5, 7)")
    assert (int(young), int(middle), int(old)) == (50_000, 5, 7)


def test_leaves_a_collector_turned_off_alone() -> None:
    young, _, _, frozen, enabled = settings_after("gc.disable()")
    assert int(young) == DEFAULT[0] and frozen == "False" and enabled == "False"
