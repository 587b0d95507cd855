"""What the experiment counters count: visitors, not offers; every arm under the same rules.

A conversion rate is converted visitors over exposed visitors, and revenue per visitor needs the
sum of squares of each visitor's revenue. These tests drive the real server and read the
counters the report is built from.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
import redis

from widget_server.offers.assign import HOLDOUT, assign
from widget_server.offers.campaigns import parse_campaign
from widget_server.offers.decide import Reason, Rejection, decide
from widget_server.store.keys import Keys

from ..offers.test_decide import EXIT, NOW, campaign, state
from ..offers.test_engine import exit_intent, signed_post, site_secret, stats
from ..support import (
    Client,
    ServerProcess,
    add_site,
    discount_campaign,
    message_campaign,
    new_visitor,
    save_campaigns,
)

Nodes = tuple[ServerProcess, ServerProcess]


def settled(r: redis.Redis, site: str, cid: str, field: str, value: float) -> dict[str, float]:
    """The campaign's counters once ``field`` reached ``value`` (purchases count after the ack)."""
    deadline = time.monotonic() + 5
    while (totals := stats(r, site, cid)).get(field) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return totals


def visitor_in(campaign_data: dict[str, Any], arm: str) -> str:
    parsed = parse_campaign(campaign_data)
    return next(v for v in (new_visitor() for _ in range(500)) if assign(parsed, v) == arm)


def test_a_visitor_counts_once_however_often_exposed_and_however_many_orders(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [message_campaign("unit", caps={"per_session": 1})])
    visitor = new_visitor()
    for _ in range(2):  # two sessions, one offer each, both painted
        with Client(server.ws_url) as c:
            c.hello(site, visitor)
            offer = exit_intent(c)
            assert offer is not None
            c.painted(offer)
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        c.event("purchase", order_id="o-1", value=30.0)
        c.event("purchase", order_id="o-2", value=50.0)
        c.event("purchase", order_id="o-1", value=30.0)  # the same order again
    totals = settled(r, site, "unit", "revenue:a", 80.0)
    assert totals["exposures:a"] == 1 and totals["impressions:a"] == 2
    assert totals["conversions:a"] == 1
    assert totals["revenue:a"] == 80.0
    # One visitor with 80 in revenue: the sum of squares is 80², not 30² + 50².
    assert totals["revenue_sq:a"] == pytest.approx(6400.0)


def test_an_empty_pool_closes_the_campaign_for_the_holdout_too(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)
    data = discount_campaign("pooled", strategy="pool", holdout=0.5)
    save_campaigns(server.redis_url, site, [data])
    held = visitor_in(data, HOLDOUT)
    with Client(server.ws_url) as c:
        c.hello(site, held)
        assert exit_intent(c) is None
    # Treated visitors could not be exposed with no codes left: neither is the holdout.
    assert stats(r, site, "pooled") == {}
    r.rpush(Keys().code_pool(site, "pooled"), "CODE-1")
    with Client(server.ws_url) as c:
        c.hello(site, held)
        assert exit_intent(c) is None
    assert stats(r, site, "pooled") == {"exposures:holdout": 1.0}
    assert r.llen(Keys().code_pool(site, "pooled")) == 1  # the holdout takes no code


def test_the_global_cap_applies_to_the_holdout_too(server: ServerProcess, r: redis.Redis) -> None:
    site = add_site(server.redis_url)
    data = message_campaign("capped", holdout=0.5, caps={"global_max_impressions": 1})
    save_campaigns(server.redis_url, site, [data])
    with Client(server.ws_url) as c:
        c.hello(site, visitor_in(data, "a"))
        offer = exit_intent(c)
        assert offer is not None
        c.painted(offer)
    with Client(server.ws_url) as c:
        c.hello(site, visitor_in(data, HOLDOUT))
        assert exit_intent(c) is None
    assert stats(r, site, "capped") == {"exposures:a": 1.0, "impressions:a": 1.0}


def test_a_minimum_cart_value_of_one_variant_applies_to_every_arm() -> None:
    discount = {"type": "percent", "amount": 10, "code_strategy": "static",
                "static_code": "TEN", "min_cart_value": 50}  # fmt: skip
    split = campaign(
        "minimum",
        holdout=0.3,
        variants=[
            {"key": "a", "offer": {"kind": "message", "headline": "Hi"}},
            {"key": "b", "offer": {"kind": "discount", "headline": "10%"}, "discount": discount},
        ],
    )
    arms = set()
    for i in range(60):
        visitor = f"visitor-{i:04d}"
        arms.add(assign(split, visitor))
        small = decide(state(visitor=visitor, cart_value=20.0), [split], EXIT, NOW)
        assert small.chosen is None
        assert Rejection("minimum", Reason.MIN_CART, "cart 20 < 50") in small.rejections
        big = decide(state(visitor=visitor, cart_value=60.0), [split], EXIT, NOW)
        assert big.chosen is not None and big.chosen.variant == assign(split, visitor)
    assert arms == {"a", "b", HOLDOUT}


