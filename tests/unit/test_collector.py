"""tune_for_work: what `conveyor work` does to the garbage collector before its workers start.
Each case runs in a Python process of its own, since the settings are the whole process's."""

from __future__ import annotations

import subprocess
import sys

from conveyor.collector import YOUNG_THRESHOLD

SHOW = "import gc; print(*gc.get_threshold(), gc.get_freeze_count() > 0, gc.isenabled())"


def settings_after(before: str) -> list[str]:
    """The thresholds, whether anything is frozen and whether the collector is on, after
    `before` then tune_for_work, in a new process."""
    code = f"import gc; {before}; from conveyor.collector import tune_for_work; tune_for_work()"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}; {SHOW}"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_raises_the_young_threshold_and_freezes_what_start_up_left() -> None:
    young, middle, old, frozen, enabled = settings_after("pass")
    assert (int(young), int(middle), int(old)) == (YOUNG_THRESHOLD, 10, 10)
    assert frozen == "True" and enabled == "True"


def test_keeps_a_higher_threshold_set_before() -> None:
    young, middle, old, _, _ = settings_after("gc.set_threshold(50_000, 5, 7)")
    assert (int(young), int(middle), int(old)) == (50_000, 5, 7)


def test_leaves_a_collector_turned_off_alone() -> None:
    young, _, _, frozen, enabled = settings_after("gc.disable()")
    assert int(young) == 700 and frozen == "False" and enabled == "False"
