"""Email flows in the experiments model: exposures when a visitor qualifies (email arm and
holdout alike), emails sent, clickers, conversions within the window, revenue per visitor."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from html import unescape

import httpx
from redis.asyncio import Redis

from widget_server.experiments.reports import flow_report
from widget_server.mail.context import MailContext
from widget_server.mail.flows import Flow, FlowStep, MailConfig, in_holdout
from widget_server.offers.assign import HOLDOUT
from widget_server.realtime.shop_api import signature_for
from widget_server.visitors.session_view import CartLine

from ..mail_support import UNLIMITED, IsolatedShop, address_for, mail_context, make_site
from ..support import Client, new_visitor
from .test_e2e import leave_with_a_cart, wait_for
from .test_e2e import shop as shop  # the fixture

CART = [CartLine("sku-1", 1, 10.0, "Mug", "", "")]
DAY = 86_400.0


def cart_flow(holdout: float) -> MailConfig:
    step = FlowStep(delay_minutes=60, template="cart", subject="Your cart")
    flow = Flow(name="cart", kind="cart", holdout=holdout, steps=[step])
    return MailConfig(flows=[flow], budget=UNLIMITED)


def test_both_arms_count_when_visitors_qualify_and_orders_within_the_window(
    redis_url: str,
) -> None:
    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s = ctx.scheduler
        await ctx.flows.save(site, cart_flow(0.3))
        [flow] = (await ctx.flows.get(site)).flows
        rng = random.Random(11)
        now = 1_800_000_000.0
        visitors = [new_visitor() for _ in range(300)]
        expected: dict[str, dict[str, float]] = {
            arm: {"exposures": 0, "conversions": 0, "revenue": 0.0, "revenue_sq": 0.0}
            for arm in ("email", HOLDOUT)
        }
        for i, visitor in enumerate(visitors):
            arm = HOLDOUT if in_holdout(site, visitor, flow) else "email"
            for _ in range(2):  # leaving twice is still one exposed visitor
                await s.visitor_left(site, visitor, now=now, cart=CART,
                                     email=f"v{i}@x.de", consent=True)  # fmt: skip
            expected[arm]["exposures"] += 1
            if rng.random() < (0.2 if arm == "email" else 0.1):
                orders = [float(rng.randint(10, 100)) for _ in range(rng.randint(1, 2))]
                for value in orders:
                    await s.purchased(site, visitor, value=value, now=now + DAY)
                expected[arm]["conversions"] += 1
                expected[arm]["revenue"] += sum(orders)
                expected[arm]["revenue_sq"] += sum(orders) ** 2
        # Not attributed: an order past the 7-day window, and a visitor never exposed.
        await s.purchased(site, visitors[0], value=500.0, now=now + 8 * DAY)
        await s.purchased(site, new_visitor(), value=500.0, now=now + DAY)

        document = await flow_report(ctx.redis, ctx.keys, site, flow, now + 8 * DAY, days=30)
        assert document["channel"] == "email" and document["flow"] == "cart"
        report = document["report"]
        assert report["control"] == HOLDOUT
        rows = {row["variant"]: row for row in report["variants"]}
        assert set(rows) == {"email", HOLDOUT}
        for arm, values in expected.items():
            assert rows[arm]["exposures"] == values["exposures"]
            assert rows[arm]["conversions"] == values["conversions"]
            assert abs(rows[arm]["revenue"] - values["revenue"]) < 1e-6
        day = document["series"][-1]["variants"]
        for arm, values in expected.items():
            assert abs(day[arm]["revenue_sq"] - values["revenue_sq"]) < 1e-6
        email_row = rows["email"]
        assert email_row["incremental_revenue"] is not None
        assert email_row["uplift"] is not None and email_row["p_value"] is not None
        assert not report["health"]["srm_flag"]
        # Flows are judged by the always-valid rule. With a few hundred visitors (their arms
        # drawn by the site's and visitors' random ids) the holdout is usually below the
        # minimum sample: then the report says it is too early, and nothing more.
        assert report["decision"] == "sequential"
        assert report["sentences"][0] == report["headline"]
        enough = all(v["exposures"] >= 100 and v["conversions"] >= 10 for v in expected.values())
        if not enough:
            assert report["verdict"] == "collecting"
            assert report["headline"].startswith("Too early to call")
        else:
            assert report["verdict"] in ("winner", "worse", "no_difference")

        # A new holdout share is a new comparison: the counts start again.
        await ctx.flows.save(site, cart_flow(0.1))
        [changed] = (await ctx.flows.get(site)).flows
        fresh = await flow_report(ctx.redis, ctx.keys, site, changed, now + 8 * DAY, days=30)
        assert all(row["exposures"] == 0 for row in fresh["report"]["variants"])
        await s.visitor_left(site, visitors[1], now=now + 9 * DAY, cart=CART,
                             email="v1@x.de", consent=True)  # fmt: skip
        fresh = await flow_report(ctx.redis, ctx.keys, site, changed, now + 9 * DAY, days=30)
        assert sum(row["exposures"] for row in fresh["report"]["variants"]) == 1

    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            await body(ctx)

    asyncio.run(main())


def test_visitors_who_do_not_qualify_are_not_exposed(redis_url: str) -> None:
    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            site = await make_site(ctx)
            await ctx.flows.save(site, cart_flow(0.5))
            [flow] = (await ctx.flows.get(site)).flows
            s = ctx.scheduler
            await s.visitor_left(site, new_visitor(), now=10.0, cart=CART, email=None,
                                 consent=True)  # fmt: skip
            await s.visitor_left(site, new_visitor(), now=10.0, cart=CART, email="a@x.de",
                                 consent=False)  # fmt: skip
            await s.visitor_left(site, new_visitor(), now=10.0, cart=[], email="b@x.de",
                                 consent=True)  # fmt: skip
            document = await flow_report(ctx.redis, ctx.keys, site, flow, 10.0, days=3)
            assert document["series"] == []
            assert all(row["exposures"] == 0 for row in document["report"]["variants"])

    asyncio.run(main())


def _report(shop: IsolatedShop, site: str) -> dict[str, object]:
    async def main() -> dict[str, object]:
        client = Redis.from_url(shop.server.redis_url)
        try:
            from widget_server.mail.flows import MailFlowStore

            flow = (await MailFlowStore(client, shop.keys).get(site)).flow("cart")
            assert flow is not None
            return await flow_report(client, shop.keys, site, flow, time.time(), days=3)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_sent_clicked_converted_and_unsubscribed_through_the_product(shop: IsolatedShop) -> None:
    server, sink = shop.server, shop.sink
    site = shop.site_with_fast_flows(delay_s=0.3)
    clicker = address_for(site, "clicker")
    leave_with_a_cart(server, site, new_visitor(), clicker)
    assert wait_for(lambda: sink.received)
    html = sink.received[0].message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    links = [unescape(u) for u in re.findall(r'href="([^"]+/v1/mail/restore\?t=[^"]+)"', html)]
    assert links
    for _ in range(2):  # a visitor clicking twice is one clicker
        assert httpx.get(links[0], follow_redirects=False).status_code == 302
    secret = shop.site_secret(site)
    body = json.dumps({"order_id": "C-1", "value": 49.0, "email": clicker}).encode()
    ts = str(int(time.time()))
    answer = httpx.post(
        f"{server.url}/v1/orders?site={site}",
        content=body,
        headers={"x-widget-timestamp": ts, "x-widget-signature": signature_for(secret, ts, body)},
    )
    assert answer.json()["new_order"] is True
    unsubscribe = sink.received[0].message["List-Unsubscribe"].split(",")[0].strip("<> ")
    for _ in range(2):  # the second one-click POST changes nothing
        form = {"content-type": "application/x-www-form-urlencoded"}
        done = httpx.post(unsubscribe, content=b"List-Unsubscribe=One-Click", headers=form)
        assert done.status_code == 200
    document = _report(shop, site)
    email = document["email"]["email"]  # type: ignore[index]
    assert email["sent"] == 1 and email["clicks"] == 1 and email["unsubscribes"] == 1
    assert email["click_conversions"] == 1
    [row] = document["report"]["variants"]  # type: ignore[index]
    assert row["variant"] == "email" and row["exposures"] == 1 and row["conversions"] == 1
    assert row["impressions"] == 1 and row["revenue"] == 49.0
    assert document["steps"]["restores"] == {"0": 2}  # type: ignore[index]
    by_email = document["channels"]["email"]  # type: ignore[index]
    assert (by_email["recipients"], by_email["clicks"], by_email["click_conversions"]) == (1, 1, 1)
    assert (by_email["conversions"], by_email["revenue_per_recipient"]) == (1, 49.0)
    assert document["channels"]["sms"]["sent"] == 0  # type: ignore[index]


def test_a_visitor_who_comes_back_and_buys_counts_in_the_flow_without_an_email(
    shop: IsolatedShop,
) -> None:
    server = shop.server
    site = shop.site_with_fast_flows(delay_s=30)  # the email is far off: they buy before it
    visitor = new_visitor()
    leave_with_a_cart(server, site, visitor, address_for(site, "back"))

    def arm() -> dict[str, object]:
        return _report(shop, site)["report"]["variants"][0]  # type: ignore[index, no-any-return]

    assert wait_for(lambda: arm()["exposures"] == 1)  # exposed when leaving, before any email
    with Client(server.ws_url) as c:
        c.hello(site, visitor)  # a new visit
        assert c.event("purchase", order_id="B-7", value=20.0)["type"] == "ack"
    assert wait_for(lambda: arm()["conversions"] == 1)
    assert _report(shop, site)["email"] == {} and shop.sink.received == []


def test_bounces_and_complaints_count_for_the_flow_of_the_last_email(shop: IsolatedShop) -> None:
    server = shop.server
    site = shop.site_with_fast_flows(delay_s=0.3)
    bouncer, complainer = address_for(site, "bouncer"), address_for(site, "complainer")
    leave_with_a_cart(server, site, new_visitor(), bouncer)
    leave_with_a_cart(server, site, new_visitor(), complainer)
    assert wait_for(lambda: len(shop.sink.received) == 2)
    secret = shop.site_secret(site)

    def report_event(kind: str, email: str, permanent: bool = True) -> None:
        events = {"events": [{"type": kind, "email": email, "permanent": permanent}]}
        body = json.dumps(events).encode()
        ts = str(int(time.time()))
        headers = {"x-widget-timestamp": ts, "x-widget-signature": signature_for(secret, ts, body)}
        answer = httpx.post(
            f"{server.url}/v1/mail/events?site={site}", content=body, headers=headers
        )
        assert answer.status_code == 200, answer.text

    report_event("bounce", bouncer, permanent=False)  # soft: not a bounce yet
    report_event("bounce", bouncer.upper())
    report_event("bounce", bouncer)  # reported twice, counted once
    report_event("complaint", complainer)
    report_event("bounce", address_for(site, "stranger"))  # never emailed: no flow to count for
    email = _report(shop, site)["email"]["email"]  # type: ignore[index]
    assert email["sent"] == 2 and email["bounces"] == 1 and email["delivered"] == 1
    assert email["complaints"] == 1
