"""A RabbitMQ node of a test's own, on spare loopback ports, whose resource alarms the test may
raise: the shared broker at 5672 is never touched (other tests publish to it).

The node runs as root from RabbitMQ's own scripts (/usr/lib/rabbitmq/bin, not the wrappers in
/usr/sbin, which switch to the rabbitmq user), with its files, its plugins list (none: no
management listener to clash with the shared node's) and its Erlang cookie (in a HOME of its
own, which rabbitmqctl shares) in a temporary folder. It takes several seconds to start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.backends.private import spare_port, wait_for_port

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
#: How long the node may take to start, in seconds.
START_TIMEOUT = 90.0


class PrivateRabbitmq:
    """`rabbitmq-server` on a spare port as node conveyor_alarm_<random>@localhost; `url`
    reaches it as guest/guest (loopback_users = none); `ctl` runs rabbitmqctl against it."""

    def __init__(self) -> None:
        if not (SCRIPTS / "rabbitmq-server").exists() or shutil.which("erl") is None:
            _skip_or_fail(f"RabbitMQ's server scripts are not in {SCRIPTS}")
        self.port, self.dist_port = spare_port(), spare_port()
        self.node = f"conveyor_alarm_{uuid.uuid4().hex[:8]}@localhost"
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-rabbitmq-"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        (self.folder / "home").mkdir()
        (self.folder / "plugins").write_text("[].\n")
        (self.folder / "env.conf").write_text("")
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(self.folder / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.process: subprocess.Popen[bytes] | None = None
        #: Whether the disk alarm may be up: `clear_disk_alarm` runs rabbitmqctl only then (each
        #: run starts an Erlang VM: a second or so of CPU).
        self.alarm_raised = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(SCRIPTS / "rabbitmq-server")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its Erlang children go with it (see close)
        )
        deadline = time.monotonic() + START_TIMEOUT
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                wait_for_port(self.port, up=True, timeout=1.0)
                break
            except AssertionError:
                continue
        if self.process.poll() is not None or time.monotonic() >= deadline:
            self.close()
            _skip_or_fail("a private RabbitMQ node did not start")
        self.ctl("await_startup")

    def ctl(self, *args: str) -> str:
        """Run `rabbitmqctl -n NODE args...`; what it prints."""
        done = subprocess.run(
            [str(SCRIPTS / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env, check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, f"rabbitmqctl {args}: {done.stderr.decode()}"
        return done.stdout.decode()

    def raise_disk_alarm(self) -> None:
        """A disk free limit far above the free space: the disk alarm at once."""
        self.alarm_raised = True
        self.ctl("set_disk_free_limit", "10000GB")

    def clear_disk_alarm(self) -> None:
        """Clear the disk alarm; nothing to run when no `raise_disk_alarm` came since the last."""
        if self.alarm_raised:
            self.ctl("set_disk_free_limit", "50MB")
            self.alarm_raised = False

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
