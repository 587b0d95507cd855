"""Similar products in abandoned-cart emails: picked from the site's catalog (in stock, not in
the cart, no variants of it), shown with image, title, price and a signed click link in both
parts and both locales; a site without a catalog still gets its email, without the section.
In-process worker first, then the real server and the real `widget-server worker`."""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from html import unescape
from pathlib import Path

import pytest
from redis.asyncio import Redis

from widget_server.catalog.similar import SimilarProducts
from widget_server.catalog.store import CatalogStore, Product, import_feed
from widget_server.demo.catalog import generate_catalog, write_feed_tsv
from widget_server.mail.context import MailContext
from widget_server.mail.flows import MailFlowStore
from widget_server.mail.similar import MailSimilarProducts
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry, new_site
from widget_server.wire import protocol as p

from ..mail_support import (
    PUBLIC_URL,
    Scenario,
    SmtpSink,
    fast_config,
    mail_context,
    running_worker,
    wait_until,
)
from ..support import ROOT, Client, ServerProcess, add_site, new_visitor

SHOP = "https://shop.test"
HEADINGS = {"en": "You might also like", "de": "Das könnte Ihnen auch gefallen"}


def lamp(product_id: str, title: str, **fields: object) -> Product:
    values: dict[str, object] = {
        "price": 80.0,
        "currency": "EUR",
        "brand": "Lumo",
        "product_type": "Home > Lighting > Desk lamps",
        "link": f"{SHOP}/p/{product_id}",
        "image_link": f"https://cdn.shop.test/{product_id}.jpg",
    }
    values.update(fields)
    return Product(id=product_id, title=title, **values)  # type: ignore[arg-type]


# The cart holds "walnut"; the rest are candidates, most of which must never be suggested.
CATALOG = [
    lamp("walnut", "Walnut desk lamp", item_group_id="G-walnut"),
    lamp("walnut-xl", "Walnut desk lamp XL", item_group_id="G-walnut"),  # a variant
    lamp("oak", "Oak desk lamp", price=70.0, sale_price=59.0),
    lamp("marble", "Marble desk lamp", image_link="/img/marble.jpg"),  # relative image
    lamp("brass", "Brass desk lamp", availability="out_of_stock"),
    lamp("glass", "Glass desk lamp", link=""),  # nowhere to send the reader
    lamp("dollar", "Steel desk lamp", currency="USD"),  # priced in another currency
    lamp("nameless", " "),
    lamp("free", "Paper desk lamp", price=0.0),
]
NEVER = {"walnut-xl", "brass", "glass", "dollar", "nameless", "free"}


def part(message: EmailMessage, kind: str) -> str:
    body = message.get_body(preferencelist=(kind,))
    assert body is not None, f"no {kind} part"
    return str(body.get_content())


def with_similar(ctx: MailContext) -> None:
    """Give the context the similar-products source the server and the worker use."""
    catalog = CatalogStore(ctx.redis, ctx.keys)
    ctx.catalog = catalog
    ctx.similar = MailSimilarProducts(
        SimilarProducts(catalog), ctx.sites, MailFlowStore(ctx.redis, ctx.keys)
    )


async def site_with(ctx: MailContext, locale: str, products: list[Product]) -> str:
    key = "s" + secrets.token_hex(5)
    await SiteRegistry(ctx.redis, ctx.keys).save(
        new_site(key, name="Lamp Shop", origins=[SHOP], locale=locale)
    )
    await ctx.flows.save(key, fast_config(0))
    if products:
        await CatalogStore(ctx.redis, ctx.keys).upsert(key, products)
    return key


def similar_links(section: str) -> dict[str, str]:
    """Link target -> title of every link in a piece of email HTML, unescaped."""
    found = re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', section)
    return {unescape(url): unescape(title) for url, title in found}


def similar_section(html: str, locale: str) -> str:
    """The HTML from the similar heading to the footer."""
    start = html.index(HEADINGS[locale])
    return html[start : html.index("border-top:1px solid #e4e4e7", start)]


