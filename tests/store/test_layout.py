"""A store written by an earlier version keeps its campaigns: their keys move once, on first use."""

from __future__ import annotations

import asyncio
import json
import secrets

from redis.asyncio import Redis

from widget_server.offers.campaign_store import CampaignStore
from widget_server.store.keys import Keys
from widget_server.store.layout import LAYOUT_VERSION, upgrade_layout
from widget_server.store.sites import SiteRegistry, new_site

from ..support import message_campaign


def test_campaigns_under_the_old_names_are_moved_and_kept(redis_url: str) -> None:
    keys = Keys(prefix="l" + secrets.token_hex(4))  # a store of this test's own

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            await SiteRegistry(client, keys).save(new_site("shop", origins=[]))
            first = message_campaign("c1")
            older = {"at": 1.0, "author": "a", "version": 1, "campaign": first}
            await client.hset(keys.v1_campaigns("shop"), "c1", json.dumps({**first, "version": 2}))
            await client.lpush(keys.v1_campaign_history("shop", "c1"), json.dumps(older))

            store = CampaignStore(client, keys)
            campaigns = await store.for_site("shop")
            assert [c.id for c in campaigns] == ["c1"] and campaigns[0].version == 2
            assert [entry["version"] for entry in await store.history("shop", "c1")] == [1]
            assert not await client.exists(keys.v1_campaigns("shop"))
            assert not await client.exists(keys.v1_campaign_history("shop", "c1"))
            assert int(await client.get(keys.layout())) == LAYOUT_VERSION
            # Once moved, nothing moves again: a key at the old name is left alone.
            await client.hset(keys.v1_campaigns("shop"), "stray", "{}")
            assert await upgrade_layout(client, keys) is False
            assert await client.hkeys(keys.campaigns("shop")) == [b"c1"]
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_newer_key_is_never_overwritten_by_an_old_one(redis_url: str) -> None:
    keys = Keys(prefix="l" + secrets.token_hex(4))

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            await SiteRegistry(client, keys).save(new_site("shop", origins=[]))
            await client.hset(keys.v1_campaigns("shop"), "old", "{}")
            await client.hset(keys.campaigns("shop"), "new", "{}")
            await upgrade_layout(client, keys)
            assert await client.hkeys(keys.campaigns("shop")) == [b"new"]
        finally:
            await client.aclose()

    asyncio.run(scenario())