def test_concurrent_orders_from_two_nodes_count_each_visitor_once(
    two_nodes: Nodes, redis_url: str, r: redis.Redis
) -> None:
    a, b = two_nodes
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign("busy")])
    secret = site_secret(r, site)
    visitors = [new_visitor() for _ in range(6)]
    for i, visitor in enumerate(visitors):
        with Client((a, b)[i % 2].ws_url) as c:
            c.hello(site, visitor)
            c.event("identify", email=f"buyer{i}@example.com", consent=True)
            assert exit_intent(c) is not None
    rng = random.Random(7)
    orders = [
        (f"o-{i}-{n}", f"buyer{i}@example.com", float(rng.randint(5, 90)))
        for i in range(len(visitors))
        for n in range(4)
    ]
    errors: list[str] = []

    def post(chunk: list[tuple[str, str, float]], node: ServerProcess) -> None:
        for order_id, email, value in chunk:
            for _ in range(2):  # every order is reported twice
                order = {"order_id": order_id, "value": value, "email": email}
                answer = signed_post(node, site, secret, order)
                if answer.status_code != 200:
                    errors.append(answer.text)

    threads = [threading.Thread(target=post, args=(orders[i::4], (a, b)[i % 2])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    per_visitor: dict[str, float] = {}
    for _, email, value in orders:
        per_visitor[email] = per_visitor.get(email, 0.0) + value
    totals = stats(r, site, "busy")
    assert totals["exposures:a"] == len(visitors)
    assert totals["conversions:a"] == len(visitors)
    assert totals["revenue:a"] == pytest.approx(sum(per_visitor.values()))
    assert totals["revenue_sq:a"] == pytest.approx(sum(v * v for v in per_visitor.values()))


def test_covariates_are_frozen_at_exposure_and_buyers_recorded_without_their_id(
    server: ServerProcess, r: redis.Redis
) -> None:
    """What was known before the offer (cart value and items, pages, earlier orders) is kept
    with the exposure; what the visitor does afterwards moves neither the sums nor their
    record among the buyers, which carries no visitor id."""
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [message_campaign("cov", caps={"per_session": 1})])
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        for n in range(3):
            assert c.event("page_view", url=f"https://shop.test/p{n}")["type"] == "ack"
        c.event("cart_add", item={"id": "SKU-1", "quantity": 2, "price": 15.5})
        offer = exit_intent(c)
        assert offer is not None
        c.painted(offer)
        # Afterwards: more in the cart, more pages, an order. None of it is a covariate.
        c.event("cart_add", item={"id": "SKU-2", "quantity": 1, "price": 100.0})
        c.event("page_view", url="https://shop.test/checkout")
        c.event("purchase", order_id="o-1", value=131.0)
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        c.event("purchase", order_id="o-2", value=19.0)
    totals = settled(r, site, "cov", "revenue:a", 150.0)
    (day,) = r.scan_iter(
        Keys().campaign_stats(site, "cov", "*").replace("{", "[{]").replace("}", "[}]")
    )
    sums = {k: float(v) for k, v in r.hgetall(day).items() if k.startswith("x")}
    pages = sums["x2:a"]
    assert pages >= 3
    assert sums == {
        "xn:a": 1.0, "x0:a": 31.0, "x1:a": 2.0, "x2:a": pages, "xx0_0:a": 961.0,
        "xx0_1:a": 62.0, "xx0_2:a": 31.0 * pages, "xx1_1:a": 4.0, "xx1_2:a": 2.0 * pages,
        "xx2_2:a": pages**2,
    }  # fmt: skip
    assert totals["conversions:a"] == 1
    records = r.hgetall(Keys().campaign_buyers(site, "cov"))
    assert len(records) == 1 and visitor not in next(iter(records))
    record = json.loads(next(iter(records.values())))
    assert record["a"] == "a" and record["x"] == f"31.0,2.0,{pages!r},0.0"
    assert [float(t) for t in record["d"].values()] == [150.0]  # one day: the total at its end
    assert visitor not in json.dumps(record)
