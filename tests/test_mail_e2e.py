"""Abandoned-cart email through the whole product: a visitor leaves the real server, the real
`widget-server worker` sends through a real SMTP server; coming back or buying cancels it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from widget_server.keys import Keys
from widget_server.mail_flows import MailFlowStore
from widget_server.shop_api import signature_for

from .mail_support import SmtpSink, fast_config
from .support import ROOT, Client, ServerProcess, add_site, new_visitor


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


@pytest.fixture
def worker(sink: SmtpSink, server: ServerProcess, tmp_path: Path) -> Iterator[None]:
    env = {
        **os.environ,
        "REDIS_URL": server.redis_url,
        "WIDGET_DATA_DIR": str(server.data_dir),  # the same secret key as the server
        "SMTP_URL": sink.url,
        "MAIL_FROM": "shop@example.com",
        "MAIL_PUBLIC_URL": server.url,
        "WIDGET_LOG_LEVEL": "info",
    }
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "worker"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    # Ready once it says so: a stop signal before then would not be a clean shutdown.
    assert wait_for(lambda: "mail worker started" in log_path.read_text()), log_path.read_text()
    yield
    process.terminate()
    assert process.wait(15) == 0, (tmp_path / "worker.log").read_text()


def site_with_fast_flows(redis_url: str, delay_s: float) -> str:
    site = add_site(redis_url)

    async def save() -> None:
        client = Redis.from_url(redis_url)
        try:
            await MailFlowStore(client, Keys()).save(site, fast_config(delay_s))
        finally:
            await client.aclose()

    asyncio.run(save())
    return site


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


def test_visitor_who_leaves_gets_exactly_one_email(
    server: ServerProcess, sink: SmtpSink, worker: None
) -> None:
    site = site_with_fast_flows(server.redis_url, delay_s=0.5)
    leave_with_a_cart(server, site, new_visitor(), "leaver@example.com")
    assert wait_for(lambda: sink.received)
    time.sleep(1.5)  # nothing more follows
    assert len(sink.received) == 1
    message = sink.received[0].message
    assert message["To"] == "leaver@example.com"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Walnut &lt;b&gt;lamp&lt;/b&gt;" in html


def test_returning_or_buying_before_the_email_cancels_it(
    server: ServerProcess, sink: SmtpSink, worker: None, r: redis.Redis
) -> None:
    site = site_with_fast_flows(server.redis_url, delay_s=3)
    returner, buyer = new_visitor(), new_visitor()
    session = leave_with_a_cart(server, site, returner, "returner@example.com")
    leave_with_a_cart(server, site, buyer, "buyer@example.com")
    secret = str(json.loads(r.get(Keys().site(site)))["secret"])  # type: ignore[arg-type]
    order = json.dumps({"order_id": "B-1", "value": 49.0, "email": "buyer@example.com"}).encode()
    ts = str(int(time.time()))
    answer = httpx.post(
        f"{server.url}/v1/orders?site={site}",
        content=order,
        headers={"x-widget-timestamp": ts, "x-widget-signature": signature_for(secret, ts, order)},
    )
    assert answer.json()["new_order"] is True  # the shop's backend reports the order
    with Client(server.ws_url) as back:
        back.hello(site, returner, session=session)  # back on the site before the email is due
        time.sleep(4.5)
        assert sink.received == []
    assert sink.received == []
