"""The demo shop: generated catalog, Merchant Center feed, pages, placeholder images."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from widget_server.demo.catalog import (
    FEED_COLUMNS,
    DemoProduct,
    categories,
    generate_catalog,
    write_feed_tsv,
)
from widget_server.demo.routes import demo_routes, placeholder_svg
from widget_server.offers.campaigns import parse_campaign
from widget_server.shipped import EXAMPLES_DIR

WIDGET_TAG = '<script async src="/widget.js" data-site="demo"></script>'
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def catalog() -> list[DemoProduct]:
    return generate_catalog()


@pytest.fixture(scope="module")
def client(catalog: list[DemoProduct]) -> TestClient:
    return TestClient(Starlette(routes=demo_routes("demo", catalog)))


def page_urls(catalog: list[DemoProduct]) -> dict[str, str]:
    product = next(p for p in catalog if p.availability == "in stock")
    return {
        "home": "/demo/",
        "category": f"/demo/c/{product.category_slug}",
        "product": product.link,
        "cart": "/demo/cart",
        "checkout": "/demo/checkout",
        "payment": "/demo/checkout?step=payment",
        "thank_you": "/demo/thank-you?order=T123-ABC",
    }


class _MarkupAudit(HTMLParser):
    """Collects scripts, event-handler attributes and the body's page type."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handler_attributes: list[str] = []
        self.page_type: str | None = None
        self.selects = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.handler_attributes += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(attributes)
        elif tag == "body":
            self.page_type = attributes.get("data-page-type")
        elif tag == "select":
            self.selects += 1


def audit(html: str) -> _MarkupAudit:
    parser = _MarkupAudit()
    parser.feed(html)
    parser.close()
    return parser


# ---------- catalog ----------


def test_catalog_is_deterministic_and_large_enough(catalog: list[DemoProduct]) -> None:
    assert generate_catalog() == catalog
    assert generate_catalog(seed=8) != catalog
    assert len(catalog) >= 200
    assert len({product.id for product in catalog}) == len(catalog)
    assert all(re.fullmatch(r"P\d{4,}", product.id) for product in catalog)


def test_catalog_size_is_honoured() -> None:
    assert len(generate_catalog(size=5)) == 5
    assert generate_catalog(size=0) == []
    with pytest.raises(ValueError):
        generate_catalog(size=-1)


def test_prices_and_availability_are_valid(catalog: list[DemoProduct]) -> None:
    for product in catalog:
        assert product.price > 0
        assert product.currency == "EUR"
        assert product.availability in {"in stock", "out of stock", "preorder"}
        if product.sale_price is not None:
            assert 0 < product.sale_price < product.price
    assert any(product.sale_price is not None for product in catalog)
    assert any(product.availability == "out of stock" for product in catalog)


def test_links_follow_the_url_scheme(catalog: list[DemoProduct]) -> None:
    for product in catalog:
        assert product.link == f"/demo/p/{product.id}"
        assert product.image_link == f"/demo/img/{product.id}.svg"


def test_item_groups_hold_variants_of_one_category(catalog: list[DemoProduct]) -> None:
    group_sizes = Counter(product.item_group_id for product in catalog)
    assert max(group_sizes.values()) <= 3
    assert sum(1 for size in group_sizes.values() if size > 1) >= 20
    for group_id in group_sizes:
        members = [product for product in catalog if product.item_group_id == group_id]
        assert len({product.category_slug for product in members}) == 1
        assert len({product.brand for product in members}) == 1


def test_categories_cover_the_catalog(catalog: list[DemoProduct]) -> None:
    listed = categories(catalog)
    assert len(listed) >= 8
    assert {slug for slug, _ in listed} == {product.category_slug for product in catalog}
    assert all(re.fullmatch(r"[a-z-]+", slug) and name for slug, name in listed)


# ---------- feed ----------


