"""Live offers claimed in batches keep every rule of one-by-one claims: two server processes
claim for their own connections at the same moment, and the campaign's global cap and unique
codes hold across both."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from widget_server.store.keys import Keys

from ..support import (
    NO_SITE_LIMITS,
    ROOT,
    Client,
    ServerProcess,
    add_site,
    message_campaign,
    new_visitor,
    save_campaigns,
)

KEYS = Keys()


def offers_of(c: Client, within: float) -> list[dict[str, Any]]:
    """Every offer that reaches ``c`` within ``within`` seconds."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = c.recv(timeout=left)
        except TimeoutError:
            break
        if message.get("type") == "offer":
            got.append(message["offer"])
    return got


def start_live(redis_url: str, site: str, campaign: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "live", "start", campaign, "--site", site,
         "--minutes", "5"], env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_two_processes_claiming_in_batches_keep_the_global_cap_and_unique_codes(
    two_nodes: tuple[ServerProcess, ServerProcess], r: redis.Redis
) -> None:
    a, b = two_nodes
    site = add_site(a.redis_url, frequency=NO_SITE_LIMITS)
    capped = message_campaign("capped", trigger={"exit_intent": [], "live": True},
                              caps={"global_max_impressions": 25})  # fmt: skip
    coded = {
        **message_campaign("coded", trigger={"exit_intent": [], "live": True}),
        "variants": [{"key": "a", "offer": {"kind": "discount", "headline": "20% now"},
                      "discount": {"type": "percent", "amount": 20,
                                   "code_strategy": "generated"}}],
    }  # fmt: skip
    save_campaigns(a.redis_url, site, [capped, coded])
    clients = [Client(node.ws_url) for node in (a, b) for _ in range(30)]
    try:
        for c in clients:
            c.hello(site, new_visitor())
        with ThreadPoolExecutor(len(clients)) as pool:
            start_live(a.redis_url, site, "capped")
            received = list(pool.map(lambda c: offers_of(c, 4.0), clients))
            # 60 visitors on two processes, a cap of 25: exactly 25 offers, none twice.
            assert sum(len(got) for got in received) == 25
            assert all(len(got) <= 1 for got in received)
            pending = r.zcard(KEYS.campaign_pending(site, "capped"))
            assert pending == 25  # reserved until painted: the cap counts them
            start_live(a.redis_url, site, "coded")
            received = list(pool.map(lambda c: offers_of(c, 4.0), clients))
        codes = [got[0]["code"] for got in received]
        assert len(codes) == 60 and len(set(codes)) == 60  # every visitor, a code of their own
        issued = r.hgetall(KEYS.issued_codes(site, "coded"))
        assert set(issued) == set(codes)
    finally:
        for c in clients:
            c.close()
