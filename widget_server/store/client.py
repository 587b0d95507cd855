"""Opening the store: one Valkey/Redis server, or a Valkey/Redis Cluster found out from the server.

``WIDGET_REDIS_MODE`` says which: ``auto`` (the default) asks the server at ``REDIS_URL``
(``INFO cluster``) and uses redis-py's cluster client when ``cluster_enabled:1``; ``single`` and
``cluster`` force a mode and refuse a server that disagrees, with one line that says so. The
cluster client learns every node from the one in the URL and follows slots as they move.

Every part of the product types its client as :class:`redis.asyncio.Redis`: the cluster client
offers the same commands, pipelines and scripts, and the product's keys are laid out so that
every script and transaction touches one hash slot (see ``keys.py``).

On one server a call that finds every connection busy waits for one (redis-py's blocking pool).
redis-py's cluster client would fail it at once instead (``MaxConnectionsError``), so a burst of
hellos or a live offer's fan-out would turn into ``unavailable`` answers and lost offers; here
the cluster client's calls take a permit first, and wait for one the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar, Token
from typing import Any, cast

import redis as redis_sync
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.typing import EncodableT

from ..errors import ConfigurationError

# Calls in flight per client (a process opens one): on one connection each to the one server;
# on a cluster, a call uses at most one connection of each node.
MAX_CONNECTIONS = 64
# How long a call waits for a free connection (or a permit) before it fails.
POOL_TIMEOUT_S = 5.0
# Cluster connections held outside the permits (pub/sub subscriptions, a transaction's WATCH):
# allowed on each node beyond MAX_CONNECTIONS.
HELD_CONNECTIONS = 16
CHECK_TIMEOUT_S = 3.0


def check_store(url: str, mode: str = "auto") -> bool:
    """Reach the store at ``url``, check it answers and agrees with ``mode``; True for a
    cluster. Raises ConfigurationError with one line an operator can act on."""
    client = redis_sync.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
        enabled = _cluster_enabled(client)
    except redis_sync.AuthenticationError as exc:
        raise ConfigurationError(f"Redis at {url} refused the credentials: {exc}") from None
    except (redis_sync.RedisError, OSError) as exc:
        raise ConfigurationError(f"cannot reach Redis at {url}: {exc}") from None
    finally:
        client.close()
    if mode == "single" and enabled:
        raise ConfigurationError(
            f"Redis at {url} is a cluster node, but WIDGET_REDIS_MODE=single; "
            "set WIDGET_REDIS_MODE=cluster (or auto)"
        )
    if mode == "cluster" and not enabled:
        raise ConfigurationError(
            f"Redis at {url} is not a cluster node, but WIDGET_REDIS_MODE=cluster; "
            "set WIDGET_REDIS_MODE=single (or auto)"
        )
    return enabled


def _cluster_enabled(client: redis_sync.Redis) -> bool:
    try:
        info = client.info("cluster")
    except redis_sync.ResponseError:  # a server without the section: not a cluster
        return False
    return str(info.get("cluster_enabled", 0)) == "1"


def open_store(url: str, mode: str = "auto", *, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """An async client for the store at ``url`` (checked first, see :func:`check_store`)."""
    if check_store(url, mode):
        cluster = WaitingCluster.from_url(
            url, max_connections=max_connections + HELD_CONNECTIONS, permits=max_connections
        )
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_TIMEOUT_S
    )
    return Redis(connection_pool=pool)


def is_cluster(client: Redis) -> bool:
    return isinstance(client, RedisCluster)


# Set while a task holds a permit: what it does meanwhile (a command's retries, a pipeline's
# per-node parts) runs on that permit.
_holding: ContextVar[bool] = ContextVar("widget_store_permit", default=False)


class Permits:
    """At most ``count`` calls at once; one more waits up to ``timeout_s`` for a permit, then
    fails with redis-py's ConnectionError, as the single server's blocking pool does."""

    def __init__(self, count: int, timeout_s: float) -> None:
        self.free = asyncio.Semaphore(count)
        self.timeout_s = timeout_s

    def __call__(self) -> Permit:
        return Permit(self)


class Permit:
    """One use of :class:`Permits` (``async with``). Every command goes through here, so the
    usual case (a permit is free) takes no timer and no generator."""

    __slots__ = ("_permits", "_token")

    def __init__(self, permits: Permits) -> None:
        self._permits = permits
        self._token: Token[bool] | None = None

    async def __aenter__(self) -> None:
        if _holding.get():
            return
        free = self._permits.free
        if free.locked():
            try:
                async with asyncio.timeout(self._permits.timeout_s):
                    await free.acquire()
            except TimeoutError:
                raise RedisConnectionError(
                    f"no store connection free for {self._permits.timeout_s:g} s"
                ) from None
        else:
            await free.acquire()  # returns at once
        self._token = _holding.set(True)

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            _holding.reset(self._token)
            self._token = None
            self._permits.free.release()


class WaitingCluster(RedisCluster):
    """redis-py's cluster client whose commands and pipelines take a permit first: with at
    most ``permits`` calls in flight, no node is asked for more connections than that."""

    def __init__(self, *args: Any, permits: int = MAX_CONNECTIONS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.permit = Permits(permits, POOL_TIMEOUT_S)

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # redis-py's typing declares an attribute the class sets at run time as abstract.
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]


class _WaitingPipeline(ClusterPipeline):
    def __init__(self, client: WaitingCluster, transaction: bool | None) -> None:
        super().__init__(client, transaction)
        self._permit = client.permit

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with self._permit():
            return await super().execute(raise_on_error, allow_redirections)


def permit(client: Redis | RedisCluster) -> AbstractAsyncContextManager[None]:
    """The permit for a call that goes to a cluster node directly (not through the client's
    commands or pipelines); nothing to take on one server, whose pool waits by itself."""
    if isinstance(client, WaitingCluster):
        return client.permit()
    return contextlib.nullcontext()
