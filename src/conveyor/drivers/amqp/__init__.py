"""The RabbitMQ driver (pip install "conveyor[amqp]"): amqp://user:pw@host:5672/vhost, amqps://
for TLS.

URL options: `prefix` (default conveyor.: starts every queue and exchange name), `exchange`
(the delivery exchange's name, default <prefix>deliver) and `timeout`
(seconds, default 10: every call's deadline and the heartbeat); see
conveyor.drivers.amqp.driver for what it can and cannot do."""

from __future__ import annotations

from conveyor.drivers.amqp.driver import AmqpDriver

__all__ = ["AmqpDriver"]
