"""Abandoned-cart and browse emails end to end: a real SMTP server (aiosmtpd), the real Valkey,
real sessions; then the rendering itself: escaping, header safety, preview and screenshot."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from widget_server.catalog.store import CatalogStore, Product
from widget_server.mail.flows import DEFAULT_CONFIG
from widget_server.mail.message import (
    MailAddressError,
    RenderedEmail,
    build_message,
    render_preview,
)
from widget_server.mail.worker import process_job
from widget_server.visitors.session_view import CartLine
from widget_server.wire import protocol as p

from ..mail_support import (
    FROM,
    PUBLIC_URL,
    SECRET,
    Scenario,
    SmtpSink,
    eventually,
    fast_config,
    mail_context,
    running_worker,
    scenario,
    wait_until,
)
from ..support import ROOT, SCREENSHOTS

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def part(message: EmailMessage, kind: str) -> str:
    body = message.get_body(preferencelist=(kind,))
    assert body is not None, f"no {kind} part"
    return str(body.get_content())


def test_one_cart_email_arrives_with_both_parts_and_the_right_headers(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        cart = [
            p.CartItem(id="sku-1", quantity=2, price=25.0, title="Blue mug"),
            p.CartItem(id="sku-2", quantity=1, price=9.5, title=HOSTILE),
        ]
        who = await s.shopper(email_address="Ann@Example.com", cart=cart)
        result = await s.leave(who)
        assert (result.outcome, result.flow) == ("scheduled", "cart")
        async with running_worker(s.ctx):
            await wait_until(lambda: len(s.sink.received) >= 1)
            await asyncio.sleep(0.3)
        assert len(s.sink.received) == 1, "exactly one email"
        envelope = s.sink.received[0]
        assert (envelope.mail_from, envelope.rcpt_tos) == (FROM, ["Ann@example.com"])
        message = envelope.message
        assert message.get_content_type() == "multipart/alternative"
        text, html = part(message, "plain"), part(message, "html")
        assert "Blue mug" in text and "2 x €25.00" in text and "€59.50" in html
        assert "<script" not in html and "<img src=x" not in html and "&lt;script&gt;" in html
        assert message["Subject"] == f"Step 1 at {s.site}"
        assert message["To"] == "Ann@example.com"
        assert email.utils.parseaddr(message["From"]) == (s.site, FROM)
        assert re.fullmatch(r"<[^@<>\s]+@mail\.test>", message["Message-ID"])
        sent_at = email.utils.parsedate_to_datetime(message["Date"]).timestamp()
        assert abs(sent_at - time.time()) < 60
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(
            rf"<{PUBLIC_URL}/v1/mail/unsubscribe\?t=[\w.-]+>", message["List-Unsubscribe"]
        )
        assert await s.stats() == {"sent:0": 1}

    scenario(redis_url, body)


async def has_stats(s: Scenario, expected: dict[str, int]) -> bool:
    return await s.stats() == expected


def test_purchase_before_the_due_time_sends_nothing(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        # Bought on another node: only the profile knows, and the worker checks it at send time.
        quiet = await s.shopper()
        await s.leave(quiet)
        await quiet.send(p.Purchase, order_id="o-1", value=50.0)
        # Bought through the shop's order webhook: the pending jobs go at once.
        loud = await s.shopper(email_address="bob@example.com")
        await s.leave(loud)
        assert await s.ctx.scheduler.purchased(s.site, loud.visitor) == 1
        assert await s.ctx.scheduler.pending(s.site, loud.visitor) == []
        async with running_worker(s.ctx):
            await eventually(lambda: has_stats(s, {"skipped:purchased": 1}))
        assert s.sink.received == []

    scenario(redis_url, body, config=fast_config(1.0))


def test_unsubscribe_and_consent_withdrawal_stop_further_emails(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        ann = await s.shopper(email_address="ann@example.com")
        bob = await s.shopper(email_address="bob@example.com")
        cid = await s.shopper(email_address="cid@example.com")
        for who in (ann, bob, cid):
            await s.leave(who)
        second_due = time.monotonic() + 5.0
        async with running_worker(s.ctx):
            await wait_until(lambda: len(s.sink.received) == 3)
            for _ in range(1500):  # until the worker has recorded them as sent (30 s at most)
                if (await s.stats()).get("sent:0") == 3:
                    break
                await asyncio.sleep(0.02)
            to_ann = next(m for m in s.sink.messages() if m["To"] == "ann@example.com")
            async with s.client() as client:
                one_click = to_ann["List-Unsubscribe"].strip("<>")
                answer = await client.post(one_click, data={"List-Unsubscribe": "One-Click"})
                assert answer.status_code == 200
            assert await s.ctx.scheduler.consent_withdrawn(s.site, bob.visitor) == 1
            await cid.send(p.ConsentUpdate, analytics=True, marketing=False)  # banner only
            assert time.monotonic() < second_due, "the machine was too slow to withdraw in time"
            await asyncio.sleep(second_due + 1.5 - time.monotonic())  # past the second step
        assert sorted(m["Subject"] for m in s.sink.messages()) == [f"Step 1 at {s.site}"] * 3
        assert await s.stats() == {"sent:0": 3, "skipped:no_consent": 1}
        assert (await s.leave(ann)).outcome == "suppressed"

    scenario(redis_url, body, config=fast_config(0, 5.0))


def test_two_workers_send_one_email_per_step(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        people = [await s.shopper(email_address=f"p{i}@example.com") for i in range(5)]
        for who in people:
            await s.leave(who)
        async with mail_context(redis_url, s.sink.url, keys=s.ctx.keys, batch=3) as other:
            async with running_worker(s.ctx, poll_s=0.01), running_worker(other, poll_s=0.01):
                await wait_until(lambda: len(s.sink.received) >= 15, within=10)
                await asyncio.sleep(0.5)
            assert other.metrics.sent.labels("cart")._value.get() > 0
        sent = [(m["To"], m["Subject"]) for m in s.sink.messages()]
        assert len(sent) == 15 and len(set(sent)) == 15, "every (visitor, step) exactly once"
        assert s.ctx.metrics.sent.labels("cart")._value.get() > 0, "both workers took part"

    scenario(
        redis_url, body, config=fast_config(0, 0, 0), sink=SmtpSink(data_delay_s=0.03), batch=3
    )


def test_abandoned_leases_are_taken_over_and_never_send_twice(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        who = await s.shopper()
        await s.leave(who)
        now = time.time()
        crashed = await s.ctx.scheduler.claim(now, limit=10, lease_s=1.0)
        assert len(crashed) == 2
        # Step 1: claimed, then the worker died before the commit: the next worker sends it.
        # Step 2: committed, then the worker died before the relay accepted it: at most once
        # means this one is lost, never sent twice.
        second = next(job for job in crashed if job.step == 1)
        assert await s.ctx.scheduler.commit(second, now=now, daily_cap=20) == "ok"
        async with running_worker(s.ctx):
            await asyncio.sleep(0.3)
            assert s.sink.received == [], "a live lease is respected"
            await wait_until(lambda: len(s.sink.received) >= 1, within=30)
            await eventually(lambda: has_stats(s, {"sent:0": 1, "skipped:already_sent": 1}))
        assert [m["Subject"] for m in s.sink.messages()] == [f"Step 1 at {s.site}"]
        assert await s.ctx.scheduler.pending(s.site, who.visitor) == []
        assert not await s.ctx.scheduler.complete(second), "the dead worker's token is void"
        assert await s.stats() == {"sent:0": 1, "skipped:already_sent": 1}

    scenario(redis_url, body, config=fast_config(0, 0))


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from redis.asyncio import Redis
    from widget_server.store.keys import Keys
    from widget_server.mail.context import MailSettings, build_mail_context
    from widget_server.mail.worker import run_worker

    redis_url, smtp_url, secret, prefix = sys.argv[1:5]
    settings = MailSettings(secret_key=secret, public_url="https://mail.test",
                            from_address="shop@mail.test", smtp_url=smtp_url, lease_s=1.0)

    async def main():
        ctx = build_mail_context(settings, Redis.from_url(redis_url), Keys(prefix=prefix))
        await run_worker(ctx, stop=asyncio.Event(), poll_s=0.02)

    asyncio.run(main())
    """
)


