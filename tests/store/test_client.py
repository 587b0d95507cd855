"""Opening the store (widget_server.store.client): a burst of more calls than the client has
connections, as a crowd of hellos or a live offer's fan-out makes, waits for free connections,
on one server and on a cluster alike, and never opens more than the limit."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis
from redis.asyncio import Redis

from widget_server.store.client import open_store
from widget_server.store.embedded import EmbeddedValkey
from widget_server.store.local_cluster import LocalCluster
from widget_server.store.replicated import ReplicatedCalls

LIMIT = 4
CALLS = 300


async def burst(client: Redis) -> list[object]:
    """CALLS visitors' worth of commands, pipelines and replicated script calls at once."""
    incr = client.register_script("return redis.call('INCR', KEYS[1])")
    replicated = ReplicatedCalls(client)
    tag = secrets.token_hex(4)

    async def one(i: int) -> object:
        key = f"burst:{tag}:{i}"
        await client.set(key, i)
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 60)
            await pipe.execute()
        await replicated.call(incr, [key], [])
        return await client.get(key)

    return await asyncio.gather(*(one(i) for i in range(CALLS)), return_exceptions=True)


def connections_named(urls: list[str], name: str) -> list[int]:
    """Connections of the client named ``name`` on each server, leaving out the one a cluster
    client keeps apart from its pools, where it asked for the slots."""
    counts = []
    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            listed = client.client_list()
            counts.append(
                sum(1 for c in listed if c.get("name") == name and c.get("cmd") != "cluster|slots")
            )
        finally:
            client.close()
    return counts


@pytest.mark.parametrize("store", ["single", pytest.param("cluster", marks=pytest.mark.cluster)])
def test_more_calls_than_connections_wait_for_one(
    store: str, request: pytest.FixtureRequest
) -> None:
    if store == "cluster":
        cluster: LocalCluster = request.getfixturevalue("valkey_cluster")
        url, nodes = cluster.seed_url, [m.url for m in cluster.masters()]
    else:
        valkey: EmbeddedValkey = request.getfixturevalue("valkey")
        url, nodes = valkey.url, [valkey.url]
    name = "burst" + secrets.token_hex(4)
    peak = [0] * len(nodes)

    async def watched() -> list[object]:
        client = open_store(f"{url}?client_name={name}", max_connections=LIMIT)
        try:
            await client.ping()  # the cluster client learns the nodes first
            work = asyncio.create_task(burst(client))
            while not work.done():
                counts = await asyncio.to_thread(connections_named, nodes, name)
                peak[:] = [max(a, b) for a, b in zip(peak, counts, strict=True)]
                await asyncio.sleep(0.01)
            return await work
        finally:
            await client.aclose()

    results = asyncio.run(watched())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {CALLS} failed: {errors[0]!r}"
    assert sorted(int(r) for r in results) == list(range(2, CALLS + 2))  # type: ignore[arg-type]
    assert 1 <= max(peak) <= LIMIT, peak
