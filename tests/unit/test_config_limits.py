"""Absurd numbers (1e300 seconds, infinity, NaN) are refused wherever a duration is given: in
conveyor.toml, pyproject.toml's [tool.conveyor], the environment and the code, by the one
check (`duration.seconds`) that names the setting, where it came from and the range."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conveyor import ConfigError, Exponential
from tests.unit.test_config import in_tmp_path, make_app, mistakes, send

__all__ = ["in_tmp_path"]  # the fixture every test here uses: run in tmp_path, no CONVEYOR_*

RANGE = "at most 100 years (3153600000s)"


FILE = """\
timeout = 1e300
retry_delay = { base = "1s", max = 1e300 }

[queues.mail]
retention = "36501d"

[workers.main]
lease = 1e300
poll_interval = inf
stop_timeout = "99999999999d"
"""


@pytest.mark.parametrize(
    ("name", "table"), [("conveyor.toml", ""), ("pyproject.toml", "tool.conveyor.")]
)
def test_a_file_with_absurd_durations_names_each_line_and_the_range(
    tmp_path: Path, name: str, table: str
) -> None:
    text = FILE.replace("[queues", f"[{table}queues").replace("[workers", f"[{table}workers")
    (tmp_path / name).write_text(f"[tool.conveyor]\n{text}" if table else text)
    shift = 1 if table else 0
    refused = mistakes()
    for line, said in [
        (1, "timeout = 1e+300: timeout must be more than 0 seconds and " + RANGE),
        (2, "retry_delay = {'base': '1s', 'max': 1e+300}: retry_delay must be from 0 seconds"),
        (5, "[queues.mail] retention = '36501d': queue 'mail' retention must be more than 0"),
        (8, "[workers.main] lease = 1e+300: worker 'main' lease must be more than 0 seconds"),
        (9, "[workers.main] poll_interval = inf: worker 'main' poll_interval must be more than"),
        (10, "[workers.main] stop_timeout = '99999999999d': worker 'main' stop_timeout must be"),
    ]:
        assert f"- {name}:{line + shift}: {said}" in refused
    assert refused.count("100 years (3153600000s)") == 6


@pytest.mark.parametrize(
    ("variable", "said"),
    [
        ("CONVEYOR_TIMEOUT", "timeout must be more than 0 seconds and " + RANGE),
        ("QUEUE_TIMEOUT", "timeout must be more than 0 seconds and " + RANGE),
        ("CONVEYOR_RETRY_DELAY", "retry_delay must be from 0 seconds to 100 years"),
        ("CONVEYOR_QUEUE_MAIL_TIMEOUT", "timeout must be more than 0 seconds and " + RANGE),
        ("CONVEYOR_WORKER_MAIN_LEASE", "worker 'main' lease must be more than 0 seconds and"),
        (
            "CONVEYOR_WORKER_MAIN_STOP_TIMEOUT",
            "worker 'main' stop_timeout must be from 0 seconds to 100 years",
        ),
    ],
)
def test_an_absurd_duration_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, said: str
) -> None:
    monkeypatch.setenv(variable, "1e300")
    assert f"- environment variable {variable}='1e300': {said}" in mistakes()


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda r: r.queue("a", timeout=1e300), "timeout must be more than 0 seconds and"),
        (lambda r: r.queue("a", retry_delay=1e300), "retry_delay must be from 0 seconds to"),
        (lambda r: r.queue("a", retry_delay=Exponential(max=1e300)), "retry_delay must be"),
        (lambda r: r.queue("a", retention=float("inf")), "retention must be more than 0"),
        (lambda r: r.worker("w", lease=1e300), "lease must be more than 0 seconds and"),
        (lambda r: r.worker("w", poll_interval=1e300), "poll_interval must be more than 0"),
        (lambda r: r.worker("w", stop_timeout=float("nan")), "stop_timeout must be from 0"),
        (lambda r: r.job("j", timeout=1e300)(send), "timeout must be more than 0 seconds and"),
        (lambda r: r.blocking.push("mail", "mail.send", {}, timeout=1e300), "timeout must be"),
        (lambda r: r.blocking.push("mail", "mail.send", {}, retry_delay=1e12), "retry_delay"),
        (lambda r: r.blocking.push("mail", "mail.send", {}, delay=1e300), "delay must be from"),
    ],
)
def test_an_absurd_duration_in_code_is_refused_with_the_range(call: Any, said: str) -> None:
    registry = make_app()
    with pytest.raises(ConfigError, match=rf"{said}.*100 years \(3153600000s\)"):
        call(registry)
    registry.blocking.close()


def test_the_longest_duration_is_accepted_everywhere(tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(
        'timeout = "36500d"\nretry_delay = "36500d"\n[workers.main]\nlease = "36500d"\n'
    )
    registry = make_app()
    registry.freeze()
    assert registry.workers["main"].lease == 100 * 365 * 86400.0
    registry.blocking.close()


SHRINKING = [
    ("factor = 0.5", Exponential(base=10.0, factor=0.5), "factor must be 1 or more"),
    ("factor = 0", Exponential(base=10.0, factor=0), "factor must be 1 or more"),
    ("max = 1", Exponential(base=10.0, max=1.0), r"max must be at least base \(10.0\)"),
    ('jitter = "yes"', Exponential(base=10.0, jitter="yes"), "jitter must be True or False"),  # type: ignore[arg-type]
]


def test_a_base_past_the_default_max_is_refused_saying_to_give_a_max(tmp_path: Path) -> None:
    """`{ base = "2h" }` alone was refused for a max the user never wrote: now it says so."""
    said = r"not 3600.0 \(max is 3600 seconds unless given: give a max of at least the base\)"
    with pytest.raises(ConfigError, match=said):
        make_app(retry_delay=Exponential(base=7200.0))
    (tmp_path / "conveyor.toml").write_text('[queues.mail]\nretry_delay = { base = "2h" }\n')
    assert re.search(f"conveyor.toml:2: .*{said}", mistakes())


@pytest.mark.parametrize(("toml", "policy", "said"), SHRINKING, ids=[t for t, _, _ in SHRINKING])
def test_an_exponential_backoff_that_would_not_grow_is_refused_everywhere(
    tmp_path: Path, toml: str, policy: Exponential, said: str
) -> None:
    """factor < 1 made the waits shrink; max < base or a jitter of "yes" made no sense."""
    with pytest.raises(ConfigError, match=f"retry_delay: Exponential {said}"):
        make_app(retry_delay=policy)
    registry = make_app()
    with pytest.raises(ConfigError, match=f"retry_delay: Exponential {said}"):
        registry.blocking.push("mail", "mail.send", {}, retry_delay=policy)
    registry.blocking.close()
    (tmp_path / "conveyor.toml").write_text(
        f'[queues.mail]\nretry_delay = {{ base = "10s", {toml} }}\n'
    )
    assert re.search(f"conveyor.toml:2: .*retry_delay: Exponential {said}", mistakes())


@pytest.mark.parametrize("policy", [Exponential(base=-1.0), Exponential(factor=-2.0)])
def test_a_negative_base_or_factor_is_refused_with_the_range(policy: Exponential) -> None:
    with pytest.raises(ConfigError, match=r"retry_delay must be from 0 seconds.*factor >= 1"):
        make_app(retry_delay=policy)
