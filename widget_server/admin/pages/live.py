"""The live view of a site: who is connected, activity per minute, the latest decisions, and live
broadcasts to start or stop. The page updates itself from a Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ...offers.campaigns import CAMPAIGN_ID_PATTERN, Campaign
from ...realtime.hub import RATE_METRICS
from ...realtime.services import Services
from ...store.replies import reply_text
from .. import explain
from ..guard import Admin, Guard
from ..web import ADMIN, redirect
from .campaigns import fresh_campaigns, store
from .sites import not_found, site_or_none

SNAPSHOT_EVERY_S = 2.0
STREAM_SECONDS = 300  # then the browser reconnects (and the session is checked again)
FEED_SIZE = 50
MAX_LIVE_MINUTES = 24 * 60


def routes(guard: Guard) -> list[BaseRoute]:
    base = "/sites/{site}/live"
    return [
        Route(base, guard(live_page)),
        Route(base + "/stream", guard(live_stream)),
        Route(base + "/start", guard(start_live, "editor"), methods=["POST"]),
        Route(base + "/stop", guard(stop_live, "editor"), methods=["POST"]),
    ]


# --- what the page shows -------------------------------------------------------------------------


def per_minute(minutes: Sequence[Mapping[str, int]], now: float) -> dict[str, int]:
    """Counts over the last 60 seconds, estimated from per-minute buckets: the current minute
    plus the share of the previous minute that still lies inside the window."""
    if not minutes:
        return dict.fromkeys(RATE_METRICS, 0)
    current = minutes[-1]
    previous = minutes[-2] if len(minutes) > 1 else {}
    weight = max(0.0, 1.0 - (now - current["minute"]) / 60)
    return {m: round(current.get(m, 0) + previous.get(m, 0) * weight) for m in RATE_METRICS}


def feed_item(site: str, entry: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """One decision of the live feed, in words, with a link to the visitor's trace."""
    visitor, session = str(entry.get("visitor", "")), str(entry.get("session", ""))
    at = float(entry.get("at", 0))
    return {
        "at": at,
        "time": time.strftime("%H:%M:%S", time.gmtime(at)),
        "visitor": visitor,
        "signal": explain.signal_text(entry.get("signal"), names),
        "outcome": explain.outcome_text(entry, names),
        "shown": bool(entry.get("shown")),
        "href": f"{ADMIN}/sites/{site}/visitors?q={quote(visitor)}#session-{quote(session)}",
    }


async def recent_decisions(services: Services, site: str) -> list[dict[str, Any]]:
    raw = await services.redis.lrange(services.keys.decisions(site), 0, FEED_SIZE - 1)
    return [json.loads(item) for item in raw]


async def running_broadcasts(services: Services, site: str, now: float) -> dict[str, float]:
    """Campaign id -> end time of every live broadcast running now."""
    raw = await services.redis.hgetall(services.keys.live_offers(site))
    running = {reply_text(k): float(v) for k, v in raw.items()}
    return {cid: until for cid, until in running.items() if until > now}


async def snapshot(services: Services, site: str) -> dict[str, Any]:
    """Everything the live page shows, as JSON (the stream sends one every few seconds)."""
    now = time.time()
    names = {c.id: c.name for c in await services.offers.campaigns.for_site(site)}
    minutes = await services.hub.rates(site, now)
    running = await running_broadcasts(services, site, now)
    return {
        "at": now,
        "updated": time.strftime("%H:%M:%S UTC", time.gmtime(now)),
        "connected": await services.hub.live_count(site),
        "per_minute": per_minute(minutes, now),
        "minutes": minutes,
        "decisions": [feed_item(site, e, names) for e in await recent_decisions(services, site)],
        "running": [
            {"campaign": cid, "name": names.get(cid, cid), "until": until}
            for cid, until in sorted(running.items())
        ],
    }


def broadcastable(campaigns: Sequence[Campaign]) -> tuple[list[Campaign], list[Campaign]]:
    """Live-trigger campaigns that may go out now (active), and those that first need
    activating."""
    live = [c for c in campaigns if c.trigger.live]
    return [c for c in live if c.status == "active"], [c for c in live if c.status != "active"]


# --- pages ---------------------------------------------------------------------------------------


async def live_page(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    ready, inactive = broadcastable(await fresh_campaigns(admin, site.key))
    live = await snapshot(admin.services, site.key)
    running = {item["campaign"] for item in live["running"]}
    return admin.page(
        "live.html",
        site=site,
        live=live,
        ready=[c for c in ready if c.id not in running],
        inactive=inactive,
        max_minutes=MAX_LIVE_MINUTES,
    )


async def live_stream(admin: Admin) -> Response:
    """``text/event-stream``: a JSON snapshot every :data:`SNAPSHOT_EVERY_S` seconds."""
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    services = admin.services

    async def events() -> AsyncIterator[str]:
        yield f"retry: {int(SNAPSHOT_EVERY_S * 1000)}\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            try:
                data = json.dumps(await snapshot(services, site.key), separators=(",", ":"))
            except RedisError:
                services.metrics.redis_errors.inc()
                yield ": the store is not answering\n\n"
            else:
                yield f"data: {data}\n\n"
            await asyncio.sleep(SNAPSHOT_EVERY_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _live_campaign(admin: Admin, site: str) -> Campaign | None:
    campaign_id = admin.form.get("campaign")
    if not re.match(CAMPAIGN_ID_PATTERN, campaign_id):
        return None
    return await store(admin).get(site, campaign_id)


async def start_live(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    campaign = await _live_campaign(admin, site.key)
    if campaign is None:
        return not_found(admin, "campaign")
    if not campaign.trigger.live or campaign.status != "active":
        return admin.refuse(
            400,
            f"{campaign.name} cannot go live: only active campaigns with the live broadcast"
            " trigger can. Edit the campaign, tick Live broadcast and activate it.",
        )
    raw = admin.form.get("minutes", "60").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIVE_MINUTES:
        return admin.refuse(400, f"Run a live offer for 1 to {MAX_LIVE_MINUTES} minutes.")
    minutes = int(raw)
    await admin.services.offers.start_live(site.key, campaign.id, minutes)
    await admin.record(
        "campaign.live_start",
        campaign.id,
        site=site.key,
        after={"minutes": minutes, "until": time.time() + minutes * 60},
    )
    return redirect(f"/sites/{site.key}/live", "live_started")


async def stop_live(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    campaign = await _live_campaign(admin, site.key)
    if campaign is None:
        return not_found(admin, "campaign")
    running = await running_broadcasts(admin.services, site.key, time.time())
    await admin.services.offers.stop_live(site.key, campaign.id)
    await admin.record(
        "campaign.live_stop",
        campaign.id,
        site=site.key,
        before={"until": running.get(campaign.id)},
        after={"until": None},
    )
    return redirect(f"/sites/{site.key}/live", "live_stopped")
