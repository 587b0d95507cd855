"""Opening the store: one Valkey/Redis server, or a Valkey/Redis Cluster found out from the server.

``WIDGET_REDIS_MODE`` says which: ``auto`` (the default) asks the server at ``REDIS_URL``
(``INFO cluster``) and uses redis-py's cluster client when ``cluster_enabled:1``; ``single`` and
``cluster`` force a mode and refuse a server that disagrees, with one line that says so. The
cluster client learns every node from the one in the URL and follows slots as they move.

Every part of the product types its client as :class:`redis.asyncio.Redis`: the cluster client
offers the same commands, pipelines and scripts, and the product's keys are laid out so that
every script and transaction touches one hash slot (see ``keys.py``).
"""

from __future__ import annotations

from typing import cast

import redis as redis_sync
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from ..errors import ConfigurationError

# Connections per process: to the one server, or to each node of a cluster.
MAX_CONNECTIONS = 64
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
        cluster = RedisCluster.from_url(url, max_connections=max_connections)
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
    return Redis(connection_pool=pool)


def is_cluster(client: Redis) -> bool:
    return isinstance(client, RedisCluster)
