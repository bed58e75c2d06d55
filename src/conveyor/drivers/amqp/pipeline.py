"""Many methods of one channel sent in one write, their replies read in order: a round trip
for all of them.

aiormq's `rpc` holds the channel's lock from a call until its reply: a round trip per method,
so declaring, consuming and counting 300 queues took 300 of each. `rpc_all` writes every
method at once under that lock, and reads the replies aiormq's reader queues for the caller
(`rpc_frames`), as `rpc` does: public names of aiormq 7.x (the version pyproject.toml pins),
as wire.py's publishes use.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Sequence

import aiormq
from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp import commands as spec
from pamqp.base import Frame

__all__ = ["closing", "rpc_all"]

#: Channels asked to close (`_close`) whose close the broker has not answered yet.
_closing: weakref.WeakSet[aiormq.Channel] = weakref.WeakSet()


def closing(channel: AbstractChannel) -> bool:
    """Whether `channel` is closed, or asked to close: aiormq marks it closed only once the
    broker answers the close, and anything written to it before that (a call's methods, a
    publish) the broker, which closed it on reading the close, takes for a method on a channel
    never opened, and closes the whole connection for it ("CHANNEL_ERROR - expected
    'channel.open'"): every job the connection held goes back to its queue. And a call taking
    it meanwhile would read the replies still due to the call that closed it as its own."""
    return channel.is_closed or channel in _closing


async def rpc_all(
    channel: AbstractChannel, methods: Sequence[Frame], timeout: float
) -> list[Frame]:
    """Send `methods` on `channel` in one write and return the broker's replies to those that
    have one (synchronous, without no-wait), in order: one round trip for all.

    The broker handles a channel's methods in order, so a reply also means every method
    before it took; one it refused closes the channel, and its reason is raised. `timeout`
    bounds the wait for each reply, not for all (declaring 300 new queues takes the broker
    seconds). A reply that does not come in time, or a cancel, would leave the channel's later
    replies to answer other calls: the channel is closed then, as aiormq closes one after a
    call of its own that went unanswered."""
    assert isinstance(channel, aiormq.Channel)
    if closing(channel):
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    # A task of the channel's, as aiormq runs its calls: a closing channel throws its reason in.
    replies: list[Frame] = await channel.create_task(_rpc_all(channel, methods, timeout))
    return replies


async def _rpc_all(
    channel: aiormq.Channel, methods: Sequence[Frame], timeout: float
) -> list[Frame]:
    answered = [m for m in methods if m.synchronous and not getattr(m, "nowait", False)]
    replies: list[Frame] = []
    async with channel.lock:
        await channel.write_queue.put(ChannelFrame.marshall(channel.number, list(methods)))
        try:
            for method in answered:
                # Not wait_for: on Python 3.11 it swallows a cancel (the closing channel's)
                # that comes as the reply does, and the next reply never would.
                async with asyncio.timeout(timeout):
                    reply = await channel.rpc_frames.get()
                channel.rpc_frames.task_done()
                if reply.name not in method.valid_responses:
                    raise aiormq.exceptions.InvalidFrameError(reply)
                replies.append(reply)
        except asyncio.CancelledError:
            # Cancelled (a worker stopping), or thrown the reason of a channel that closed.
            # The replies still due would answer later calls: read and dropped here, before
            # another call goes out (aiormq closes a channel whose call was cancelled).
            if not closing(channel):
                await _drain(channel, len(answered) - len(replies), timeout)
            raise
        except BaseException:
            _close(channel)  # the broker went silent, or answered out of turn
            raise
    return replies


async def _drain(channel: aiormq.Channel, left: int, timeout: float) -> None:
    """Read and drop `left` replies; the channel is closed if they do not come in time."""
    try:
        async with asyncio.timeout(timeout):
            for _ in range(left):
                await channel.rpc_frames.get()
                channel.rpc_frames.task_done()
    except TimeoutError:
        _close(channel)
    except BaseException:
        _close(channel)
        raise


def _close(channel: aiormq.Channel) -> None:
    """Ask the broker to close the channel, whose replies no longer match its calls: aiormq
    closes it at the broker's answer, which rejects every call waiting on it."""
    if closing(channel):
        return
    _closing.add(channel)
    close = spec.Channel.Close(
        reply_code=504, reply_text="replies out of turn", class_id=0, method_id=0
    )
    with contextlib.suppress(asyncio.QueueFull):
        channel.write_queue.put_nowait(ChannelFrame.marshall(channel.number, [close]))