def test_worker_killed_mid_send_is_replaced_without_a_second_email(
    redis_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)

    async def body(s: Scenario) -> None:
        who = await s.shopper()
        await s.leave(who)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            redis_url,
            s.sink.url,
            SECRET,
            s.ctx.keys.prefix,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert await asyncio.to_thread(s.sink.data_started.wait, 15), "the worker sent DATA"
            worker.send_signal(signal.SIGKILL)  # the relay has the message; its 250 is pending
            assert await asyncio.wait_for(worker.wait(), 5) == -signal.SIGKILL
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        async with running_worker(s.ctx):  # the dead worker's 1 s lease runs out meanwhile
            await eventually(lambda: has_stats(s, {"skipped:already_sent": 1}))
        assert len(s.sink.received) == 1
        assert await s.ctx.scheduler.pending(s.site, who.visitor) == []
        assert await s.stats() == {"skipped:already_sent": 1}

    scenario(redis_url, body, sink=SmtpSink(data_delay_s=5.0))


def test_returning_cancels_and_leaving_again_reschedules(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        who = await s.shopper()
        await s.leave(who)
        assert len(await s.ctx.scheduler.pending(s.site, who.visitor)) == 2
        assert await s.ctx.scheduler.visitor_returned(s.site, who.visitor, now=time.time()) == 2
        async with running_worker(s.ctx):
            await asyncio.sleep(0.8)
            assert s.sink.received == []
            assert len((await s.leave(who)).job_ids) == 2
            await wait_until(lambda: len(s.sink.received) == 2)
            await asyncio.sleep(0.3)
        assert len(s.sink.received) == 2

    scenario(redis_url, body, config=fast_config(0.4, 0.5))


def test_smtp_failures_are_retried_or_suppress_the_address(redis_url: str) -> None:
    replies = {
        "busy@example.com": ["451 try later", "451 try later"],
        "gone@example.com": ["550 no such user"],
    }

    async def body(s: Scenario) -> None:
        for address in replies:
            await s.leave(await s.shopper(email_address=address))
        async with running_worker(s.ctx):
            await wait_until(lambda: len(s.sink.received) == 1, within=30)

            async def bounced() -> bool:
                return await s.ctx.scheduler.suppression(s.site, "gone@example.com") == "bounced"

            await eventually(bounced)
        assert [m["To"] for m in s.sink.messages()] == ["busy@example.com"]
        assert s.ctx.metrics.retries._value.get() == 2
        assert await s.ctx.scheduler.suppression(s.site, "gone@example.com") == "bounced"

    scenario(redis_url, body, sink=SmtpSink(rcpt_replies=replies))


def test_browse_email_shows_viewed_products_from_the_catalog(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        await CatalogStore(s.ctx.redis, s.ctx.keys).upsert(
            s.site,
            [
                Product(
                    id="lamp",
                    title="Desk lamp",
                    price=40.0,
                    link="/p/lamp",
                    image_link="https://cdn.shop.test/lamp.jpg",
                ),
                Product(id="gone", title="Sold out", price=5.0, availability="out_of_stock"),
            ],
        )
        views = [p.Product(id="gone"), p.Product(id="lamp"), p.Product(id="lamp")]
        who = await s.shopper(cart=[], views=views)
        assert (await s.leave(who)).flow == "browse"
        async with running_worker(s.ctx):
            await wait_until(lambda: len(s.sink.received) == 1)
        message = s.sink.messages()[0]
        html = part(message, "html")
        assert message["Subject"] == "Still like Desk lamp?"
        assert 'src="https://cdn.shop.test/lamp.jpg"' in html and "Sold out" not in html
        product_link = re.findall(r'href="([^"]+)"[^>]*>Desk lamp<', html)[0].replace("&amp;", "&")
        async with s.client() as client:
            answer = await client.get(product_link)
        assert answer.headers["location"].startswith("https://shop.test/p/lamp?utm_source=")

    scenario(redis_url, body)


def test_header_injection_and_malformed_addresses_are_refused(redis_url: str) -> None:
    rendered = RenderedEmail("Hello\r\nBcc: victim@y.z", "<p>hi</p>", "hi")
    common: dict[str, Any] = {
        "from_address": FROM,
        "rendered": rendered,
        "now": time.time(),
        "unsubscribe_url": f"{PUBLIC_URL}/v1/mail/unsubscribe?t=abc",
    }
    for bad in (
        "a@b.c\r\nBcc: x@y.z",
        "a@b.c\nBcc: x@y.z",
        "not-an-email",
        "a@b",
        "<a@b.de>",
        "a@b.de, c@d.de",
        "a b@c.de",
        "ann@exa mple.com",
        "x@y@z.de",
        "",
    ):
        with pytest.raises(MailAddressError):
            build_message(from_name="Shop", to=bad, **common)
    with pytest.raises(MailAddressError):
        build_message(from_name="Shop", to="ok@example.com", **common | {"unsubscribe_url": "x:y"})
    message = build_message(from_name="Evil\r\nBcc: x@y.z\nShop", to="ok@example.com", **common)
    raw = message.as_bytes()
    assert b"\nBcc:" not in raw
    assert message["Subject"] == "Hello Bcc: victim@y.z"
    assert email.utils.parseaddr(message["From"])[1] == FROM

    async def body(s: Scenario) -> None:
        line = [CartLine("sku", 1, 5.0, "Mug", "", "")]
        for bad in ("a@b.c\r\nBcc: x@y.z", "nobody", "x@y@z.de"):
            result = await s.ctx.scheduler.visitor_left(
                s.site, "visitor-1", now=time.time(), cart=line, email=bad, consent=True
            )
            assert result.outcome == "invalid_email"
        assert await s.ctx.scheduler.pending(s.site, "visitor-1") == []

    scenario(redis_url, body)


def test_hostile_names_and_titles_are_escaped_and_flattened(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        who = await s.shopper(cart=[p.CartItem(id="sku-9", price=3.0, title=HOSTILE)])
        assert len((await s.leave(who)).job_ids) == 1
        [job] = await s.ctx.scheduler.claim(time.time())
        assert await process_job(s.ctx, s.ctx.require_sending(), job) == "sent"
        assert b"\nBcc:" not in s.sink.received[0].raw
        message = s.sink.messages()[0]
        assert email.utils.parseaddr(message["From"]) == ('Bad "Shop" Bcc: x@y.z', FROM)
        html = part(message, "html")
        assert "<script>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;" in html and "Bad &#34;Shop&#34; Bcc: x@y.z" in html

    config = fast_config(0, sender_name='Bad "Shop"\r\nBcc: x@y.z')
    scenario(redis_url, body, config=config)


def test_render_preview_and_screenshot(tmp_path: Path) -> None:
    flow = DEFAULT_CONFIG.flow("cart")
    assert flow is not None
    sample: dict[str, Any] = {
        "shop_name": "Nordic Knits",
        "code": "COMEBACK10",
        "code_expires": time.time() + 2 * 86400,
    }
    subject, html, text = render_preview(flow, 0, sample)
    assert subject == "You left something in your cart"
    assert "COMEBACK10" in html and "COMEBACK10" in text and "Merino wool sweater" in text
    subject_de, html_de, _ = render_preview(flow, 1, {**sample, "locale": "de"})
    assert subject_de == "Ihr Warenkorb bei Nordic Knits ist noch da"
    assert "Zurück zum Warenkorb" in html_de and "Gültig bis" in html_de
    hostile = render_preview(flow, 0, {"lines": [{"id": "x", "title": HOSTILE, "price": 1.0}]})[1]
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "Chromium is a test dependency (.ci/run installs it)"
    colors = {"sku-1": "#7c9cbf", "sku-2": "#c9a26b", "sku-3": "#b56576", "sku-4": "#6d9f71"}
    for name, color in colors.items():
        (tmp_path / f"{name}.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120">'
            f'<rect width="120" height="120" fill="{color}"/>'
            '<circle cx="60" cy="52" r="26" fill="#ffffff" opacity="0.55"/></svg>'
        )
    with static_server(tmp_path) as base:
        lines = [
            {"id": "sku-1", "title": "Merino wool sweater", "price": 89.0, "quantity": 1},
            {
                "id": "sku-2",
                "title": "Organic cotton socks (3 pairs)",
                "price": 19.5,
                "quantity": 2,
            },
        ]
        similar = [
            {"id": "sku-3", "title": "Cashmere scarf", "price": 59.0},
            {"id": "sku-4", "title": "Wool beanie", "price": 29.0},
        ]
        for product in lines + similar:
            product["image"] = f"{base}/{product['id']}.svg"
        html = render_preview(flow, 0, {**sample, "lines": lines, "similar": similar})[1]
        page = tmp_path / "email.html"
        page.write_text(html)
        out = SCREENSHOTS / "email-cart.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={out}",
                "--window-size=700,1100",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    assert out.stat().st_size > 10_000


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free port (emails only carry http(s) images)."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
