"""The Redis driver (pip install "conveyor[redis]"): redis://host:6379/0, rediss:// for TLS,
redis+sentinel://host1,host2/service/0 behind Sentinel (conveyor.drivers.redis.sentinel).

URL options: `prefix` (default conveyor:), `timeout` (seconds, default 10: every command's
deadline) and any of redis-py's; see conveyor.drivers.redis.connection."""

from __future__ import annotations

from conveyor.drivers.redis.driver import RedisDriver

__all__ = ["RedisDriver"]
