"""conveyor as a user installs it: the sdist and the wheel `python -m build` makes of this tree,
then that wheel alone, with no extra and the oldest release of each dependency pyproject.toml
lets in, in a virtualenv of its own, run from a folder outside the tree with no PYTHONPATH.

Every other test runs the checkout itself, so a file the code reads at run time (queries.sql,
the migrations, the Lua scripts, the dashboard's templates, py.typed) that the package's
configuration leaves out shows only here. The wheel is built from a copy of this tree's src/,
so the installed code is the tree's own, as the other subprocess tests' PYTHONPATH makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import conveyor

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "conveyor"
TYPING = ROOT / "tests" / "typing"

pytestmark = pytest.mark.timeout(180)

APP = """
from conveyor import Job, Registry

registry = Registry()
registry.queue("mail", workers=["main"], retry=0, driver={driver!r})
registry.worker("main")

@registry.job("mail.send", queue="mail")
async def send(job: Job[dict[str, str]]) -> None:
    print("sent to", job.payload["to"])
"""


def package_files() -> set[str]:
    """Every file of src/conveyor, as a path from src/ (conveyor/drivers/redis/lua/push.lua)."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it, of a copy of the tree (a build writes build/
    and an egg-info beside the sources: never in the checkout other tests run)."""
    tree = tmp_path_factory.mktemp("tree")
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(PACKAGE, tree / "src" / "conveyor", ignore=ignored)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tree / "dist"), str(tree)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [sdist] = (tree / "dist").glob("*.tar.gz")
    [wheel] = (tree / "dist").glob("*.whl")
    return sdist, wheel


def oldest_dependencies() -> list[str]:
    """pyproject.toml's dependencies, each pinned to the oldest release it lets in: a user's
    environment may hold just those (`pydantic>=2.10` -> `pydantic==2.10`)."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        dependencies: list[str] = tomllib.load(file)["project"]["dependencies"]
    assert all(">=" in dependency for dependency in dependencies), dependencies
    return [dependency.replace(">=", "==") for dependency in dependencies]


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a new virtualenv holding the wheel and the oldest releases of what it
    depends on, no extra."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python"), "install",
         "--quiet", str(built[1]), *oldest_dependencies()],
        capture_output=True,
        text=True,
        timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder / "bin"


def run(
    venv: Path, cwd: Path, *args: str, program: str = "conveyor"
) -> subprocess.CompletedProcess[str]:
    """`program` of the virtualenv run in `cwd`, with none of the tree's or the test run's
    settings: no PYTHONPATH, no CONVEYOR_*, QUEUE_* or DATABASE_URL."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONPATH" and not name.startswith(("CONVEYOR_", "QUEUE_", "DATABASE_URL"))
    }
    return subprocess.run(
        [str(venv / program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def app_folder(tmp_path: Path, driver: str) -> Path:
    """A folder outside the tree holding the user's app, app.py, on `driver`."""
    (tmp_path / "app.py").write_text(APP.format(driver=driver))
    return tmp_path


