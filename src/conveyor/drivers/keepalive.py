"""TCP keepalive settings shared by the network drivers.

A connection that went silent while idle (a NAT gateway or firewall dropped its state, the
server failed over) gives no sign until something is sent on it; most systems send the first
keepalive probe after two hours. With these settings the system probes an idle connection
after `IDLE` seconds and drops it after `COUNT` unanswered probes `INTERVAL` seconds apart:
within 11 seconds. A probe is a few bytes every few seconds per idle connection.

`TCP_USER_TIMEOUT` also drops a connection whose sent data stays unacknowledged for longer than
the driver's call timeout, so a write into a dead link fails rather than retrying for minutes.
"""

from __future__ import annotations

import socket

__all__ = ["COUNT", "IDLE", "INTERVAL", "MOST_TIMEOUT", "tcp_options"]

#: Seconds idle before the first probe, seconds between probes, and unanswered probes after
#: which the system drops the connection.
IDLE = 5
INTERVAL = 2
COUNT = 3

#: The longest call deadline, in seconds: 24 days. Past about 24.8 the kernel's
#: TCP_USER_TIMEOUT (milliseconds, a C int) cannot take it, and the first connection failed.
MOST_TIMEOUT = 24 * 86_400


def tcp_options(timeout: float) -> dict[int, int]:
    """The IPPROTO_TCP socket options for keepalives and `timeout` (seconds) of unacknowledged
    data, as far as this platform has them (Linux has all four; macOS names the first
    TCP_KEEPALIVE)."""
    wanted = {
        "TCP_KEEPIDLE": IDLE,
        "TCP_KEEPALIVE": IDLE,
        "TCP_KEEPINTVL": INTERVAL,
        "TCP_KEEPCNT": COUNT,
        "TCP_USER_TIMEOUT": max(1, round(timeout * 1000)),
    }
    options: dict[int, int] = {}
    for name, value in wanted.items():
        option = getattr(socket, name, None)
        if option is not None:
            options.setdefault(option, value)
    return options
