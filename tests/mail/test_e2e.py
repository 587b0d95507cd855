"""Abandoned-cart email through the whole product: a visitor leaves the real server, the real
`widget-server worker` sends through a real SMTP server; coming back or buying cancels it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from widget_server.realtime.shop_api import signature_for

from ..mail_support import IsolatedShop, address_for, isolated_shop
from ..support import Client, ServerProcess, new_visitor


@pytest.fixture
def shop(redis_url: str, tmp_path: Path) -> Iterator[IsolatedShop]:
    with isolated_shop(redis_url, tmp_path) as isolated:
        yield isolated


def leave_with_a_cart(server: ServerProcess, site: str, visitor: str, email: str) -> str:
    with Client(server.ws_url) as c:
        session = c.hello(site, visitor)["session"]
        c.event("identify", email=email, consent=True)
        c.event("cart_add", item={"id": "L1", "title": "Walnut <b>lamp</b>", "price": 49.0})
    return session


def wait_for(predicate: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_visitor_who_leaves_gets_exactly_one_email(shop: IsolatedShop) -> None:
    site = shop.site_with_fast_flows(delay_s=0.5)
    leave_with_a_cart(shop.server, site, new_visitor(), address_for(site, "leaver"))
    assert wait_for(lambda: shop.sink.received)
    time.sleep(1.5)  # nothing more follows
    assert len(shop.sink.received) == 1
    message = shop.sink.received[0].message
    assert message["To"] == address_for(site, "leaver")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Walnut &lt;b&gt;lamp&lt;/b&gt;" in html


def test_returning_or_buying_before_the_email_cancels_it(shop: IsolatedShop) -> None:
    server = shop.server
    delay_s = 4.0
    site = shop.site_with_fast_flows(delay_s=delay_s)
    returner, buyer = new_visitor(), new_visitor()
    session = leave_with_a_cart(server, site, returner, address_for(site, "returner"))
    due = time.monotonic() + delay_s
    leave_with_a_cart(server, site, buyer, address_for(site, "buyer"))
    secret = shop.site_secret(site)
    order = json.dumps({"order_id": "B-1", "value": 49.0, "email": address_for(site, "buyer")})
    ts = str(int(time.time()))
    answer = httpx.post(
        f"{server.url}/v1/orders?site={site}",
        content=order.encode(),
        headers={
            "x-widget-timestamp": ts,
            "x-widget-signature": signature_for(secret, ts, order.encode()),
        },
    )
    assert answer.json()["new_order"] is True  # the shop's backend reports the order
    with Client(server.ws_url) as back:
        back.hello(site, returner, session=session)  # back on the site before the email is due
        assert time.monotonic() < due, "the machine was too slow to return in time"
        time.sleep(due + 1.5 - time.monotonic())  # past the due time: nothing was sent
        assert shop.sink.received == []
    assert shop.sink.received == []
