"""The `conveyor` command's start-up: wall time of `import conveyor`, `conveyor --help`,
`conveyor list`, `conveyor push` and `conveyor work --burst` (an empty queue) against a small
sqlite app, each a fresh process, the median of `--runs`. Several source trees are measured
in turn, command by command, so that they meet the same load (the ratio to the first tree is
the figure that holds on a noisy machine):

    git archive main src | tar -x -C /tmp/before
    .venv/bin/python benchmarks/startup.py before=/tmp/before/src after=src --runs 20

With `--pyc`, each tree's bytecode is cached under a folder of its own (PYTHONPYCACHEPREFIX),
as an installed package's is; without, PYTHONDONTWRITEBYTECODE as the environment sets it.
Run by hand; never part of the tests. Which modules each path imports: `python -X importtime`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = """
from conveyor import Job, Registry

registry = Registry(default_driver="sqlite:///jobs.db")
registry.queue("tasks", workers=["w"], retry=0)
registry.worker("w", concurrency=2, poll_interval=0.05)


@registry.job("record")
def record(job: Job[dict[str, int]]) -> None:
    pass
"""

APP_OPTION = ["--app", "app:registry"]
COMMANDS = {
    "import conveyor": ["-c", "import conveyor"],
    "conveyor --help": ["-m", "conveyor", "--help"],
    "conveyor list": ["-m", "conveyor", "list", *APP_OPTION],
    "conveyor push": ["-m", "conveyor", "push", "tasks", "record", "--payload", "{}", *APP_OPTION],
    "conveyor work --burst": ["-m", "conveyor", "work", "w", "--burst", *APP_OPTION],
}


def environments(trees: list[str], folder: Path, pyc: bool) -> dict[str, dict[str, str]]:
    """label -> the environment that runs that tree's conveyor (label=path/to/src)."""
    found = {}
    for tree in trees:
        label, _, src = tree.partition("=")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(src).resolve()), str(folder)])}
        if pyc:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / f"pyc-{label}")
        found[label] = env
    return found


def timed(arguments: list[str], env: dict[str, str], folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments], env=env, cwd=folder, check=True, capture_output=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="label=path/to/src, the first the baseline")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pyc", action="store_true", help="bytecode cached, as installed")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "app.py").write_text(APP)
        envs = environments(options.trees, folder, options.pyc)
        for env in envs.values():  # the database made, the bytecode cached
            for arguments in COMMANDS.values():
                timed(arguments, env, folder)
        times: dict[tuple[str, str], list[float]] = {
            (label, command): [] for label in envs for command in COMMANDS
        }
        for _ in range(options.runs):
            for command, arguments in COMMANDS.items():
                for label, env in envs.items():
                    times[label, command].append(timed(arguments, env, folder))
    print(f"{'':24}" + "".join(f"{label:>10}" for label in envs) + "  ratio")
    for command in COMMANDS:
        medians = [statistics.median(times[label, command]) * 1000 for label in envs]
        cells = "".join(f"{median:8.0f}ms" for median in medians)
        print(f"{command:24}{cells}  {medians[-1] / medians[0]:.2f}")


if __name__ == "__main__":
    main()
