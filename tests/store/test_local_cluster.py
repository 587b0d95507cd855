"""The local Valkey cluster (widget_server.store.local_cluster): it comes up whole, a cluster client
reaches every shard, and a killed master's replica takes its slots over."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.crc import key_slot

from widget_server.store.local_cluster import (
    ClusterNode,
    LocalCluster,
    parse_cluster_nodes,
    slot_ranges,
)

pytestmark = pytest.mark.cluster


def key_in(slots: tuple[tuple[int, int], ...], prefix: str) -> str:
    """A key (of this test: ``prefix``) that falls in one of ``slots``."""
    for n in range(100_000):
        key = f"{prefix}:{n}"
        slot = key_slot(key.encode())
        if any(low <= slot <= high for low, high in slots):
            return key
    raise AssertionError(f"no key in {slots}")


@pytest.fixture
def cluster_client(valkey_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(valkey_cluster.seed_url, decode_responses=True)
    yield client
    client.close()


def test_slot_ranges_cover_every_slot_once() -> None:
    assert slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert slot_ranges(1) == [(0, 16383)]


def test_the_cluster_comes_up_with_three_masters_and_a_synced_replica_each(
    valkey_cluster: LocalCluster,
) -> None:
    assert valkey_cluster.health_problem() is None
    masters = valkey_cluster.masters()
    assert [valkey_cluster.slots_of(m) for m in masters] == [(r,) for r in slot_ranges(3)]
    replicas = [valkey_cluster.replica_of(m) for m in masters]
    assert len({n.node_id for n in masters + replicas}) == 6
    for node in valkey_cluster.nodes:
        info = node.call("CLUSTER", "INFO")
        assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info, info
        assert "cluster_size:3" in info and "cluster_slots_ok:16384" in info, info
        # Every node sees the same three masters, each with its replica.
        views = parse_cluster_nodes(node.call("CLUSTER", "NODES"))
        assert {v.node_id for v in views if v.is_master} == {m.node_id for m in masters}
        assert {v.node_id: v.master_id for v in views if not v.is_master} == {
            r.node_id: m.node_id for m, r in zip(masters, replicas, strict=True)
        }
    for master, replica in zip(masters, replicas, strict=True):
        assert node_role(replica) == ["slave", master.port]
        assert node_role(master) == ["master", replica.port]


def node_role(node: ClusterNode) -> list[object]:
    """A master and the port of its replica, or a replica and the port of its master."""
    role = node.call("ROLE")
    if role[0] == "master":
        return ["master", *(int(replica[1]) for replica in role[2])]
    return ["slave", int(role[2])]


def test_a_cluster_client_writes_and_reads_on_every_shard(
    valkey_cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    prefix = "t" + secrets.token_hex(4)
    for master in valkey_cluster.masters():
        key = key_in(valkey_cluster.slots_of(master), prefix)
        assert cluster_client.set(key, master.name)
        assert cluster_client.get(key) == master.name
        assert master.call("GET", key) == master.name  # it is stored on that shard
    # Keys of one hash tag share a slot: a multi-key transaction works, as the product's keys
    # of one visitor ({site:visitor}) need.
    tag = f"{prefix}:{{site:visitor}}"
    with cluster_client.pipeline(transaction=True) as pipe:
        pipe.hset(f"{tag}:profile", "visits", 1)
        pipe.sadd(f"{tag}:sids", "s1")
        pipe.execute()
    assert cluster_client.hget(f"{tag}:profile", "visits") == "1"
    assert cluster_client.smembers(f"{tag}:sids") == {"s1"}


def test_the_async_cluster_client_works_too(valkey_cluster: LocalCluster) -> None:
    prefix = "t" + secrets.token_hex(4)

    async def round_trip() -> list[str | None]:
        client = AsyncRedisCluster.from_url(valkey_cluster.seed_url, decode_responses=True)
        try:
            keys = [key_in(valkey_cluster.slots_of(m), prefix) for m in valkey_cluster.masters()]
            for key in keys:
                await client.set(key, key)
            return [await client.get(key) for key in keys]
        finally:
            await client.aclose()

    values = asyncio.run(round_trip())
    assert len(values) == 3 and all(v and v.startswith(prefix) for v in values)


@pytest.mark.slow
def test_a_killed_master_is_replaced_by_its_replica(tmp_path: Path) -> None:
    """Kill a master: its replica is promoted and writes to its slots succeed again; what was
    written and replicated before the kill is still there. The times are printed (``-s``)."""
    with LocalCluster(tmp_path / "cluster") as cluster:
        client = RedisCluster.from_url(cluster.seed_url, decode_responses=True)
        try:
            victim = cluster.masters()[0]
            replica = cluster.replica_of(victim)
            slots = cluster.slots_of(victim)
            key, later = key_in(slots, "before"), key_in(slots, "after")
            assert client.set(key, "before")
            assert victim.call("WAIT", 1, 5000) == 1  # the replica has it

            killed_at = time.monotonic()
            cluster.kill(victim)
            promoted = cluster.wait_for_failover(victim, timeout=30)
            promoted_after = time.monotonic() - killed_at
            assert promoted.node_id == replica.node_id
            assert cluster.slots_of(promoted) == slots

            deadline = time.monotonic() + 20
            while True:
                try:
                    client.set(later, "after")
                    break
                except (redis.RedisError, OSError):
                    assert time.monotonic() < deadline, "no write to the slots after failover"
                    time.sleep(0.1)
            writable_after = time.monotonic() - killed_at
            assert client.get(key) == "before"
            assert promoted.call("GET", later) == "after"
            print(
                f"\nfailover: replica promoted {promoted_after:.2f} s after the kill, "
                f"first write to its slots {writable_after:.2f} s after it "
                f"(cluster-node-timeout {cluster.node_timeout_ms} ms)"
            )

            cluster.restart(victim)  # back with its old identity: now a replica of its replica
            cluster.wait_healthy(timeout=30)
            assert [n.node_id for n in cluster.replicas(promoted)] == [victim.node_id]
            assert victim.call("ROLE")[0] == "slave"
        finally:
            client.close()
    assert not any(node.running for node in cluster.nodes)
