"""Script calls whose writes must outlive a failover: a claim that hands out a unique code.

Replication is asynchronous, so a master can acknowledge a write and die before its replica has
it; the promoted replica would then hand the same pool code to the next visitor. Here the script
and a ``WAIT 1`` travel on one connection to the master that owns the keys, so the caller knows
whether a replica has the write before the code is shown. A master without a replica has nothing
to wait for (its own AOF is what keeps the write); a replica that does not answer within
:data:`WAIT_MS` leaves the decision to the caller (the product shows the code and counts it).

On a cluster the master comes from the client's slot map; when the slot has moved (a failover in
progress) the call goes through the cluster client, which follows the move, without the wait.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import TimeoutError as StoreTimeoutError

from .client import permit

WAIT_MS = 200
# How long the replica count of a single server is trusted.
REPLICAS_TTL_S = 10.0
NO_REPLICA = -1
# What a direct call to a master meets while the slot map changes: the slot moved, the master is
# gone or not answering, the cluster is settling.
_TOPOLOGY_CHANGED = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    StoreConnectionError,
    StoreTimeoutError,
)


class ReplicatedCalls:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        # Per master: when its replica count was read, and the count.
        self._replicas: dict[str, tuple[float, int]] = {}

    async def call(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, int]:
        """Run ``script``; return its result and how many replicas acknowledged its writes
        (:data:`NO_REPLICA` when there is none to wait for)."""
        if isinstance(self._redis, RedisCluster):
            return await self._on_cluster(self._redis, script, keys, args)
        return await self._on_server(script, keys, args)

    async def _on_server(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> tuple[Any, int]:
        if await self._replica_count("", lambda: self._redis.info("replication")) == 0:
            return await script(keys=list(keys), args=list(args)), NO_REPLICA
        async with self._redis.pipeline(transaction=False) as pipe:
            await script(keys=list(keys), args=list(args), client=pipe)
            pipe.execute_command("WAIT", 1, WAIT_MS)
            result, acked = await pipe.execute()
        return result, int(acked)

    async def _replica_count(
        self, master: str, info: Callable[[], Awaitable[dict[str, Any]]]
    ) -> int:
        """How many replicas ``master`` has now, as it says itself (``INFO replication``: a
        client's slot map may be older than the replicas), read at most every
        :data:`REPLICAS_TTL_S`."""
        now = time.monotonic()
        known = self._replicas.get(master)
        if known is None or now - known[0] > REPLICAS_TTL_S:
            reply = await info()
            known = (now, int(reply.get("connected_slaves", 0)))
            self._replicas[master] = known
        return known[1]

    async def _on_cluster(
        self,
        cluster: RedisCluster,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[Any],
    ) -> tuple[Any, int]:
        master = cluster.get_node_from_key(keys[0])
        if master is None:
            return await script(keys=list(keys), args=list(args)), NO_REPLICA
        try:
            async with permit(cluster):  # a connection of the client's own budget
                info = partial(master.execute_command, "INFO", "replication")
                if await self._replica_count(master.name, info) > 0:
                    return await _script_and_wait(master, script, keys, args)
        except _TOPOLOGY_CHANGED:  # the cluster client follows the change and learns the new map
            pass
        return await script(keys=list(keys), args=list(args)), NO_REPLICA


async def _script_and_wait(
    master: ClusterNode, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
) -> tuple[Any, int]:
    """EVALSHA (EVAL when the master does not know the script yet) then WAIT, on one
    connection of ``master``."""
    head = [len(keys), *keys, *args]
    for command in ("EVALSHA", "EVAL"):
        body = script.sha if command == "EVALSHA" else script.script
        commands = [
            PipelineCommand(0, command, body, *head),
            PipelineCommand(1, "WAIT", 1, WAIT_MS),
        ]
        await master.execute_pipeline(commands)
        result, acked = commands[0].result, commands[1].result
        if isinstance(result, NoScriptError) and command == "EVALSHA":
            continue
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, Exception):
            raise acked
        return result, int(acked)
    raise AssertionError("unreachable")