@pytest.mark.parametrize("locale", ["en", "de"])
def test_cart_email_suggests_similar_catalog_products(redis_url: str, locale: str) -> None:
    async def main() -> None:
        with SmtpSink() as sink:
            async with mail_context(redis_url, sink.url) as ctx:
                with_similar(ctx)
                site = await site_with(ctx, locale, CATALOG)
                s = Scenario(ctx, sink, site)
                cart = [p.CartItem(id="walnut", quantity=1, price=80.0, title="Walnut desk lamp")]
                await s.leave(await s.shopper(cart=cart))
                async with running_worker(ctx):
                    await wait_until(lambda: len(sink.received) == 1)
                await check(s, sink.messages()[0])

    async def check(s: Scenario, message: EmailMessage) -> None:
        html, text = part(message, "html"), part(message, "plain")
        section = similar_section(html, locale)
        links = similar_links(section)
        titles = set(links.values())
        assert {"Oak desk lamp", "Marble desk lamp"} <= titles and len(titles) <= 4
        assert not titles & {product.title for product in CATALOG if product.id in NEVER}
        assert "Walnut desk lamp" not in titles
        # Image, price (the sale price) and title of each suggestion, in the site's locale.
        assert 'src="https://cdn.shop.test/oak.jpg"' in section
        assert 'src="https://shop.test/img/marble.jpg"' in section  # made absolute
        image_link = re.search(
            r'<a href="([^"]+)"[^>]*><img src="https://cdn.shop.test/oak', section
        )
        assert image_link and links[unescape(image_link[1])] == "Oak desk lamp"  # clickable too
        assert ("€59.00" if locale == "en" else "59,00 €") in section
        # The text part lists the same products with the same tracked links.
        text_section = text[text.index(HEADINGS[locale]) :]
        for url, title in links.items():
            assert f"- {title} (" in text_section
            assert f": {url}" in text_section
        # Every link is the signed click redirect, and it leads to the product in the shop.
        async with s.client() as client:
            for url, title in links.items():
                assert url.startswith(f"{PUBLIC_URL}/v1/mail/click?t=")
                answer = await client.get(url)
                assert answer.status_code == 302
                product_id = next(x.id for x in CATALOG if x.title == title)
                assert answer.headers["location"].startswith(f"{SHOP}/p/{product_id}?utm_")
        assert (await s.stats())["clicks:0"] == len(links)

    asyncio.run(main())


def test_site_without_a_catalog_gets_its_email_without_the_section(redis_url: str) -> None:
    async def main() -> None:
        with SmtpSink() as sink:
            async with mail_context(redis_url, sink.url) as ctx:
                with_similar(ctx)
                s = Scenario(ctx, sink, await site_with(ctx, "en", []))
                await s.leave(await s.shopper())
                async with running_worker(ctx):
                    await wait_until(lambda: len(sink.received) == 1)
                html, text = part(sink.messages()[0], "html"), part(sink.messages()[0], "plain")
                assert "Blue mug" in html and "Blue mug" in text
                assert HEADINGS["en"] not in html and HEADINGS["en"] not in text
                assert await s.stats() == {"sent:0": 1}

    asyncio.run(main())


# --- the real server and the real `widget-server worker` ------------------------------------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


def demo_catalog_site(redis_url: str, tmp_path: Path) -> str:
    """A site on the server's key space with the demo catalog and fast email flows."""
    site = add_site(redis_url, origins=[SHOP])
    feed = tmp_path / "feed.tsv"
    write_feed_tsv(generate_catalog(), feed, base_url=SHOP)

    async def prepare() -> None:
        client = Redis.from_url(redis_url)
        try:
            keys = Keys()
            await MailFlowStore(client, keys).save(site, fast_config(0.3))
            report = await import_feed(CatalogStore(client, keys), site, feed, out=io.StringIO())
            assert report.ok and report.added == 240
        finally:
            await client.aclose()

    asyncio.run(prepare())
    return site


def test_worker_command_puts_demo_catalog_products_into_the_email(
    server: ServerProcess, sink: SmtpSink, tmp_path: Path
) -> None:
    site = demo_catalog_site(server.redis_url, tmp_path)
    catalog = {product.id: product for product in generate_catalog()}
    address = f"similar-{secrets.token_hex(4)}@example.com"
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        c.event("identify", email=address, consent=True)
        c.event("cart_add", item={"id": "P1004", "title": "Windbreaker", "price": 150.9})
    env = {
        **os.environ,
        "REDIS_URL": server.redis_url,
        "WIDGET_DATA_DIR": str(server.data_dir),
        "SMTP_URL": sink.url,
        "MAIL_FROM": "shop@example.com",
        "MAIL_PUBLIC_URL": server.url,
        "WIDGET_LOG_LEVEL": "warning",
    }
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "widget_server.cli", "worker"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while not [m for m in sink.received if address in m.rcpt_tos]:
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.1)
        finally:
            worker.terminate()
            assert worker.wait(15) == 0, (tmp_path / "worker.log").read_text()
    [message] = [m.message for m in sink.received if address in m.rcpt_tos]
    html, text = part(message, "html"), part(message, "plain")
    section = similar_section(html, "en")
    links = similar_links(section)
    assert 1 <= len(links) <= 4
    cart_group = catalog["P1004"].item_group_id
    for url, title in links.items():
        assert url.startswith(f"{server.url}/v1/mail/click?t=")
        [product] = [x for x in catalog.values() if x.title == title]
        assert product.id != "P1004" and product.item_group_id != cart_group
        assert product.availability != "out of stock"
        assert f"- {title} (" in text[text.index(HEADINGS["en"]) :]
        assert f'src="{SHOP}{product.image_link}"' in section