def test_the_wheel_holds_every_file_of_the_package(built: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(built[1]) as wheel:
        shipped = {name for name in wheel.namelist() if name.startswith("conveyor/")}
    assert shipped == package_files()


def test_the_sdist_holds_every_file_of_the_package(built: tuple[Path, Path]) -> None:
    top = built[0].name.removesuffix(".tar.gz")
    with tarfile.open(built[0]) as sdist:
        names = {member.name.removeprefix(f"{top}/") for member in sdist if member.isfile()}
    assert {name.removeprefix("src/") for name in names if name.startswith("src/conveyor/")} == (
        package_files()
    )
    assert {"pyproject.toml", "README.md"} <= names


def test_the_installed_package_is_versioned_as_conveyor_says(
    built: tuple[Path, Path], venv: Path, tmp_path: Path
) -> None:
    assert built[1].name.startswith(f"conveyor-{conveyor.__version__}-")
    assert run(venv, tmp_path, "--version").stdout == f"conveyor {conveyor.__version__}\n"


def test_the_installed_package_pushes_and_works_a_job_from_outside_the_tree(
    venv: Path, tmp_path: Path
) -> None:
    cwd = app_folder(tmp_path, "sqlite:///jobs.db")
    where = run(venv, cwd, "-c", "import conveyor; print(conveyor.__file__)", program="python")
    assert Path(where.stdout.strip()).is_relative_to(venv.parent), where.stdout + where.stderr
    pushed = run(venv, cwd, "push", "mail", "mail.send", "--app", "app:registry", "--json",
                 "--payload", '{"to": "ada@example.com"}')  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    job_id = json.loads(pushed.stdout)["id"]
    worked = run(venv, cwd, "work", "main", "--app", "app:registry", "--burst")
    assert worked.returncode == 0, worked.stderr
    assert "sent to ada@example.com" in worked.stdout
    shown = run(venv, cwd, "job", job_id, "--app", "app:registry", "--json")
    assert json.loads(shown.stdout)["state"] == "succeeded", shown.stderr


@pytest.mark.parametrize(
    ("driver", "extra"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgres"),
        ("mysql://root@127.0.0.1:3306/test", "mysql"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp"),
    ],
)
def test_a_driver_whose_extra_is_not_installed_names_the_extra(
    venv: Path, tmp_path: Path, driver: str, extra: str
) -> None:
    cwd = app_folder(tmp_path, driver)  # the client is missing: nothing connects
    pushed = run(venv, cwd, "push", "mail", "mail.send", "--app", "app:registry",
                 "--payload", '{"to": "ada@example.com"}')  # fmt: skip
    assert pushed.returncode == 1
    [line] = pushed.stderr.splitlines()  # no traceback
    assert line.endswith(f'pip install "conveyor[{extra}]"'), line


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["work", "main", "--burst", "--loop", "uvloop"], "uvloop"),
        (["work", "main", "--burst", "--metrics-port", "59108"], "metrics"),
        (["dashboard", "--port", "59080"], "dashboard"),
    ],
    ids=["uvloop", "metrics", "dashboard"],
)
def test_an_option_whose_extra_is_not_installed_names_the_extra(
    venv: Path, tmp_path: Path, command: list[str], extra: str
) -> None:
    cwd = app_folder(tmp_path, "sqlite:///jobs.db")
    done = run(venv, cwd, *command, "--app", "app:registry")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()  # nothing more: no traceback, no warning
    assert line.endswith(f'pip install "conveyor[{extra}]"'), line


@pytest.mark.parametrize(
    ("module", "extra"),
    [("conveyor.metrics", "metrics"), ("conveyor.tracing", "otel"),
     ("conveyor.dashboard.app", "dashboard")],
)  # fmt: skip
def test_a_module_whose_extra_is_not_installed_names_the_extra(
    venv: Path, tmp_path: Path, module: str, extra: str
) -> None:
    code = f"try:\n    import {module}\nexcept ImportError as exc:\n    print(exc)"
    done = run(venv, tmp_path, "-c", code, program="python")
    assert done.stdout.strip().endswith(f'pip install "conveyor[{extra}]"'), done.stderr


def mypy_errors(cwd: Path, *options: str) -> list[str]:
    """`mypy --strict`'s error lines on tests/typing/, run in `cwd`, each without its folder."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *options,
         *(str(path) for path in sorted(TYPING.glob("*.py")))],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 2 would be mypy itself failing
    return [line.rpartition("/")[2] for line in done.stdout.splitlines() if ": error: " in line]


def test_a_users_mypy_types_the_installed_package_as_the_projects_does(
    venv: Path, tmp_path: Path
) -> None:
    """From a folder of the user's (no project configuration, no pydantic plugin), mypy finds
    conveyor in the virtualenv by its py.typed, and reports what it reports in the tree: no
    error in the *_ok.py files, and each wrong payload or option in the *_wrong.py files."""
    python = str(venv / "python")
    outside = mypy_errors(tmp_path, "--python-executable", python, "--cache-dir", str(tmp_path))
    assert outside == mypy_errors(ROOT)
    assert not [line for line in outside if "_ok.py" in line], outside
