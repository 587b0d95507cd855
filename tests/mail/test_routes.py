"""The endpoints behind email links and the relay's webhook, through the ASGI app."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from urllib.parse import parse_qs, urlsplit

from widget_server.mail.send import webhook_signature
from widget_server.mail.tokens import MailLinks

from ..mail_support import PUBLIC_URL, Scenario, running_worker, scenario, wait_until


def links(html: str, path: str) -> list[str]:
    found = re.findall(rf'href="({PUBLIC_URL}{path}\?t=[^"]+)"', html)
    return [link.replace("&amp;", "&") for link in found]


def token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


async def sent_html(s: Scenario) -> tuple[str, str]:
    """Send one cart email to ann@example.com; return its HTML and unsubscribe URL."""
    await s.leave(await s.shopper(email_address="ann@example.com"))
    async with running_worker(s.ctx):
        await wait_until(lambda: len(s.sink.received) == 1)
    message = s.sink.messages()[0]
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    return str(html.get_content()), message["List-Unsubscribe"].strip("<>")


def test_restore_and_click_links_redirect_only_where_they_were_signed_to(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        html, unsubscribe = await sent_html(s)
        async with s.client() as client:
            [restore] = links(html, "/v1/mail/restore")
            answer = await client.get(restore)
            assert answer.status_code == 302
            target = urlsplit(answer.headers["location"])
            query = parse_qs(target.query)
            assert (target.scheme, target.netloc, target.path) == ("https", "shop.test", "/cart")
            assert query["item"] == ["sku-1:2"]
            assert query["utm_source"] == ["abandonment"] and query["utm_campaign"] == ["cart"]

            clicks = links(html, "/v1/mail/click")
            assert clicks, "shop links are tracked"
            answer = await client.get(clicks[0])
            assert answer.status_code == 302
            assert answer.headers["location"].startswith("https://shop.test")
            assert "utm_medium=email" in answer.headers["location"]
            assert await s.stats() == {"sent:0": 1, "clicks:0": 1, "restores:0": 1}

            good = token(clicks[0])
            tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
            for bad in (tampered, "x" + good, token(restore), token(unsubscribe), ""):
                answer = await client.get("/v1/mail/click", params={"t": bad})
                assert answer.status_code == 400 and "location" not in answer.headers
            signed = MailLinks(s.ctx.signer, PUBLIC_URL, s.site, "cart", 0, time.time(), "a", "b")
            answer = await client.get(signed.tracked("https://evil.test/phish"))
            assert answer.status_code == 400, "a signed target off the site's origins is refused"

            old = MailLinks(
                s.ctx.signer, PUBLIC_URL, s.site, "cart", 0, time.time() - 1e8, "a", "b"
            )
            answer = await client.get(old.tracked("https://shop.test/p/1"))
            assert answer.status_code == 302, "an expired but authentic link still leads on"
            answer = await client.get(old.restore("visitor-1", [("sku-1", 1)]))
            assert answer.headers["location"].startswith("https://shop.test?utm_source=a")
        assert (await s.stats())["clicks:0"] == 1, "expired links are not counted"

    scenario(redis_url, body)


def test_unsubscribe_page_asks_and_one_click_post_unsubscribes(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        _, unsubscribe = await sent_html(s)
        async with s.client() as client:
            page = await client.get(unsubscribe)
            assert page.status_code == 200 and '<form method="post"' in page.text
            assert "<script" not in page.text and "ann@example.com" in page.text
            assert page.headers["cache-control"] == "no-store"
            assert await s.ctx.scheduler.suppression(s.site, "ann@example.com") is None
            done = await client.post(
                unsubscribe,
                content=b"List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert done.status_code == 200 and "unsubscribed" in done.text
            assert await s.ctx.scheduler.suppression(s.site, "ann@example.com") == "unsubscribed"
            tampered = token(unsubscribe)[:-2] + "xx"
            answer = await client.post("/v1/mail/unsubscribe", params={"t": tampered})
            assert answer.status_code == 400
            answer = await client.get("/v1/mail/unsubscribe", params={"t": tampered})
            assert answer.status_code == 400 and "<form" not in answer.text

    scenario(redis_url, body)


def test_bounce_and_complaint_webhook_is_signed_and_suppresses(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        site = await s.ctx.sites.get(s.site)
        assert site is not None
        events = {
            "events": [
                {"type": "bounce", "email": "Hard@Example.com"},
                {"type": "bounce", "email": "soft@example.com", "permanent": False},
                {"type": "complaint", "email": "angry@example.com"},
                {"type": "unsubscribe", "email": "a@b.c\r\nBcc: x@y.z"},
            ]
        }
        raw = json.dumps(events).encode()
        stamp = str(int(time.time()))
        url = f"/v1/mail/events?site={s.site}"
        forged = hmac.new(b"wrong", stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        async with s.client() as client:
            answer = await client.post(
                url,
                content=raw,
                headers={"x-widget-timestamp": stamp, "x-widget-signature": f"sha256={forged}"},
            )
            assert answer.status_code == 401
            signature = webhook_signature(site.secret, stamp, raw)
            headers = {"x-widget-timestamp": stamp, "x-widget-signature": signature}
            answer = await client.post(url, content=raw, headers=headers)
            assert answer.status_code == 200
            assert answer.json() == {"suppressed": 2, "ignored": 2}
            answer = await client.post("/v1/mail/events?site=nope", content=raw, headers=headers)
            assert answer.status_code == 404
        scheduler = s.ctx.scheduler
        assert await scheduler.suppression(s.site, "hard@example.com") == "bounced"
        assert await scheduler.suppression(s.site, "angry@example.com") == "complained"
        assert await scheduler.suppression(s.site, "soft@example.com") is None

    scenario(redis_url, body)


def test_the_site_s_own_words_are_in_its_emails_and_pages(redis_url: str) -> None:
    async def body(s: Scenario) -> None:
        config = await s.ctx.flows.get(s.site)
        words = {"en": {"footer": "Sent with care by {shop}.",
                        "unsubscribe_question": "Really stop the emails to {email}?"}}  # fmt: skip
        await s.ctx.flows.save(s.site, config.model_copy(update={"words": words}))
        html, unsubscribe = await sent_html(s)
        assert "Sent with care by " in html and "You are receiving this email" not in html
        async with s.client() as client:
            page = await client.get(unsubscribe)
            assert "Really stop the emails to ann@example.com?" in page.text
            # A configuration that cannot be read never stops the unsubscribe page.
            await s.ctx.redis.set(s.ctx.keys.mail_flows(s.site), "{not json")
            again = await client.get(unsubscribe)
            assert again.status_code == 200 and "Stop emails from" in again.text

    scenario(redis_url, body)
