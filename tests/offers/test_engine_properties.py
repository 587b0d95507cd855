"""Properties of the whole offers path over random visits, against the real server and Valkey:
caps are never exceeded, nothing is offered in the quiet period after a purchase, a code is never
issued twice, and every decision is explained."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widget_server.store.keys import Keys

from ..support import (
    NO_SITE_LIMITS,
    Client,
    ServerProcess,
    add_site,
    discount_campaign,
    message_campaign,
    new_visitor,
    save_campaigns,
)

steps = st.lists(
    st.one_of(
        st.just(("exit", "top_edge")),
        st.just(("exit", "tab_switch")),
        st.tuples(st.just("cart"), st.integers(5, 80)),
        st.just(("shown", None)),
        st.just(("dismiss", None)),
        st.just(("purchase", None)),
        st.just(("reconnect", None)),
        st.tuples(st.just("hesitate"), st.integers(1, 60)),
        st.tuples(st.just("scroll"), st.integers(0, 100)),
        st.tuples(st.just("time"), st.integers(1, 60)),
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps, per_session=st.integers(1, 2), per_day=st.integers(1, 3))
def test_random_visits_respect_caps_and_purchases(
    server: ServerProcess,
    r: redis.Redis,
    steps: list[tuple[str, Any]],
    per_session: int,
    per_day: int,
) -> None:
    site = add_site(server.redis_url, frequency=NO_SITE_LIMITS)  # the campaigns' own caps
    caps = {
        "per_session": per_session,
        "per_visitor_day": per_day,
        "per_visitor_week": 10,
        "dismiss_cooldown_minutes": 0,
        "quiet_days_after_purchase": 3,
    }
    save_campaigns(server.redis_url, site, [
        discount_campaign("disc", priority=50, caps=caps),
        message_campaign("msg", priority=10, caps=caps,
                         trigger={"exit_intent": ["top_edge", "tab_switch"],
                                  "hesitation": {"product": 30}, "scroll_depth": 50}),
        message_campaign("read", priority=5, caps=caps,
                         trigger={"exit_intent": [], "time_on_page": 20}),
    ])  # fmt: skip
    visitor = new_visitor()
    offers: list[dict[str, Any]] = []
    per_session_count: Counter[tuple[str, str]] = Counter()
    purchased = False
    client = Client(server.ws_url)
    session = client.hello(
        site, visitor, page={"url": "https://shop.test/p", "page_type": "product"}
    )["session"]
    try:
        for n, (kind, arg) in enumerate(steps):
            if kind in ("exit", "hesitate", "scroll", "time"):
                if kind == "exit":
                    body = {"type": "signal", "name": "exit_intent", "kind": arg}
                elif kind == "scroll":
                    body = {"type": "signal", "name": "scroll_depth", "percent": arg}
                elif kind == "time":
                    body = {"type": "signal", "name": "time_on_page", "seconds": arg}
                else:
                    body = {
                        "type": "signal",
                        "name": "hesitation",
                        "seconds": arg,
                        "page_type": "product",
                    }
                msg_id = client.send(body)
                client.answer(msg_id)
                got = _offer_or_none(client)
                if got is not None:
                    assert not purchased, "offered after a purchase"
                    # Only the campaign with the trigger, once the threshold is reached.
                    if kind == "scroll":
                        assert got["campaign"] == "msg" and arg >= 50, (got, arg)
                    if kind == "time":
                        assert got["campaign"] == "read" and arg >= 20, (got, arg)
                    if kind == "exit":
                        assert got["campaign"] != "read", got
                    offers.append(got)
                    per_session_count[(session, got["campaign"])] += 1
            elif kind == "cart":
                client.event("cart_add", item={"id": f"p{n}", "price": arg})
            elif kind == "shown" and offers:
                shown = {"type": "offer_shown", "offer": offers[-1]["id"],
                         "claim": offers[-1]["claim"]}  # fmt: skip
                assert client.answer(client.send(shown))["type"] == "ack"
            elif kind == "dismiss" and offers:
                dismissed = {"type": "offer_dismissed", "offer": offers[-1]["id"]}
                assert client.answer(client.send(dismissed))["type"] == "ack"
            elif kind == "purchase":
                client.event("purchase", order_id=f"o{n}", value=10)
                purchased = True
            elif kind == "reconnect":
                client.close()
                client = Client(server.ws_url)
                session = client.hello(site, visitor)["session"]
    finally:
        client.close()
    for (_sid, campaign), count in per_session_count.items():
        assert count <= per_session, (campaign, count)
    by_campaign = Counter(o["campaign"] for o in offers)
    assert all(count <= per_day for count in by_campaign.values())
    # A visitor who still holds a valid code gets the same code again; no code goes to two claims.
    issued = r.hgetall(Keys().issued_codes(site, "disc"))
    assert {o["code"] for o in offers if o.get("code")} == set(issued)
    assert all(json.loads(record)["visitor"] == visitor for record in issued.values())
    for key in r.scan_iter(
        Keys().tag(site, visitor).replace("{", "[{]").replace("}", "[}]") + ":trace:*"
    ):
        for entry in r.lrange(key, 0, -1):
            trace = json.loads(entry)
            if trace["signal"]["type"] == "seen":
                continue  # the widget's report of a painted offer, not a decision
            chosen = trace["chosen"].split(".")[0] if trace["chosen"] else None
            explained = {x["campaign"] for x in trace["rejected"]}
            assert {"disc", "msg", "read"} <= explained | {chosen}


def _offer_or_none(client: Client) -> dict[str, Any] | None:
    while True:
        try:
            message = client.recv(timeout=0.4)
        except TimeoutError:
            return None
        if message["type"] == "offer":
            return message["offer"]  # type: ignore[no-any-return]
        if message["type"] == "withdraw":
            return None
