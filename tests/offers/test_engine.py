"""The offers engine end to end: real server processes, real Valkey, real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from widget_server.store.keys import Keys

from ..support import (
    ROOT,
    Client,
    ServerProcess,
    add_site,
    campaign_counts,
    discount_campaign,
    message_campaign,
    new_visitor,
    save_campaigns,
)

EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
Nodes = tuple[ServerProcess, ServerProcess]


def exit_intent(c: Client) -> dict[str, Any] | None:
    """Send an exit-intent signal; return the offer it produced, or None."""
    return c.signal_answer(EXIT)


stats = campaign_counts


def test_arm_on_hello_then_offer_with_a_unique_code(server: ServerProcess, r: redis.Redis) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [discount_campaign("ten")])
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        armed = c.recv_until("arm")["offer"]
        assert armed["id"] == "ten.a" and armed["kind"] == "discount" and "code" not in armed
        assert armed["kinds"] and armed["discount"] == {"type": "percent", "amount": 10}
        offer = exit_intent(c)
        assert offer is not None and offer["id"] == "ten.a"
        assert offer["code"].startswith("SAVE-") and len(offer["code"]) == 11
        assert offer["expires_at"] > time.time() * 1000 + 29 * 60 * 1000
        issued = r.hget(Keys().issued_codes(site, "ten"), offer["code"])
        assert issued is not None and json.loads(issued)["variant"] == "a"
        shown = c.send({"type": "offer_shown", "offer": offer["id"], "claim": offer["claim"]})
        assert c.answer(shown)["type"] == "ack"
        dismissed = c.send({"type": "offer_dismissed", "offer": offer["id"], "how": "escape"})
        assert c.answer(dismissed)["type"] == "ack"
        assert exit_intent(c) is None  # one per session
    assert stats(r, site, "ten") == {
        "exposures:a": 1.0, "impressions:a": 1.0, "dismissals:a": 1.0,
    }  # fmt: skip
    profile = r.hgetall(Keys().profile(site, visitor))
    assert len(json.loads(profile["shown:ten"])) == 1
    assert profile["dismiss:ten"].startswith("1:")


def test_decision_trace_says_why_each_campaign_was_not_chosen(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [
        message_campaign("winner", priority=50),
        message_campaign("second", priority=10),
        message_campaign("mobile-only", targeting={"any": [{"all": [
            {"field": "device", "op": "is", "value": "mobile"}]}]}),
        message_campaign("big-carts", trigger={"min_cart_value": 100}),
        message_campaign("paused", status="paused"),
    ])  # fmt: skip
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        sid = c.hello(site, visitor, device="desktop")["session"]
        assert exit_intent(c)["id"] == "winner.a"  # type: ignore[index]
    trace = json.loads(r.lindex(Keys().trace(site, visitor, sid), 0))  # type: ignore[arg-type]
    reasons = {x["campaign"]: x["reason"] for x in trace["rejected"]}
    assert trace["chosen"] == "winner.a" and trace["signal"]["kind"] == "top_edge"
    assert reasons == {
        "second": "lower_priority",
        "mobile-only": "targeting_miss",
        "big-carts": "trigger_threshold",
        "paused": "not_active",
    }


def test_an_exit_signal_follows_what_another_tab_changed_meanwhile(
    server: ServerProcess, r: redis.Redis
) -> None:
    """The offer for an exit signal is chosen from what its tab last knew, and its place under
    the site's policy is reserved as the signal is recorded. When another tab of the visit
    changed the cart in between, the signal's own view decides, and the place reserved for
    the earlier choice is given back: the site allows one offer per visit, so a place kept
    would refuse the right offer."""
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [
        message_campaign("anyone", priority=10),
        message_campaign("big-carts", priority=50, trigger={"min_cart_value": 30}),
    ])  # fmt: skip
    visitor = new_visitor()
    with Client(server.ws_url) as a, Client(server.ws_url) as b:
        sid = a.hello(site, visitor)["session"]
        assert a.recv_until("arm")["offer"]["id"] == "anyone.a"
        b.hello(site, visitor, session=sid)
        added = b.event("cart_add", item={"id": "P1", "price": 50, "quantity": 1})
        assert added["type"] == "ack"
        offer = exit_intent(a)
    assert offer is not None and offer["id"] == "big-carts.a"
    held = r.hgetall(Keys().held(site, visitor))
    places = [json.loads(value)["o"] for field, value in held.items() if ":" not in field]
    assert places == ["big-carts.a"]


def test_caps_hold_across_tabs_and_processes(two_nodes: Nodes, redis_url: str) -> None:
    a, b = two_nodes
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [
        discount_campaign("once", caps={"per_session": 0, "per_visitor_day": 1})
    ])  # fmt: skip
    visitor = new_visitor()
    tabs = [Client(a.ws_url), Client(b.ws_url), Client(b.ws_url)]
    offers: list[dict[str, Any] | None] = [None] * 3
    try:
        for tab in tabs:  # three separate sessions of one visitor
            tab.hello(site, visitor)
        barrier = threading.Barrier(3)

        def fire(i: int) -> None:
            barrier.wait()
            offers[i] = exit_intent(tabs[i])

        threads = [threading.Thread(target=fire, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        for tab in tabs:
            tab.close()
    assert sum(1 for o in offers if o is not None) == 1


def _claim_worker(redis_url: str, site: str, campaign_id: str, n: int, queue: Any) -> None:
    """One OS process claiming ``n`` offers for ``n`` different visitors, 50 at a time."""
    from widget_server.metrics import Metrics
    from widget_server.offers.campaign_store import CampaignStore
    from widget_server.offers.decide import Candidate, VisitorState
    from widget_server.offers.engine import OfferEngine
    from widget_server.store.scripts import Scripts
    from widget_server.visitors.sessions import SessionStore

    async def main() -> list[tuple[str, str]]:
        client = Redis.from_url(redis_url, max_connections=60)
        keys, scripts = Keys(), Scripts.of(client)
        store = CampaignStore(client, keys)
        engine = OfferEngine(
            client,
            scripts,
            keys,
            store,
            SessionStore(
                client, scripts, keys, session_ttl_s=60, profile_ttl_s=60, presence_ttl_s=60
            ),
            Metrics(),
        )
        campaign = await store.get(site, campaign_id)
        assert campaign is not None
        limit = asyncio.Semaphore(50)

        async def one(i: int) -> tuple[str, str]:
            visitor = f"worker{os.getpid()}-{i:04d}"
            async with limit:
                result = await engine.claim(
                    site,
                    visitor,
                    VisitorState(visitor=visitor, session_id="s"),
                    Candidate(campaign, "a"),
                    f"m{i}",
                    time.time(),
                )
            return result.status if result.status != "rejected" else result.reason, result.code

        try:
            return await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            await client.aclose()

    queue.put(asyncio.run(main()))


@pytest.mark.parametrize("strategy", ["pool", "generated"])
def test_unique_codes_are_never_issued_twice_under_concurrency(
    redis_url: str, r: redis.Redis, strategy: str
) -> None:
    site = add_site(redis_url)
    campaign = discount_campaign("race", strategy=strategy)
    campaign["variants"][0]["discount"]["code_format"] = "R-{XXXX}"  # small space: collisions
    save_campaigns(redis_url, site, [campaign])
    if strategy == "pool":
        r.rpush(Keys().code_pool(site, "race"), *[f"POOL{i:04d}" for i in range(300)])
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_claim_worker, args=(redis_url, site, "race", 500, queue))
               for _ in range(4)]  # fmt: skip
    for w in workers:
        w.start()
    results = [item for _ in workers for item in queue.get(timeout=120)]
    for w in workers:
        w.join(30)
    issued = [code for status, code in results if status == "ok"]
    if strategy == "pool":
        assert len([s for s, _ in results if s == "ok"]) == 300
    assert len(issued) == len(set(issued))  # never twice
    if strategy == "pool":
        assert len(issued) == 300
        assert {s for s, _ in results if s != "ok"} == {"pool_exhausted"}
        assert r.llen(Keys().code_pool(site, "race")) == 0
    else:
        assert len(issued) + sum(1 for s, _ in results if s == "code_collision") == 2000
        assert len(issued) > 1900
    assert r.hlen(Keys().issued_codes(site, "race")) == len(issued)


def test_exhausted_pool_falls_back_to_the_next_campaign(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [
        discount_campaign("pooled", strategy="pool", priority=90),
        message_campaign("fallback", priority=10),
    ])  # fmt: skip
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        sid = c.hello(site, visitor)["session"]
        offer = exit_intent(c)
    assert offer is not None and offer["id"] == "fallback.a"
    import httpx

    metrics = httpx.get(server.url + "/metrics").text
    assert f'widget_code_pool_available{{campaign="pooled",site="{site}"}} 0.0' in metrics
    trace = json.loads(r.lindex(Keys().trace(site, visitor, sid), 0))  # type: ignore[arg-type]
    assert {"campaign": "pooled", "reason": "pool_exhausted", "detail": "at claim time"} in trace[
        "rejected"
    ]


def test_purchase_withdraws_offers_everywhere_and_attributes_the_conversion(
    two_nodes: Nodes, redis_url: str, r: redis.Redis
) -> None:
    a, b = two_nodes
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [discount_campaign("conv")])
    visitor = new_visitor()
    with Client(a.ws_url) as tab1, Client(b.ws_url) as tab2:
        sid = tab1.hello(site, visitor)["session"]
        tab2.hello(site, visitor, session=sid)
        offer = exit_intent(tab1)
        assert offer is not None
        tab1.event("purchase", order_id="o-1", value=80.0, coupon=offer["code"])
        assert tab1.recv_until("withdraw")["offer"] == "*"
        assert tab2.recv_until("withdraw")["offer"] == "*"
        assert exit_intent(tab2) is None  # quiet period after a purchase
    record = json.loads(r.hget(Keys().issued_codes(site, "conv"), offer["code"]))  # type: ignore[arg-type]
    assert record["redeemed"] and record["order_id"] == "o-1"
    totals = stats(r, site, "conv")
    assert totals["conversions:a"] == 1 and totals["revenue:a"] == 80.0
    assert totals["redemptions:a"] == 1


def test_holdout_sees_nothing_but_counts_as_exposed(server: ServerProcess, r: redis.Redis) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [message_campaign("held", holdout=0.5)])
    from widget_server.offers.assign import assign
    from widget_server.offers.campaigns import parse_campaign

    campaign = parse_campaign(message_campaign("held", holdout=0.5))
    visitor = next(
        v for v in (new_visitor() for _ in range(200)) if assign(campaign, v) == "holdout"
    )
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        assert exit_intent(c) is None
    assert stats(r, site, "held") == {"exposures:holdout": 1.0}


def test_pausing_a_campaign_withdraws_its_armed_offer(server: ServerProcess) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [message_campaign("pausable")])
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        assert c.recv_until("arm")["offer"]["id"] == "pausable.a"
        save_campaigns(server.redis_url, site, [message_campaign("pausable", status="paused")])
        assert c.recv_until("withdraw")["offer"] == "pausable.a"


def test_live_offer_reaches_every_matching_visitor_on_every_node(
    two_nodes: Nodes, redis_url: str
) -> None:
    a, b = two_nodes
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign(
        "flash", trigger={"exit_intent": [], "live": True},
        targeting={"any": [{"all": [{"field": "device", "op": "is", "value": "mobile"}]}]},
    )])  # fmt: skip
    phones = [Client(a.ws_url), Client(b.ws_url)]
    desktop = Client(b.ws_url)
    try:
        for phone in phones:
            phone.hello(site, new_visitor(), device="mobile")
        desktop.hello(site, new_visitor(), device="desktop")
        env = {**os.environ, "REDIS_URL": redis_url}
        started = subprocess.run(
            [sys.executable, "-m", "widget_server.cli", "live", "start", "flash", "--site", site,
             "--minutes", "5"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=30,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        for phone in phones:
            assert phone.recv_until("offer")["offer"]["id"] == "flash.a"
        with pytest.raises(TimeoutError):
            desktop.recv_until("offer", timeout=1)
        with Client(a.ws_url) as late:  # connects during the live window
            late.hello(site, new_visitor(), device="mobile")
            assert late.recv_until("offer")["offer"]["id"] == "flash.a"
    finally:
        for c in (*phones, desktop):
            c.close()


def signed_post(
    server: ServerProcess,
    site: str,
    secret: str,
    body: dict[str, Any],
    *,
    timestamp: int | None = None,
) -> Any:
    import httpx

    from widget_server.realtime.shop_api import signature_for

    raw = json.dumps(body).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    headers = {"x-widget-timestamp": ts, "x-widget-signature": signature_for(secret, ts, raw),
               "content-type": "application/json"}  # fmt: skip
    return httpx.post(f"{server.url}/v1/orders?site={site}", content=raw, headers=headers)


def site_secret(r: redis.Redis, site: str) -> str:
    return str(json.loads(r.get(Keys().site(site)))["secret"])  # type: ignore[arg-type]


def test_order_webhook_finds_the_visitor_by_email_and_withdraws_offers(
    server: ServerProcess, r: redis.Redis
) -> None:
    import httpx

    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [discount_campaign("hook")])
    secret = site_secret(r, site)
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        c.event("identify", email="Buyer@Example.com", consent=True)
        offer = exit_intent(c)
        assert offer is not None
        order = {"order_id": "W-1", "value": 55.5, "email": "buyer@example.com",
                 "coupon": offer["code"]}  # fmt: skip
        answer = signed_post(server, site, secret, order)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"order_id": "W-1", "visitor": visitor, "new_order": True}
        assert c.recv_until("withdraw")["offer"] == "*"
        again = signed_post(server, site, secret, order)
        assert again.json()["new_order"] is False  # the same order counts once
        lookup = httpx.get(f"{server.url}/v1/codes/{offer['code']}?site={site}",
                           headers={"authorization": f"Bearer {secret}"})  # fmt: skip
        assert lookup.json()["valid"] is False and lookup.json()["reason"] == "redeemed"
    assert r.hget(Keys().profile(site, visitor), "purchases") == "1"
    assert stats(r, site, "hook")["conversions:a"] == 1


def test_order_webhook_refuses_bad_signatures_and_bad_bodies(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)
    secret = site_secret(r, site)
    order = {"order_id": "W-2", "value": 10}
    assert signed_post(server, site, "wrong-secret", order).status_code == 401
    assert (
        signed_post(server, site, secret, order, timestamp=int(time.time()) - 3600).status_code
        == 401
    )
    assert signed_post(server, "nosuch", secret, order).status_code == 404
    bad = signed_post(server, site, secret, {"order_id": "W-3", "value": -5})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_field"
    assert signed_post(server, site, secret, order).json()["visitor"] is None


def test_code_lookup_for_checkout_validation(server: ServerProcess, r: redis.Redis) -> None:
    import httpx

    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [discount_campaign("check")])
    secret = site_secret(r, site)
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        offer = exit_intent(c)
    assert offer is not None
    url = f"{server.url}/v1/codes/{offer['code']}?site={site}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer nope"}).status_code == 401
    found = httpx.get(url, headers={"authorization": f"Bearer {secret}"}).json()
    assert found["valid"] is True and found["campaign"] == "check"
    assert found["discount"] == {"type": "percent", "amount": 10.0, "min_cart_value": 0.0}
    unknown = httpx.get(f"{server.url}/v1/codes/NOPE-123?site={site}",
                        headers={"authorization": f"Bearer {secret}"}).json()  # fmt: skip
    assert unknown == {"code": "NOPE-123", "valid": False, "reason": "unknown"}


def test_similar_products_offer_recommends_from_the_catalog(
    server: ServerProcess, redis_url: str
) -> None:
    from widget_server.catalog.feeds import Product
    from widget_server.catalog.store import CatalogStore

    site = add_site(redis_url)
    products = [
        Product(id=f"S{i}", title=f"Trail running shoe {i}", link=f"https://shop.test/p/S{i}",
                image_link=f"https://shop.test/i/S{i}.jpg", price=90 + i, currency="EUR",
                brand="Stride", product_type="Shoes > Running > Trail", item_group_id=f"g{i}")
        for i in range(12)
    ] + [
        Product(id=f"K{i}", title=f"Espresso beans {i}", link=f"https://shop.test/p/K{i}",
                price=12, currency="EUR", brand="Roast", product_type="Coffee > Beans",
                item_group_id=f"k{i}")
        for i in range(12)
    ]  # fmt: skip

    async def load() -> None:
        client = Redis.from_url(redis_url)
        try:
            await CatalogStore(client, Keys()).upsert(site, products)
        finally:
            await client.aclose()

    asyncio.run(load())
    offer = {"kind": "similar_products", "headline": "You may like"}
    save_campaigns(redis_url, site, [{
        "id": "alike", "name": "alike", "status": "active",
        "variants": [{"key": "a", "offer": offer}],
    }])  # fmt: skip
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        c.event("product_view", product={"id": "S3", "title": "Trail running shoe 3"})
        c.event("cart_add", item={"id": "S5", "price": 95})
        offer = exit_intent(c)
    assert offer is not None and offer["kind"] == "similar_products"
    ids = [item["id"] for item in offer["products"]]
    assert 1 <= len(ids) <= 8
    assert "S3" not in ids and "S5" not in ids  # not the viewed product, not what is in the cart
    assert all(i.startswith("S") for i in ids)  # shoes like the one viewed, not coffee
    assert offer["products"][0]["url"].startswith("https://shop.test/p/")


def test_free_shipping_progress_on_cart_hesitation(server: ServerProcess) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [message_campaign(
        "ship", trigger={"exit_intent": [], "hesitation": {"cart": 20}, "min_cart_items": 1},
        variants=[{"key": "a", "offer": {
            "kind": "free_shipping_progress", "headline": "Almost there",
            "body": "Add {remaining} EUR for free shipping.", "free_shipping_threshold": 60}}],
    )])  # fmt: skip
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        c.event("cart_add", item={"id": "A", "price": 42.5})
        short = c.send({"type": "signal", "name": "hesitation", "seconds": 5, "page_type": "cart"})
        c.answer(short)
        with pytest.raises(TimeoutError):
            c.recv_until("offer", timeout=0.5)
        long = c.send({"type": "signal", "name": "hesitation", "seconds": 25, "page_type": "cart"})
        c.answer(long)
        offer = c.recv_until("offer")["offer"]
    assert offer["body"] == "Add 17.50 EUR for free shipping."
    assert offer["free_shipping"] == {"threshold": 60.0, "remaining": 17.5}
    assert "code" not in offer and "expires_at" not in offer


def test_report_counts_what_visitors_did(server: ServerProcess) -> None:
    site = add_site(server.redis_url)
    campaign = message_campaign("ab", holdout=0.2, variants=[
        {"key": "a", "offer": {"kind": "message", "headline": "A"}},
        {"key": "b", "offer": {"kind": "message", "headline": "B"}},
    ])  # fmt: skip
    save_campaigns(server.redis_url, site, [campaign])
    buyers = 0
    for i in range(30):
        with Client(server.ws_url) as c:
            c.hello(site, new_visitor())
            msg_id = c.send(dict(EXIT))
            c.answer(msg_id)
            if i % 3 == 0:
                buyers += 1
                c.event("purchase", order_id=f"o{i}", value=20.0)
    env = {**os.environ, "REDIS_URL": server.redis_url}
    run = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "report", "ab", "--site", site, "--json"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    rows = {v["variant"]: v for v in document["report"]["variants"]}
    assert set(rows) == {"holdout", "a", "b"}
    assert sum(v["exposures"] for v in rows.values()) == 30
    assert sum(v["conversions"] for v in rows.values()) == buyers
    assert sum(v["revenue"] for v in rows.values()) == 20.0 * buyers
    assert document["report"]["sentences"]
    text = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "report", "ab", "--site", site],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert text.returncode == 0 and "experiment version 1" in text.stdout
    winner = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "campaigns", "declare-winner", "ab", "b",
         "--site", site], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert winner.returncode == 0, winner.stderr
    with Client(server.ws_url) as c:  # every qualified visitor now gets b
        c.hello(site, new_visitor())
        assert exit_intent(c)["variant"] == "b"  # type: ignore[index]

    def report(*extra: str) -> dict[str, Any]:
        run = subprocess.run(
            [sys.executable, "-m", "widget_server.cli", "report", "ab", "--site", site, "--json",
             *extra], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)  # type: ignore[no-any-return]

    assert report()["experiment_version"] == 2
    assert sum(v["exposures"] for v in report()["report"]["variants"]) == 1
    earlier = report("--version", "1")
    assert sum(v["exposures"] for v in earlier["report"]["variants"]) == 30


def test_a_live_offer_during_an_experiment_is_named_in_its_report(server: ServerProcess) -> None:
    """The holdout of a running A/B test gets no live offer; its report says which live offers
    ran while it did, so a marketer knows the variants' days may mix both."""
    site = add_site(server.redis_url)
    experiment = message_campaign("ab", holdout=0.5, variants=[
        {"key": "a", "offer": {"kind": "message", "headline": "A"}},
    ])  # fmt: skip
    flash = message_campaign("flash", trigger={"exit_intent": [], "live": True})
    save_campaigns(server.redis_url, site, [experiment, flash])
    with Client(server.ws_url) as c:  # the experiment has data
        c.hello(site, new_visitor())
        c.answer(c.send(dict(EXIT)))
    env = {**os.environ, "REDIS_URL": server.redis_url}

    def cli(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "widget_server.cli", *args, "--site", site],
            env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert json.loads(cli("report", "ab", "--json"))["live_offers"] == []
    cli("live", "start", "flash", "--minutes", "5")
    runs = json.loads(cli("report", "ab", "--json"))["live_offers"]
    assert [run["campaign"] for run in runs] == ["flash"]
    assert "Live offer flash ran during the experiment" in cli("report", "ab")
    assert json.loads(cli("report", "flash", "--json"))["live_offers"] == []  # not its own
    from ..admin.test_admin import signed_in  # the admin page says the same

    viewer = signed_in(server, server.redis_url, "viewer")
    page = viewer.get(f"/admin/sites/{site}/campaigns/ab/report").text
    assert 'id="live-during"' in page and "<strong>flash</strong> from " in page


def test_concurrent_saves_never_share_a_version(redis_url: str) -> None:
    from widget_server.offers.campaign_store import CampaignStore

    site = add_site(redis_url)

    async def save_many() -> list[int]:
        clients = [Redis.from_url(redis_url) for _ in range(5)]
        try:
            stores = [CampaignStore(c, Keys()) for c in clients]
            saved = await asyncio.gather(*(
                s.save(site, message_campaign("race", priority=i), author=f"user{i}")
                for i, s in enumerate(stores * 4)
            ))  # fmt: skip
            history = await stores[0].history(site, "race")
        finally:
            for c in clients:
                await c.aclose()
        assert len(history) == 19  # every earlier version kept
        return sorted(c.version for c in saved)

    assert asyncio.run(save_many()) == list(range(1, 21))
