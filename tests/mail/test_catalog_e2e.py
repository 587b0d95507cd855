"""A price drop through the whole product: visitors view products over the real server's
WebSocket, `widget-server catalog import` re-imports the feed with a lower price, and the real
`widget-server worker` sends through a real SMTP server to the visitor who viewed it only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from widget_server.mail.flows import Flow, FlowStep, MailConfig, MailFlowStore
from widget_server.store.client import open_store

from ..mail_support import UNLIMITED, IsolatedShop, address_for, isolated_shop
from ..support import ROOT, Client, new_visitor


@pytest.fixture
def shop(redis_url: str, tmp_path: Path) -> Iterator[IsolatedShop]:
    with isolated_shop(redis_url, tmp_path) as isolated:
        yield isolated


def feed(path: Path, mug_price: str) -> Path:
    path.write_text(
        "id\ttitle\tprice\tavailability\tlink\tproduct_type\n"
        f"MUG\tBlue mug\t{mug_price} EUR\tin stock\thttps://shop.test/p/mug\tKitchen\n"
        "LAMP\tWalnut lamp\t80.00 EUR\tin stock\thttps://shop.test/p/lamp\tLiving\n"
    )
    return path


def import_feed(shop: IsolatedShop, site: str, path: Path) -> str:
    env = dict(os.environ, REDIS_URL=shop.server.redis_url, WIDGET_REDIS_PREFIX=shop.keys.prefix)
    done = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "catalog", "import", str(path), "--site", site],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def save_flows(shop: IsolatedShop, site: str) -> None:
    step = FlowStep(delay_minutes=0, template="price_drop", subject="Now cheaper: {product}")
    config = MailConfig(
        flows=[Flow(name="price_drop", kind="price_drop", steps=[step])], budget=UNLIMITED
    )

    async def save() -> None:
        client = open_store(shop.server.redis_url)
        try:
            await MailFlowStore(client, shop.keys).save(site, config)
        finally:
            await client.aclose()

    asyncio.run(save())


def view(shop: IsolatedShop, site: str, visitor: str, email: str, product: str) -> None:
    with Client(shop.server.ws_url) as c:
        c.hello(site, visitor)
        assert c.event("identify", email=email, consent=True)["type"] == "ack"
        answer = c.event("product_view", product={"id": product, "title": product.title()})
        assert answer["type"] == "ack"


def until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_lower_price_in_a_reimported_feed_emails_the_visitor_who_viewed_it(
    shop: IsolatedShop, tmp_path: Path, r: redis.Redis
) -> None:
    site = shop.add_site()
    save_flows(shop, site)
    import_feed(shop, site, feed(tmp_path / "feed.tsv", "40.00"))
    viewer, other = new_visitor(), new_visitor()
    view(shop, site, viewer, address_for(site, "viewer"), "MUG")
    view(shop, site, other, address_for(site, "other"), "LAMP")
    interest = shop.keys.interest
    # The server writes who viewed what beside the event, within a second.
    until(lambda: r.zscore(interest(site, "MUG"), viewer) is not None)
    until(lambda: r.zscore(interest(site, "LAMP"), other) is not None)

    report = import_feed(shop, site, feed(tmp_path / "feed.tsv", "30.00"))

    assert "1 price drop; emails for 1 visitor" in report
    until(lambda: len(shop.sink.received) >= 1)
    jobs = shop.keys.mail_visitor_jobs
    until(lambda: r.scard(jobs(site, viewer)) == 0 and r.scard(jobs(site, other)) == 0)
    assert [m.rcpt_tos for m in shop.sink.received] == [[address_for(site, "viewer")]]
    message = shop.sink.received[0].message
    assert message["Subject"] == "Now cheaper: Blue mug"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Blue mug" in text and "30" in text
    # The same feed again changes nothing and sends nothing more.
    again = import_feed(shop, site, feed(tmp_path / "feed.tsv", "30.00"))
    assert "price drop" not in again
    assert len(shop.sink.received) == 1
