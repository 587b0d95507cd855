"""What the admin reads to show numbers: today's counters and the code pools of campaigns."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..offers.campaigns import Campaign
from ..offers.decide import period_keys
from ..offers.engine import LOW_POOL
from ..realtime.services import Services
from ..store.replies import reply_text

METRICS = ("exposures", "impressions", "clicks", "conversions", "dismissals")


@dataclass(slots=True)
class Today:
    """Counters of one campaign for its current day: totals and per variant."""

    day: str
    totals: dict[str, float] = field(default_factory=dict)
    variants: dict[str, dict[str, float]] = field(default_factory=dict)

    def total(self, metric: str) -> int:
        return round(self.totals.get(metric, 0.0))


@dataclass(frozen=True, slots=True)
class PoolLevel:
    uses_pool: bool
    available: int
    issued: int

    @property
    def low(self) -> bool:
        return self.uses_pool and self.available < LOW_POOL


def uses_pool(campaign: Campaign) -> bool:
    return any(
        v.discount is not None and v.discount.code_strategy == "pool" for v in campaign.variants
    )


async def today_numbers(
    services: Services, site: str, campaigns: Sequence[Campaign], now: float | None = None
) -> dict[str, Today]:
    """Today's counters of each campaign (its day, in its schedule's time zone), one round trip."""
    now = now or time.time()
    days = [period_keys(now, c.schedule.timezone)[0] for c in campaigns]
    if not campaigns:
        return {}
    async with services.redis.pipeline(transaction=False) as pipe:
        for campaign, day in zip(campaigns, days, strict=True):
            pipe.hgetall(
                services.keys.campaign_stats(site, campaign.id, day, campaign.experiment_version)
            )
        rows = await pipe.execute()
    return {c.id: _today(day, raw) for c, day, raw in zip(campaigns, days, rows, strict=True)}


def _today(day: str, raw: dict[Any, Any]) -> Today:
    today = Today(day)
    for key, value in raw.items():
        metric, _, variant = reply_text(key).partition(":")
        if metric not in METRICS or not variant:
            continue
        amount = float(reply_text(value))
        today.totals[metric] = today.totals.get(metric, 0.0) + amount
        today.variants.setdefault(variant, {})[metric] = amount
    return today


async def pool_levels(
    services: Services, site: str, campaigns: Sequence[Campaign]
) -> dict[str, PoolLevel]:
    """Codes left in each campaign's pool and codes issued so far, one round trip."""
    if not campaigns:
        return {}
    keys = services.keys
    async with services.redis.pipeline(transaction=False) as pipe:
        for campaign in campaigns:
            pipe.llen(keys.code_pool(site, campaign.id))
            pipe.hlen(keys.issued_codes(site, campaign.id))
        rows = await pipe.execute()
    return {
        c.id: PoolLevel(uses_pool(c), int(rows[2 * i]), int(rows[2 * i + 1]))
        for i, c in enumerate(campaigns)
    }


async def redeemed_count(services: Services, site: str, campaign_id: str) -> int:
    """Issued codes of a campaign that a purchase has redeemed."""
    count = 0
    key = services.keys.issued_codes(site, campaign_id)
    async for _, raw in services.redis.hscan_iter(key, count=1000):
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("redeemed"):
            count += 1
    return count
