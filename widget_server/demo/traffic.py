"""The demo's first-run traffic: synthetic visitors sent through the running demo server, so the
dashboard and the A/B reports have numbers the first time the admin opens.

They are :mod:`widget_server.devtools.simulate` visitors of the demo's cart-saver campaign, with
a known truth: the site-wide holdout and the campaign's holdout buy a little less often than the
visitors who see the offers. Nothing is written around the server: every count comes from the
visitors' own messages, as a shop's would.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from ..devtools.simulate import SITE_HOLDOUT, ArmTruth, SimulationResult, simulate
from ..offers.assign import HOLDOUT
from ..offers.campaign_store import CampaignStore
from ..store.client import open_store
from ..store.keys import Keys
from ..store.sites import SiteRegistry

CAMPAIGN = "cart-saver"
VISITORS = 3000
SEED = 7
TRUTH = {
    SITE_HOLDOUT: ArmTruth(0.05, 48.0, 22.0),
    HOLDOUT: ArmTruth(0.05, 48.0, 22.0),
    "ten": ArmTruth(0.085, 46.0, 20.0),
    "five": ArmTruth(0.075, 47.0, 21.0),
}


async def send_traffic(
    base: str, redis_url: str, redis_mode: str, prefix: str, site: str, visitors: int = VISITORS
) -> SimulationResult | None:
    """Send ``visitors`` once the server at ``base`` is ready (None when the campaign or the
    site is gone, or the server never became ready)."""
    async with httpx.AsyncClient(timeout=2) as http:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)
    client = open_store(redis_url, redis_mode)
    try:
        keys = Keys(prefix)
        campaign = await CampaignStore(client, keys).get(site, CAMPAIGN)
        record = await SiteRegistry(client, keys).get(site)
    finally:
        await client.aclose()
    if campaign is None or record is None or campaign.status != "active":
        return None
    ws_url = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/ws"
    return await simulate(
        ws_url, site, campaign, visitors=visitors, concurrency=20, truth=TRUTH, seed=SEED,
        origin=base, site_holdout=(record.holdout, record.holdout_version),
    )  # fmt: skip


def start(base: str, redis_url: str, redis_mode: str, prefix: str, site: str) -> threading.Thread:
    """Send the demo's traffic from a thread beside the server; print one line when done."""

    def run() -> None:
        result = asyncio.run(send_traffic(base, redis_url, redis_mode, prefix, site))
        if result is not None:
            print(
                f"Demo traffic: {result.visitors:,} synthetic visitors went through the shop"
                f" ({sum(result.errors.values())} failed); the dashboard has numbers now.",
                flush=True,
            )

    thread = threading.Thread(target=run, name="demo-traffic", daemon=True)
    thread.start()
    return thread