def test_feed_round_trips_through_csv(catalog: list[DemoProduct], tmp_path: Path) -> None:
    feed_path = tmp_path / "feed.tsv"
    write_feed_tsv(catalog, feed_path, base_url="https://shop.example/")
    with feed_path.open(encoding="utf-8", newline="") as feed:
        reader = csv.DictReader(feed, delimiter="\t")
        rows = list(reader)
        assert tuple(reader.fieldnames or ()) == FEED_COLUMNS
    assert len(rows) == len(catalog)
    for row, product in zip(rows, catalog, strict=True):
        assert row["id"] == product.id
        assert row["title"] == product.title
        assert row["description"] == product.description
        assert row["link"] == f"https://shop.example/demo/p/{product.id}"
        assert row["image_link"] == f"https://shop.example/demo/img/{product.id}.svg"
        assert row["price"] == f"{product.price:.2f} EUR"
        assert row["item_group_id"] == product.item_group_id
        expected_sale = "" if product.sale_price is None else f"{product.sale_price:.2f} EUR"
        assert row["sale_price"] == expected_sale


def test_feed_header_is_the_merchant_center_header(tmp_path: Path) -> None:
    feed_path = tmp_path / "feed.tsv"
    write_feed_tsv(generate_catalog(size=3), feed_path, base_url="http://localhost:8000")
    header = feed_path.read_text(encoding="utf-8").splitlines()[0]
    assert header.split("\t") == [
        "id",
        "title",
        "description",
        "link",
        "image_link",
        "price",
        "sale_price",
        "availability",
        "brand",
        "product_type",
        "google_product_category",
        "item_group_id",
    ]


# ---------- pages ----------


@pytest.mark.parametrize(
    "page_type", ["home", "category", "product", "cart", "checkout", "payment", "thank_you"]
)
def test_every_page_type_renders_with_the_widget_tag(
    client: TestClient, catalog: list[DemoProduct], page_type: str
) -> None:
    response = client.get(page_urls(catalog)[page_type])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert WIDGET_TAG in response.text
    assert audit(response.text).page_type == page_type
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "page_type", ["home", "category", "product", "cart", "checkout", "payment", "thank_you"]
)
def test_pages_have_no_inline_scripts_or_handlers(
    client: TestClient, catalog: list[DemoProduct], page_type: str
) -> None:
    html = client.get(page_urls(catalog)[page_type]).text
    markup = audit(html)
    assert markup.handler_attributes == []
    for script in markup.scripts:
        assert script.get("src") or script.get("type") == "application/json", script
    assert "javascript:" not in html.lower()
    assert {"src": "/demo/static/shop.js", "defer": None} in markup.scripts


def test_product_page_has_a_picker_and_product_data(
    client: TestClient, catalog: list[DemoProduct]
) -> None:
    product = next(p for p in catalog if p.category_slug == "running-shoes")
    html = client.get(product.link).text
    assert audit(html).selects >= 2
    assert '<script type="application/json" id="product-data">' in html
    assert f'"item_id": "{product.id}"' in html


def test_category_page_lists_its_products(client: TestClient, catalog: list[DemoProduct]) -> None:
    slug, name = categories(catalog)[0]
    html = client.get(f"/demo/c/{slug}").text
    members = [product for product in catalog if product.category_slug == slug]
    assert all(product.link in html for product in members)
    assert '<script type="application/json" id="list-data">' in html
    assert name in html


def test_demo_without_slash_redirects_home(client: TestClient) -> None:
    response = client.get("/demo", follow_redirects=False)
    assert response.is_redirect
    assert response.headers["location"] == "/demo/"


