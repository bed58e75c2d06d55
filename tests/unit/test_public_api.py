"""The public API: `conveyor.__all__` is sorted, pinned, and every name in it imports."""

from __future__ import annotations

import importlib

import pytest

import conveyor

EXPECTED_ALL = [
    "BackendUnavailableError",
    "Capabilities",
    "ChainExistsError",
    "ChainInfo",
    "ConfigError",
    "ConveyorError",
    "CorruptJobError",
    "Driver",
    "DriverError",
    "ErrorInfo",
    "Exponential",
    "Fail",
    "FailedAttempt",
    "Fixed",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobHandle",
    "JobInfo",
    "JobState",
    "JobTimeoutError",
    "LeaseExpiredError",
    "PayloadError",
    "QueueCounts",
    "Registry",
    "RegistryError",
    "Retry",
    "Throughput",
    "UnknownJobError",
    "UnknownQueueError",
    "UnknownWorkerError",
    "Unsupported",
    "Worker",
    "WorkerCounts",
]


def test_all_is_sorted() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)


def test_all_is_pinned_to_the_reviewed_list() -> None:
    # Adding or removing a public name is a deliberate change: update this list with it.
    assert conveyor.__all__ == EXPECTED_ALL


def test_all_has_no_duplicates() -> None:
    assert len(set(conveyor.__all__)) == len(conveyor.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_is_importable_from_the_package(name: str) -> None:
    module = importlib.import_module("conveyor")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from conveyor import {name}", namespace)
    assert namespace[name] is getattr(conveyor, name)


def test_star_import_exports_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from conveyor import *", namespace)
    exported = sorted(key for key in namespace if key != "__builtins__")
    assert exported == EXPECTED_ALL


def test_every_public_error_derives_from_the_root() -> None:
    errors = [getattr(conveyor, name) for name in EXPECTED_ALL if name.endswith("Error")]
    errors.append(conveyor.Unsupported)
    for error in errors:
        assert issubclass(error, conveyor.ConveyorError), error
