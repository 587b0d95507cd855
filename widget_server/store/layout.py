"""Upgrades of the key layout, applied once per store before the keys they move are used.

Version 2 put a site's campaigns and each campaign's history under the hash tag ``{site}``, so
that saving a campaign (the campaigns hash and the history list, in one transaction) touches one
slot on a cluster. A store written by an earlier version has them under plain names; they are
renamed here. A cluster never held the old names (they could not be saved there), so on a
cluster only the version mark is written.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .client import is_cluster
from .keys import Keys
from .replies import reply_text

LAYOUT_VERSION = 2


async def upgrade_layout(redis: Redis, keys: Keys) -> bool:
    """Bring the store to :data:`LAYOUT_VERSION`; True when something was renamed."""
    marker = keys.layout()
    current = await redis.get(marker)
    if current is not None and int(current) >= LAYOUT_VERSION:
        return False
    renamed = False
    if not is_cluster(redis):
        for site in sorted(reply_text(s) for s in await redis.smembers(keys.site_index())):
            renamed |= await _move(redis, keys.v1_campaigns(site), keys.campaigns(site))
            for campaign in await redis.hkeys(keys.campaigns(site)):
                cid = reply_text(campaign)
                renamed |= await _move(
                    redis, keys.v1_campaign_history(site, cid), keys.campaign_history(site, cid)
                )
    await redis.set(marker, LAYOUT_VERSION)
    return renamed


async def _move(redis: Redis, old: str, new: str) -> bool:
    """RENAMENX: a key already at its new name (a newer server wrote it) is never overwritten."""
    if not await redis.exists(old):
        return False
    return bool(await redis.renamenx(old, new))