def test_static_assets_are_served(client: TestClient) -> None:
    script = client.get("/demo/static/shop.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "dataLayer" in script.text
    stylesheet = client.get("/demo/static/shop.css")
    assert stylesheet.status_code == 200
    assert stylesheet.headers["content-type"].startswith("text/css")


# ---------- not found and hostile input ----------


@pytest.mark.parametrize(
    "url",
    [
        "/demo/p/P0000",
        "/demo/c/no-such-category",
        "/demo/img/P0000.svg",
        "/demo/nowhere",
        "/demo/p/" + "9" * 5000,
        "/demo/p/..%2F..%2Fsettings.py",
        "/demo/img/..%2F..%2Froutes.py.svg",
        "/demo/p/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        f"/demo/c/{HOSTILE}",
    ],
)
def test_unknown_or_hostile_paths_get_an_html_404(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text
    assert HOSTILE not in response.text
    assert "alert(1)" not in response.text


@pytest.mark.parametrize("url", [f"/demo/p/{HOSTILE}", "/demo/p/../../etc/passwd"])
def test_hostile_paths_are_never_reflected(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert "alert(1)" not in response.text
    assert "passwd" not in response.text


def test_order_number_is_shown_only_when_well_formed(client: TestClient) -> None:
    assert "T123-ABC" in client.get("/demo/thank-you?order=T123-ABC").text
    hostile = client.get("/demo/thank-you", params={"order": HOSTILE})
    assert hostile.status_code == 200
    assert "alert(1)" not in hostile.text


def test_site_key_is_escaped_in_the_widget_tag(catalog: list[DemoProduct]) -> None:
    hostile_client = TestClient(Starlette(routes=demo_routes('"><script>x()</script>', catalog)))
    html = hostile_client.get("/demo/").text
    assert "<script>x()" not in html
    assert 'data-site="&#34;&gt;&lt;script&gt;x()&lt;/script&gt;"' in html


# ---------- images ----------


def test_product_image_is_well_formed_svg(client: TestClient, catalog: list[DemoProduct]) -> None:
    response = client.get(catalog[0].image_link)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    root = ElementTree.fromstring(response.text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title is not None
    assert title.text == catalog[0].title


def test_svg_escapes_hostile_text(catalog: list[DemoProduct]) -> None:
    hostile = dataclasses.replace(
        catalog[0],
        title=f"{HOSTILE} \"quoted\" & 'single' \x00\x1b]]>",
        brand="<!-- &amp; -->",
    )
    svg = placeholder_svg(hostile)
    root = ElementTree.fromstring(svg)
    assert "<script>" not in svg
    texts = [element.text for element in root.iter() if element.text]
    assert f"{HOSTILE} \"quoted\" & 'single' ]]>" in texts
    assert "<!-- &amp; -->" in texts
    assert all(value is not None for value in root.attrib.values())


DEMO_TEMPLATES = Path(__file__).resolve().parent.parent / "widget_server" / "demo" / "templates"


def test_demo_campaigns_make_sense_for_the_demo_shop() -> None:
    """No demo campaign promises what the shop already gives: shipping is free from the
    threshold the shop's pages state, so a free-shipping discount may only reach smaller carts."""
    page = (DEMO_TEMPLATES / "base.html").read_text()
    found = re.search(r"free shipping from €(\d+)", page)
    assert found, "the demo shop states its free-shipping threshold"
    threshold = float(found.group(1))
    examples = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())
    for campaign in map(parse_campaign, examples):
        for variant in campaign.variants:
            if variant.discount is not None and variant.discount.type == "free_shipping":
                ceiling = campaign.trigger.max_cart_value
                assert ceiling is not None and ceiling < threshold, (campaign.id, variant.key)
            if variant.offer.kind == "free_shipping_progress":
                assert variant.offer.free_shipping_threshold == threshold, campaign.id
                ceiling = campaign.trigger.max_cart_value
                assert ceiling is not None and ceiling < threshold, campaign.id


def test_a_visitor_switches_the_shop_to_german_and_it_stays(catalog: list[DemoProduct]) -> None:
    """``?lang=de`` sets the page's language (which the widget sends) and keeps it for the
    next pages; anything else is ignored."""
    visitor = TestClient(Starlette(routes=demo_routes("demo", catalog)))
    assert '<html lang="en">' in visitor.get("/demo/").text
    german = visitor.get("/demo/?lang=de")
    assert '<html lang="de">' in german.text
    assert 'href="?lang=en"' in german.text and 'aria-current="true">Deutsch' in german.text
    assert '<html lang="de">' in visitor.get("/demo/cart").text
    for odd in (HOSTILE, "fr", "de-AT", "../en"):
        page = visitor.get("/demo/cart", params={"lang": odd})
        assert '<html lang="de">' in page.text and "alert(1)" not in page.text, odd
    assert '<html lang="en">' in visitor.get("/demo/c/x?lang=en").text  # a 404 page too
    assert '<html lang="en">' in visitor.get("/demo/cart").text


def test_every_demo_campaign_speaks_german() -> None:
    examples = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())
    for campaign in map(parse_campaign, examples):
        for variant in campaign.variants:
            offer = variant.offer
            assert offer.words("de").headline != offer.headline, (campaign.id, variant.key)
            assert offer.words("de-AT") == offer.words("de")
            assert offer.words("fr").headline == offer.headline
