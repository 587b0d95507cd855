"""Campaigns in Redis: every save keeps the previous version (who, when); an in-process cache per
site is invalidated on every node through the broadcast channel, so no event reads campaigns."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from ..store.bus import Bus
from ..store.keys import Keys
from ..store.layout import upgrade_layout
from ..wire import nodes
from .campaigns import Campaign, CampaignInvalid, FieldError, parse_campaign
from .codes import parse_code_pool

HISTORY_LIMIT = 50


class CampaignStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._cache: dict[str, tuple[Campaign, ...]] = {}
        self._active: dict[str, tuple[Campaign, ...]] = {}
        self._layout_ready = False

    async def upgrade(self) -> None:
        """Move campaigns an earlier version stored under older key names (once per store)."""
        if not self._layout_ready:
            await upgrade_layout(self._redis, self._keys)
            self._layout_ready = True

    # --- reading (cached) --------------------------------------------------------------------
    async def for_site(self, site: str) -> tuple[Campaign, ...]:
        """All campaigns of a site, from the in-process cache after the first call."""
        cached = self._cache.get(site)
        if cached is not None:
            return cached
        await self.upgrade()
        raw = await self._redis.hgetall(self._keys.campaigns(site))
        campaigns = tuple(
            sorted((parse_campaign(value) for value in raw.values()), key=lambda c: c.id)
        )
        self._cache[site] = campaigns
        return campaigns

    async def active(self, site: str) -> tuple[Campaign, ...]:
        """The site's campaigns that can fire (status active), cached like :meth:`for_site`."""
        cached = self._active.get(site)
        if cached is None:
            cached = tuple(c for c in await self.for_site(site) if c.status == "active")
            self._active[site] = cached
        return cached

    def invalidate(self, site: str) -> None:
        self._cache.pop(site, None)
        self._active.pop(site, None)

    async def get(self, site: str, campaign_id: str) -> Campaign | None:
        await self.upgrade()
        raw = await self._redis.hget(self._keys.campaigns(site), campaign_id)
        return parse_campaign(raw) if raw else None

    # --- writing -----------------------------------------------------------------------------
    async def save(self, site: str, data: Any, *, author: str) -> Campaign:
        """Validate and store a campaign; the version it replaces goes to its history.

        Raises CampaignInvalid (every field error) before anything is written.
        """
        campaign = parse_campaign(data)
        await self.upgrade()
        key = self._keys.campaigns(site)
        history = self._keys.campaign_history(site, campaign.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:  # optimistic: two saves at once never share a version number
                try:
                    await pipe.watch(key)
                    previous_raw = await pipe.hget(key, campaign.id)
                    previous = parse_campaign(previous_raw) if previous_raw else None
                    version = (previous.version + 1) if previous else 1
                    stored = campaign.model_copy(
                        update={"version": version, **_experiment_of(campaign, previous)}
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, campaign.id, stored.model_dump_json())
                    if previous_raw:
                        old = {"at": time.time(), "author": author, "version": version,
                               "campaign": json.loads(previous_raw)}  # fmt: skip
                        pipe.lpush(history, json.dumps(old))
                        pipe.ltrim(history, 0, HISTORY_LIMIT - 1)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        await Bus(self._redis).publish(self._keys.broadcast_channel(), _changed(site))
        self.invalidate(site)
        return stored

    async def set_status(
        self, site: str, campaign_id: str, status: str, *, author: str
    ) -> Campaign:
        current = await self.get(site, campaign_id)
        if current is None:
            raise CampaignInvalid([FieldError("id", f"no campaign {campaign_id!r} on {site}")])
        data = json.loads(current.model_dump_json())
        data["status"] = status
        return await self.save(site, data, author=author)

    async def declare_winner(
        self, site: str, campaign_id: str, variant: str, *, author: str
    ) -> Campaign:
        """Send all traffic to ``variant``: the other variants and the holdout end, and a new
        experiment version starts (the finished experiment's counts stay under its version).
        The decision is recorded in the history with the version it replaced."""
        current = await self.get(site, campaign_id)
        if current is None:
            raise CampaignInvalid([FieldError("id", f"no campaign {campaign_id!r} on {site}")])
        winner = current.variant(variant)
        if winner is None:
            known = ", ".join(v.key for v in current.variants)
            raise CampaignInvalid([FieldError("variants", f"no variant {variant!r} ({known})")])
        data = json.loads(current.model_dump_json())
        data["variants"] = [json.loads(winner.model_dump_json())]
        data["holdout"] = 0.0
        data["experiment_version"] = current.experiment_version + 1
        return await self.save(site, data, author=f"{author} (declared {variant} the winner)")

    async def experiment(self, site: str, campaign_id: str, version: int) -> Campaign | None:
        """The campaign as last saved under experiment ``version`` (its variants and split), the
        current one included; None when that experiment never existed."""
        current = await self.get(site, campaign_id)
        if current is None or current.experiment_version == version:
            return current
        for entry in await self.history(site, campaign_id):
            if entry["campaign"].get("experiment_version", 1) == version:
                return parse_campaign(entry["campaign"])
        return None

    async def experiment_versions(self, site: str, campaign_id: str) -> list[int]:
        """Every experiment version the campaign has had, newest first."""
        current = await self.get(site, campaign_id)
        found = {current.experiment_version} if current is not None else set()
        for entry in await self.history(site, campaign_id):
            found.add(int(entry["campaign"].get("experiment_version", 1)))
        return sorted(found, reverse=True)

    async def history(self, site: str, campaign_id: str) -> list[dict[str, Any]]:
        await self.upgrade()
        raw = await self._redis.lrange(self._keys.campaign_history(site, campaign_id), 0, -1)
        return [json.loads(item) for item in raw]

    async def export(self, site: str) -> list[dict[str, Any]]:
        self.invalidate(site)
        return [json.loads(c.model_dump_json()) for c in await self.for_site(site)]

    async def import_many(
        self, site: str, items: list[Any], *, author: str
    ) -> tuple[list[Campaign], list[tuple[int, CampaignInvalid]]]:
        """Validate every campaign first; save them only if all are valid."""
        errors: list[tuple[int, CampaignInvalid]] = []
        for index, item in enumerate(items):
            try:
                parse_campaign(item)
            except CampaignInvalid as exc:
                errors.append((index, exc))
        if errors:
            return [], errors
        return [await self.save(site, item, author=author) for item in items], []

    # --- code pools --------------------------------------------------------------------------
    async def add_codes(self, site: str, campaign_id: str, data: bytes) -> dict[str, Any]:
        """Add the codes of an uploaded file to a campaign's pool; skip codes already known."""
        codes, errors = parse_code_pool(data)
        index = self._keys.code_index(site)
        added = 0
        for start in range(0, len(codes), 500):
            chunk = codes[start : start + 500]
            async with self._redis.pipeline(transaction=False) as pipe:
                for code in chunk:
                    pipe.hsetnx(index, code, campaign_id)
                fresh = await pipe.execute()
            new_codes = [code for code, is_new in zip(chunk, fresh, strict=True) if is_new]
            if new_codes:
                await self._redis.rpush(self._keys.code_pool(site, campaign_id), *new_codes)
            errors += [(0, f"code {c!r} already known") for c, n in zip(chunk, fresh, strict=True)
                       if not n]  # fmt: skip
            added += len(new_codes)
        return {
            "added": added,
            "errors": errors,
            "available": await self.pool_size(site, campaign_id),
        }

    async def pool_size(self, site: str, campaign_id: str) -> int:
        return int(await self._redis.llen(self._keys.code_pool(site, campaign_id)))


def _changed(site: str) -> bytes:
    return nodes.encode(nodes.CampaignsChanged(site=site))


def _judging(campaign: Campaign) -> tuple[Any, ...]:
    """What an experiment is judged by, chosen before it starts."""
    return (campaign.decision_rule, campaign.planned_exposures, campaign.variance_reduction,
            campaign.revenue_cap_percentile)  # fmt: skip


def _experiment_of(campaign: Campaign, previous: Campaign | None) -> dict[str, Any]:
    """The experiment a saved campaign belongs to: the previous one, or a new version when the
    decision rule, its planned size, the variance reduction or the revenue cap changed once
    the campaign had left its draft (a rule is
    chosen before an experiment starts, never after seeing its numbers), and when it started
    (a draft's experiment starts when it leaves the draft)."""
    same = previous is not None and previous.experiment_version == campaign.experiment_version
    if (
        previous is not None
        and same
        and previous.status != "draft"
        and _judging(previous) != _judging(campaign)
    ):
        return {"experiment_version": previous.experiment_version + 1,
                "experiment_started": time.time()}  # fmt: skip
    if previous is not None and same:
        leaving_draft = previous.status == "draft" and campaign.status != "draft"
        return {"experiment_started": time.time() if leaving_draft else previous.experiment_started}
    return {"experiment_started": time.time()}
