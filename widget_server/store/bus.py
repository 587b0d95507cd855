"""Messages between nodes: sharded pub/sub on a cluster, classic pub/sub on one server.

On a Valkey/Redis Cluster a classic ``PUBLISH`` reaches every node of the cluster, so its cost
grows with the cluster; ``SPUBLISH`` goes only to the shard that owns the channel's slot, and a
subscriber (``SSUBSCRIBE``) listens to that shard alone. Node channels hash to different slots,
so node-addressed traffic spreads over the shards. redis-py's cluster pub/sub follows a channel
when its slot moves or its master fails over; a connection lost for good ends :meth:`messages`
with the error, and the caller subscribes again.

Publishing is fire and forget in both modes: a node that is not subscribed at that moment
misses the message, so every message here is either a hint (caches re-read the store) or has a
retry of its own (the widget resends what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .client import is_cluster

# How long one poll of a shard waits for a message before looking again.
POLL_S = 1.0


class Bus:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.sharded = is_cluster(redis)

    async def publish(self, channel: str, payload: bytes | str) -> int:
        """Send ``payload`` on ``channel``; returns how many subscribers got it."""
        if self.sharded:
            return int(await self._redis.spublish(channel, payload))
        return int(await self._redis.publish(channel, payload))

    async def messages(
        self, channels: Sequence[str], subscribed: Callable[[], None] | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Every message on ``channels`` as ``(channel, data)``, until the connection is lost
        (then the RedisError or OSError is raised). ``subscribed`` is called once listening:
        messages published before then were not heard."""
        if self.sharded:
            stream = self._sharded(channels, subscribed)
        else:
            stream = self._classic(channels, subscribed)
        async for item in stream:
            yield item

    async def _classic(
        self, channels: Sequence[str], subscribed: Callable[[], None] | None
    ) -> AsyncIterator[tuple[str, bytes]]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            if subscribed is not None:
                subscribed()
            async for message in pubsub.listen():
                yield _text(message.get("channel")), message.get("data") or b""
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _sharded(
        self, channels: Sequence[str], subscribed: Callable[[], None] | None
    ) -> AsyncIterator[tuple[str, bytes]]:
        # One reader per channel: a reader polls only the shard that owns its channel, so a
        # quiet shard never delays a message waiting on another.
        queue: asyncio.Queue[tuple[str, bytes] | BaseException] = asyncio.Queue()
        ready = [asyncio.Event() for _ in channels]
        tasks = [
            asyncio.create_task(self._read_shard(channel, queue, event), name=f"bus-{channel}")
            for channel, event in zip(channels, ready, strict=True)
        ]
        try:
            await asyncio.gather(*(event.wait() for event in ready))
            if subscribed is not None and all(not task.done() for task in tasks):
                subscribed()
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await task

    async def _read_shard(
        self,
        channel: str,
        queue: asyncio.Queue[tuple[str, bytes] | BaseException],
        ready: asyncio.Event,
    ) -> None:
        pubsub: Any = self._redis.pubsub()
        try:
            await pubsub.ssubscribe(channel)
            ready.set()
            while True:
                message = await pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=POLL_S
                )
                if message is not None and message.get("type") == "smessage":
                    await queue.put((_text(message.get("channel")), message.get("data") or b""))
        except (RedisError, OSError) as exc:
            ready.set()
            await queue.put(exc)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
