"""The Redis driver (pip install "conveyor[redis]"): redis://host:6379/0, rediss:// for TLS."""

from __future__ import annotations

from conveyor.drivers.redis.driver import RedisDriver

__all__ = ["RedisDriver"]
