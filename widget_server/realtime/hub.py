"""Node presence and cross-node delivery.

Every server process is a node with its own pub/sub channel. A visitor's live sockets are listed in
Redis (connection id -> node id, under the visitor's hash tag), so a message for visitor V is
published to exactly the nodes that hold V's sockets. Site-wide pushes and cache invalidations go
through one broadcast channel that every node listens to.

The hub also keeps each site's per-minute activity (events, signals, offers) for the admin's live
view: counted in memory as messages arrive and written every few seconds in one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..metrics import Metrics
from ..store.bus import Bus
from ..store.keys import Keys
from ..store.replies import reply_text
from ..wire import nodes
from ..wire import protocol as p

log = logging.getLogger("widget_server.hub")
RATE_METRICS = ("events", "signals", "offers")
# A lost pub/sub connection is tried again after 0.2 s, doubling up to this: a store back (or a
# replica promoted) is heard within about a second.
RESUBSCRIBE_MAX_S = 1.0
RATE_FLUSH_S = 2.0  # how often the in-memory activity counts are written
RATE_TTL_S = 2 * 3600  # how long a site's per-minute counts are kept


class LiveSocket(Protocol):
    """What the hub needs from a connection it relays to."""

    connection_id: str
    site: str
    visitor: str

    async def push(self, text: str) -> None: ...

    async def end(self, reason: str) -> None:
        """Withdraw the offers on screen and close, remembering nothing more of the visitor."""
        ...


def new_node_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(3)}"


def minute_key(minute: int) -> str:
    """The UTC minute ``minute`` (minutes since the epoch) as ``YYYYMMDDHHMM``."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(minute * 60))


class Hub:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        metrics: Metrics,
        *,
        presence_ttl_s: int,
        on_site_changed: Callable[[str], None],
        on_notice: Callable[[nodes.Notice], Awaitable[None]] | None = None,
        on_resubscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.node_id = new_node_id()
        self._redis = redis
        self._bus = Bus(redis)
        self._keys = keys
        self._metrics = metrics
        self._presence_ttl = presence_ttl_s
        self._on_site_changed = on_site_changed
        self._on_notice = on_notice
        self._on_resubscribed = on_resubscribed
        self._sockets: dict[str, LiveSocket] = {}
        self._by_site: dict[str, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._catch_ups: set[asyncio.Task[None]] = set()
        self._site_seen: dict[str, float] = {}
        self._rates: dict[tuple[str, int], dict[str, int]] = {}

    # --- local registry ------------------------------------------------------------------
    def attach(self, sock: LiveSocket) -> None:
        self._sockets[sock.connection_id] = sock
        self._by_site.setdefault(sock.site, set()).add(sock.connection_id)

    async def detach(self, sock: LiveSocket) -> None:
        """Forget a socket here and in Redis (best effort: presence also expires by TTL)."""
        self._sockets.pop(sock.connection_id, None)
        site_sockets = self._by_site.get(sock.site)
        if site_sockets is not None:
            site_sockets.discard(sock.connection_id)
            if not site_sockets:
                del self._by_site[sock.site]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(self._keys.connections(sock.site, sock.visitor), sock.connection_id)
                pipe.zrem(self._keys.live(sock.site), sock.connection_id)
                await pipe.execute()
        except RedisError:
            self._metrics.redis_errors.inc()

    def local_sockets(self, site: str) -> list[LiveSocket]:
        return [
            self._sockets[cid] for cid in list(self._by_site.get(site, ())) if cid in self._sockets
        ]

    def local_count(self, site: str | None = None) -> int:
        if site is None:
            return len(self._sockets)
        return len(self._by_site.get(site, ()))

    async def mark_live(self, sock: LiveSocket) -> None:
        """Record the socket in the site's live set (read by the admin live view)."""
        try:
            await self._redis.zadd(self._keys.live(sock.site), {sock.connection_id: time.time()})
        except RedisError:
            self._metrics.redis_errors.inc()

    async def mark_site_seen(self, site: str) -> None:
        """Record that the widget connected from ``site`` (at most once a minute per node), for
        the admin's install check."""
        now = time.time()
        if now - self._site_seen.get(site, 0.0) < 60:
            return
        self._site_seen[site] = now
        try:
            await self._redis.set(self._keys.site_seen(site), int(now))
        except RedisError:
            self._metrics.redis_errors.inc()

    async def live_count(self, site: str) -> int:
        """Sockets of ``site`` connected now, on every node."""
        since = time.time() - self._presence_ttl
        return int(await self._redis.zcount(self._keys.live(site), since, "+inf"))

    # --- activity counts -----------------------------------------------------------------
    def count(self, site: str, metric: str, amount: int = 1) -> None:
        """Count activity of ``site`` (one of :data:`RATE_METRICS`) in memory; the heartbeat
        writes it to the site's per-minute hash within a few seconds."""
        bucket = self._rates.setdefault((site, int(time.time() // 60)), {})
        bucket[metric] = bucket.get(metric, 0) + amount

    async def flush_rates(self) -> None:
        """Write the counts gathered since the last flush (one pipeline). Counts that could not
        be written are dropped rather than risk counting them twice."""
        pending, self._rates = self._rates, {}
        if not pending:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for (site, minute), counts in pending.items():
                key = self._keys.rate(site, minute_key(minute))
                for metric, amount in counts.items():
                    pipe.hincrby(key, metric, amount)
                pipe.expire(key, RATE_TTL_S)
            await pipe.execute()

    async def rates(self, site: str, now: float, minutes: int = 15) -> list[dict[str, int]]:
        """The site's counts of the last ``minutes`` UTC minutes (the current one last), from
        every node. Each entry has ``minute`` (its start, unix seconds) and every metric."""
        current = int(now // 60)
        span = range(current - minutes + 1, current + 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(self._keys.rate(site, minute_key(minute)))
            rows = await pipe.execute()
        out = []
        for minute, raw in zip(span, rows, strict=True):
            values = {reply_text(k): int(v) for k, v in raw.items()}
            out.append({"minute": minute * 60, **{m: values.get(m, 0) for m in RATE_METRICS}})
        return out

    # --- sending -------------------------------------------------------------------------
    async def send_to_visitor(self, site: str, visitor: str, message: nodes.Relayed) -> int:
        """Deliver ``message`` to every live socket of a visitor, on any node. Returns sockets."""
        connections = await self._redis.hgetall(self._keys.connections(site, visitor))
        by_node: dict[str, list[str]] = {}
        for connection, node in connections.items():
            by_node.setdefault(reply_text(node), []).append(reply_text(connection))
        for node, ids in by_node.items():
            envelope = nodes.encode(nodes.Delivery(to=ids, msg=message))
            await self._bus.publish(self._keys.node_channel(node), envelope)
        return len(connections)

    async def end_visitor(self, site: str, visitor: str) -> int:
        """Close every live socket of a visitor, on any node, after withdrawing its offers; the
        connections remember nothing more (an erasure). Returns the sockets addressed."""
        return await self.send_to_visitor(site, visitor, nodes.Erased())

    async def broadcast(self, site: str, message: p.Push) -> int:
        """Deliver ``message`` to every live socket of a site on every node. Returns nodes."""
        payload = nodes.encode(nodes.SitePush(site=site, msg=message))
        return await self._bus.publish(self._keys.broadcast_channel(), payload)

    # --- background work ----------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="hub-listen"),
            asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await task
        with contextlib.suppress(RedisError):
            await self.flush_rates()
            await self._redis.zrem(self._keys.nodes(), self.node_id)

    async def _listen(self) -> None:
        channels = (self._keys.node_channel(self.node_id), self._keys.broadcast_channel())
        delay = 0.2
        while True:
            try:
                async for channel, data in self._bus.messages(channels, self._on_subscribed):
                    delay = 0.2
                    await self._dispatch(channel, data)
            except (RedisError, OSError) as exc:
                self._metrics.redis_errors.inc()
                log.warning("pub/sub connection lost; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_MAX_S)

    def _on_subscribed(self) -> None:
        """Listening (again). After a lost connection, messages published meanwhile were not
        heard: the node catches up from the store (campaigns, live offers) for its sockets."""
        if self._subscribed.is_set():
            task = asyncio.create_task(self._catch_up(), name="hub-catch-up")
            self._catch_ups.add(task)
            task.add_done_callback(self._catch_ups.discard)
        self._subscribed.set()

    async def _catch_up(self) -> None:
        if self._on_resubscribed is not None:
            await self._on_resubscribed()

    def local_sites(self) -> list[str]:
        return list(self._by_site)

    async def _dispatch(self, channel: object, data: object) -> None:
        """Act on one pub/sub message: a delivery on this node's channel, a notice on the
        broadcast channel. A message that does not decode is logged and dropped, and a failure
        while acting on one is logged: neither ends the listener."""
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        on_broadcast = name == self._keys.broadcast_channel()
        try:
            if not isinstance(data, bytes | str):
                raise msgspec.DecodeError(f"expected bytes or str, got {type(data).__name__}")
            message = nodes.decode_notice(data) if on_broadcast else nodes.decode_delivery(data)
        except msgspec.DecodeError as exc:
            log.warning(
                "ignoring a malformed pub/sub message",
                extra={"channel": name, "error": str(exc)[:200]},
            )
            return
        try:
            if isinstance(message, nodes.Delivery):
                await self._relay([self._sockets.get(cid) for cid in message.to], message.msg)
            elif isinstance(message, nodes.SitePush):
                site_ids = list(self._by_site.get(message.site, ()))
                await self._relay([self._sockets.get(cid) for cid in site_ids], message.msg)
            elif isinstance(message, nodes.SiteChanged):
                self._on_site_changed(message.site)
            elif self._on_notice is not None:
                await self._on_notice(message)
        except Exception:
            log.exception("a pub/sub message failed", extra={"channel": name})

    async def _relay(self, targets: list[LiveSocket | None], message: nodes.Relayed) -> None:
        """Hand a relayed message to the sockets of this node it names."""
        if isinstance(message, nodes.Erased):
            ends = [s.end("erased") for s in targets if s is not None]
            await asyncio.gather(*ends, return_exceptions=True)
            return
        text = p.encode(message)
        sends: list[Awaitable[None]] = [s.push(text) for s in targets if s is not None]
        if sends:
            results = await asyncio.gather(*sends, return_exceptions=True)
            self._metrics.pushes.inc(sum(1 for r in results if r is None))

    async def _heartbeat(self) -> None:
        """Presence every third of its TTL; activity counts every :data:`RATE_FLUSH_S`."""
        interval = max(1.0, self._presence_ttl / 3)
        refreshed = float("-inf")
        while True:
            try:
                if time.monotonic() - refreshed >= interval:
                    await self._refresh_presence()
                    refreshed = time.monotonic()
                await self.flush_rates()
            except RedisError:
                self._metrics.redis_errors.inc()
            await asyncio.sleep(min(RATE_FLUSH_S, interval))

    async def _refresh_presence(self) -> None:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._keys.nodes(), {self.node_id: now})
            for sock in list(self._sockets.values()):
                pipe.zadd(self._keys.live(sock.site), {sock.connection_id: now})
                pipe.expire(self._keys.connections(sock.site, sock.visitor), self._presence_ttl)
            for site in list(self._by_site):
                pipe.zremrangebyscore(self._keys.live(site), "-inf", now - self._presence_ttl)
            await pipe.execute()
