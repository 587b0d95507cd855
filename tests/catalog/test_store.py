"""Product feeds (TSV, CSV, RSS, Atom), hostile input, and the catalog store on a real Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from widget_server.catalog.feeds import (
    FeedError,
    FeedItem,
    FeedLimits,
    FieldError,
    Product,
    RowError,
    parse_feed,
    parse_fields,
    parse_price,
)
from widget_server.catalog.store import (
    CatalogStore,
    ImportReport,
    SimilarityIndexCache,
    UpsertResult,
    import_feed,
    run_catalog_import,
)
from widget_server.demo.catalog import generate_catalog, write_feed_tsv
from widget_server.store.keys import Keys
from widget_server.wire import protocol as p

T = TypeVar("T")
HEADER = "id\ttitle\tprice\tsale_price\tavailability\tbrand\tproduct_type\titem_group_id\tlink\n"


def new_site() -> str:
    return "cat" + secrets.token_hex(5)


def run(redis_url: str, body: Callable[[CatalogStore], Awaitable[T]], **options: int) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(CatalogStore(client, Keys(), **options))
        finally:
            await client.aclose()

    return asyncio.run(main())


def parse(data: bytes, limits: FeedLimits | None = None) -> list[FeedItem]:
    return list(parse_feed(io.BytesIO(data), limits or FeedLimits()))


def products(items: list[FeedItem]) -> dict[str, Product]:
    return {item.id: item for item in items if isinstance(item, Product)}


def errors(items: list[FeedItem]) -> list[RowError]:
    return [item for item in items if isinstance(item, RowError)]


def import_file(redis_url: str, site: str, path: Path, **kw: object) -> tuple[ImportReport, str]:
    out = io.StringIO()
    report = run_catalog_import(redis_url, "ws", "auto", site, path, out=out, **kw)  # type: ignore[arg-type]
    return report, out.getvalue()


# --- prices and availability ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("59.90 EUR", (59.9, "EUR")),
        ("59,90 EUR", (59.9, "EUR")),
        ("EUR 59.90", (59.9, "EUR")),
        ("59.90", (59.9, "")),
        (" 59.90 usd ", (59.9, "USD")),
        ("€59.90", (59.9, "EUR")),
        ("1.299,00 EUR", (1299.0, "EUR")),
        ("1,299.00 EUR", (1299.0, "EUR")),
        ("1 299,00 EUR", (1299.0, "EUR")),
        ("0", (0.0, "")),
    ],
)
def test_prices(text: str, expected: tuple[float, str]) -> None:
    assert parse_price(text) == expected


@pytest.mark.parametrize(
    "text", ["", "free", "-5 EUR", "1e5", "59..90", "59.90 EURO", "nan", "inf", "EUR", "1.2.3,4,5"]
)
def test_bad_prices_are_field_errors(text: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_price(text)
    assert caught.value.field == "price"


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_price_parser_raises_only_field_errors(text: str) -> None:
    try:
        amount, currency = parse_price(text)
    except FieldError:
        return
    assert amount >= 0 and (currency == "" or len(currency) == 3)


COLUMNS = ["id", "title", "price", "sale_price", "availability", "link", "brand", "product_type"]


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(COLUMNS), st.text(max_size=60)))
def test_row_parser_never_raises(fields: dict[str, str]) -> None:
    item = parse_fields(fields, 7)
    assert isinstance(item, Product | RowError)
    if isinstance(item, RowError):
        assert item.line == 7 and item.field and item.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_feed_parser_raises_only_feed_errors(data: bytes) -> None:
    with contextlib.suppress(FeedError):
        parse(data)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("in stock", "in_stock"), ("in_stock", "in_stock"), ("Out of Stock", "out_of_stock"),
     ("preorder", "preorder"), ("backorder", "backorder"), ("", "in_stock"),
     ("https://schema.org/InStock", "in_stock")],
)  # fmt: skip
def test_availability_values(raw: str, expected: str) -> None:
    row = parse_fields({"id": "1", "title": "T", "price": "1", "availability": raw}, 2)
    assert isinstance(row, Product) and row.availability == expected


# --- formats ---------------------------------------------------------------------------------


def test_tsv_with_bom_quotes_and_errors_keeps_the_good_rows() -> None:
    feed = (
        "\ufeff" + HEADER + 'A1\t"Runner ""Pro"""\t59,90 EUR\t49.90 EUR\tin stock\tKorro\t'
        "Apparel>Shoes> Running\tG1\thttps://shop.test/a1\n"
        "\n"
        "A2\tBroken price\tcheap\t\tin stock\tKorro\t\t\t\n"
        "A3\tBad link\t10 EUR\t\tin stock\t\t\t\tjavascript:alert(1)\n"
        "A4\tBad availability\t10 EUR\t\tsoon\t\t\t\t\n"
        "A5\tTrailing columns may be missing\t10\n"
    ).encode()
    items = parse(feed)
    good = products(items)
    assert set(good) == {"A1", "A5"}
    a1 = good["A1"]
    assert (a1.title, a1.price, a1.sale_price, a1.currency) == ('Runner "Pro"', 59.9, 49.9, "EUR")
    assert a1.product_type == "Apparel > Shoes > Running" and a1.item_group_id == "G1"
    assert [(e.line, e.field, e.product_id) for e in errors(items)] == [
        (4, "price", "A2"),
        (5, "link", "A3"),
        (6, "availability", "A4"),
    ]
    assert str(errors(items)[0]) == "line 4: price: 'cheap' is not a price"


def test_csv_with_quoted_multiline_fields_and_line_numbers() -> None:
    feed = (
        b"id,title,description,price,availability\n"
        b'B1,"Jacket, waterproof","Line one\nline two",120.00 EUR,out of stock\n'
        b"B2,Cap,,-3,in stock\n"
        b"B3,Socks,,3.50 EUR,in stock,extra\n"
        b"B1,Same id again,,1,in stock\n"
    )
    items = parse(feed)
    assert products(items)["B1"].title == "Jacket, waterproof"
    assert products(items)["B1"].availability == "out_of_stock"
    assert [(e.line, e.field) for e in errors(items)] == [(4, "price"), (5, "row"), (6, "id")]
    assert errors(items)[2].reason == "repeats the id of line 2"


RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
<channel><title>Shop</title><link>https://shop.test</link>
<item>
  <g:id>R1</g:id><title>Plain title</title><g:title>Trail &amp; Road Runner</g:title>
  <link>https://shop.test/r1</link><g:image_link>https://shop.test/r1.jpg</g:image_link>
  <g:price>EUR 89.90</g:price><g:availability>in stock</g:availability>
  <g:brand>Korro</g:brand><g:product_type>Shoes &gt; Running</g:product_type>
  <g:shipping><g:country>DE</g:country><g:price>4.95 EUR</g:price></g:shipping>
</item>
<item>
  <g:id>R2</g:id><title>No price</title>
</item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
  <title>Shop</title>
  <entry>
    <g:id>T1</g:id><title>Down Jacket</title><link rel="alternate" href="https://shop.test/t1"/>
    <g:price>199,00 EUR</g:price><g:sale_price>149,00 EUR</g:sale_price>
    <g:availability>preorder</g:availability><g:item_group_id>J</g:item_group_id>
  </entry>
</feed>"""


def test_rss_feed() -> None:
    items = parse(RSS)
    r1 = products(items)["R1"]
    assert r1.title == "Trail & Road Runner"  # the g: field wins
    assert (r1.link, r1.image_link) == ("https://shop.test/r1", "https://shop.test/r1.jpg")
    assert (r1.price, r1.currency, r1.brand) == (89.9, "EUR", "Korro")  # not the shipping price
    assert r1.product_type == "Shoes > Running"
    assert [(e.line, e.field, e.product_id) for e in errors(items)] == [(11, "price", "R2")]


def test_repeated_ids_in_xml_point_at_the_first_item() -> None:
    twice = RSS.replace(b"<g:id>R2</g:id>", b"<g:id>R1</g:id>").replace(b"No price", b"Again")
    twice = twice.replace(b"<title>Again</title>", b"<title>Again</title><g:price>1</g:price>")
    assert [str(e) for e in errors(parse(twice))] == ["line 11: id: repeats the id of line 4"]


def test_atom_feed() -> None:
    [t1] = parse(ATOM)
    assert isinstance(t1, Product)
    assert (t1.id, t1.title, t1.link) == ("T1", "Down Jacket", "https://shop.test/t1")
    assert (t1.price, t1.sale_price, t1.availability, t1.item_group_id) == (
        199.0, 149.0, "preorder", "J"
    )  # fmt: skip


def test_demo_feed_round_trips_all_240_products(tmp_path: Path) -> None:
    catalog = generate_catalog()
    write_feed_tsv(catalog, tmp_path / "feed.tsv")
    with (tmp_path / "feed.tsv").open("rb") as feed:
        items = list(parse_feed(feed))
    parsed = products(items)
    assert len(catalog) == 240 and not errors(items) and len(parsed) == 240
    for demo in catalog:
        product = parsed[demo.id]
        assert product.title == demo.title and product.brand == demo.brand
        assert (product.price, product.sale_price) == (demo.price, demo.sale_price)
        assert product.availability == demo.availability.replace(" ", "_")
        assert product.product_type == demo.product_type
        assert product.item_group_id == demo.item_group_id
        assert product.link.endswith(demo.link) and product.image_link.endswith(demo.image_link)


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE rss SYSTEM "file:///etc/passwd">',
        '<!DOCTYPE rss [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
    ],
)
def test_xxe_is_refused_and_never_reads_files(doctype: str) -> None:
    feed = f"""<?xml version="1.0"?>{doctype}
<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item>
<g:id>X</g:id><title>&xxe;</title><g:price>1</g:price></item></channel></rss>""".encode()
    with pytest.raises(FeedError, match="not allowed") as caught:
        parse(feed)
    assert "root:" not in str(caught.value)


def test_billion_laughs_is_refused_fast() -> None:
    entities = "".join(
        f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' if n else '<!ENTITY l0 "lol">' for n in range(10)
    )
    feed = f'<?xml version="1.0"?><!DOCTYPE rss [{entities}]><rss><c>&l9;</c></rss>'.encode()
    started = time.monotonic()
    with pytest.raises(FeedError):
        parse(feed)
    assert time.monotonic() - started < 5  # expanded, it would take minutes and gigabytes


def test_a_10_mb_line_is_one_row_error(tmp_path: Path) -> None:
    feed = HEADER.encode() + b"OK1\tFine\t1\n" + b"HUGE\t" + b"x" * 10_000_000 + b"\n"
    feed += b"OK2\tAlso fine\t2\n"
    items = parse(feed)
    assert set(products(items)) == {"OK1", "OK2"}
    assert [(e.line, e.field) for e in errors(items)] == [(3, "row")]
    xml = RSS.replace(b"<title>No price</title>", b"<title>" + b"y" * 10_000_000 + b"</title>")
    assert [(e.line, e.field) for e in errors(parse(xml))] == [(11, "item")]


def test_binary_garbage_is_a_clear_feed_error() -> None:
    garbage = bytes(range(256)) * 40
    with pytest.raises(FeedError, match=r"not UTF-8|missing required columns"):
        parse(garbage)
    with pytest.raises(FeedError, match="not well-formed XML"):
        parse(b"<" + garbage)


def test_invalid_utf8_in_a_row_is_a_row_error() -> None:
    items = parse(HEADER.encode() + b"Z1\tBad \xff\xfe title\t1\nZ2\tNul\x00\t1\nZ3\tOk\t1\n")
    assert set(products(items)) == {"Z3"}
    assert [(e.line, e.field) for e in errors(items)] == [(2, "title"), (3, "title")]


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        (b"", "empty"),
        (b"title\tprice\nA\t1\n", "missing required columns: id"),
        (b"id;title;price\n1;A;2\n", r"columns: id, title, price \(found: id;title;price\)"),
        (b"A1\tRunner\t59.90 EUR\n", "missing required columns: id, title, price"),
        (b"id\tid\ttitle\tprice\n", "duplicate columns: id"),
        (b"<html><body>shop</body></html>", "root element is <html>"),
        (b"<rss><channel><item>", "not well-formed"),
    ],
)
def test_unusable_feeds_raise_one_clear_error(feed: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse(feed)


def test_limits_on_rows_and_size() -> None:
    rows = HEADER.encode() + b"".join(b"R%d\tT\t1\n" % n for n in range(20))
    with pytest.raises(FeedError, match="more than 10 rows"):
        parse(rows, FeedLimits(max_rows=10))
    with pytest.raises(FeedError, match="larger than 100 bytes"):
        parse(rows, FeedLimits(max_file_bytes=100))
    with pytest.raises(FeedError, match="more than 1 items"):
        parse(RSS, FeedLimits(max_rows=1))


# --- the store and the import ----------------------------------------------------------------


def test_import_is_idempotent_and_reports_changes(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    site, path = new_site(), tmp_path / "feed.tsv"
    write_feed_tsv(generate_catalog(), path)
    first, printed = import_file(redis_url, site, path)
    assert (first.rows, first.added, first.updated, first.unchanged, first.errors) == (
        240, 240, 0, 0, 0
    )  # fmt: skip
    assert first.ok and "240 rows read: 240 added" in printed
    assert r.hlen(Keys().catalog(site)) == 240
    version = r.get(Keys().catalog_version(site))
    second, _ = import_file(redis_url, site, path)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 240)
    assert r.get(Keys().catalog_version(site)) == version
    path.write_text(path.read_text().replace("140.90 EUR", "139.90 EUR", 1))
    third, _ = import_file(redis_url, site, path)
    assert (third.added, third.updated, third.unchanged) == (0, 1, 239)
    assert r.get(Keys().catalog_version(site)) != version


def test_import_prints_row_errors_and_keeps_valid_rows(redis_url: str, tmp_path: Path) -> None:
    site, path = new_site(), tmp_path / "feed.csv"
    path.write_text("id,title,price\nP1,One,10 EUR\n\nP2,Two,ten\nP1,Again,11\nP3,Three,12\n")
    report, printed = import_file(redis_url, site, path)
    assert (report.rows, report.added, report.errors) == (4, 2, 2)
    assert "line 4: price: 'ten' is not a price" in printed
    assert "line 5: id: repeats the id of line 2" in printed
    found = run(redis_url, lambda store: store.get(site, ["P1", "P2", "P3"]))
    assert set(found) == {"P1", "P3"} and found["P1"].title == "One"


def test_import_of_a_bad_file_reports_instead_of_raising(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_bytes(b"\x00\x01\x02 not a feed")
    report, printed = import_file(redis_url, new_site(), tmp_path / "bad.tsv")
    assert not report.ok and "error: " in printed and "Traceback" not in printed
    missing, printed = import_file(redis_url, new_site(), tmp_path / "nope.tsv")
    assert not missing.ok and "cannot read" in printed
    wrong_site, printed = import_file(redis_url, "a:{b}", tmp_path / "bad.tsv")
    assert not wrong_site.ok and "is not a site key" in printed


def test_prune_removes_products_missing_from_the_feed(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    site, path = new_site(), tmp_path / "feed.csv"
    path.write_text("id,title,price\nP1,One,1\nP2,Two,2\nP3,Three,3\n")
    import_file(redis_url, site, path)
    path.write_text("id,title,price\nP1,One,1\nP3,Three,broken\n")
    report, printed = import_file(redis_url, site, path, prune=True)
    assert report.removed == 1 and "1 removed" in printed
    assert run(redis_url, lambda store: store.all_ids(site)) == {"P1", "P3"}  # P3 only errored


def test_progress_on_a_terminal_and_in_a_log(redis_url: str, tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    path = tmp_path / "feed.tsv"
    write_feed_tsv(generate_catalog(), path)
    ticks = iter(range(10_000))

    async def body(store: CatalogStore, out: io.StringIO) -> ImportReport:
        return await import_feed(store, new_site(), path, out=out, clock=lambda: next(ticks) * 6.0)

    terminal, log = Terminal(), io.StringIO()
    run(redis_url, lambda store: body(store, terminal))
    run(redis_url, lambda store: body(store, log))
    assert "\r[" in terminal.getvalue() and "rows" in terminal.getvalue()
    assert "\r" not in log.getvalue() and "importing: " in log.getvalue()


def test_upsert_in_chunks_and_get(redis_url: str) -> None:
    site = new_site()
    items = [Product(id=f"N{n}", title=f"Item {n}", price=float(n)) for n in range(1, 1201)]

    async def body(store: CatalogStore) -> tuple[UpsertResult, UpsertResult, dict[str, Product]]:
        first = await store.upsert(site, items, now=100.0)
        again = await store.upsert(site, reversed(items), now=200.0)
        return first, again, await store.get(site, ["N1", "N1200", "missing"])

    first, again, found = run(redis_url, body)
    assert first == UpsertResult(1200, 0, 0) and again == UpsertResult(0, 0, 1200)
    assert set(found) == {"N1", "N1200"} and found["N1200"].updated == 100.0


def test_learning_from_product_views_fills_gaps_only(redis_url: str, tmp_path: Path) -> None:
    site, path = new_site(), tmp_path / "feed.csv"
    path.write_text("id,title,price,brand\nF1,Feed title,10 EUR,Korro\n")
    import_file(redis_url, site, path)
    view = p.Product(id="F1", title="Page title", price=1.0, brand="Other")
    new = p.Product(id="L1", title="Learned", price=5.0, category="A>B", url="javascript:x()")
    refresh = p.Product(id="L1", image="https://shop.test/l1.png")

    async def body(store: CatalogStore) -> tuple[list[bool], dict[str, Product], int]:
        stored = [
            await store.learn_from_product_view(site, view),
            await store.learn_from_product_view(site, new),
            await store.learn_from_product_view(site, new),
            await store.learn_from_product_view(site, refresh),
        ]
        return stored, await store.get(site, ["F1", "L1"]), len(await store.products(site))

    stored, found, count = run(redis_url, body)
    assert stored == [False, True, False, True]
    assert (found["F1"].title, found["F1"].brand) == ("Feed title", "Korro")
    learned = found["L1"]
    assert (learned.title, learned.price, learned.product_type) == ("Learned", 5.0, "A > B")
    assert learned.link == "" and learned.image_link == "https://shop.test/l1.png"
    assert count == 2
    path.write_text("id,title,price,brand\nF1,Feed title,10 EUR,Korro\nL1,From feed,6,K\n")
    import_file(redis_url, site, path)
    assert run(redis_url, lambda store: store.get(site, ["L1"]))["L1"].title == "From feed"


def test_learning_is_bounded(redis_url: str) -> None:
    site = new_site()

    async def body(store: CatalogStore) -> list[bool]:
        return [
            await store.learn_from_product_view(site, p.Product(id=f"L{n}", title="x"))
            for n in range(4)
        ]

    assert run(redis_url, body, max_learned=2) == [True, True, False, False]


def test_coview_and_cocart_counts_are_pairwise_and_trimmed(redis_url: str, r: redis.Redis) -> None:
    site = new_site()

    async def body(store: CatalogStore) -> tuple[dict[str, float], dict[str, float]]:
        await store.record_coview(site, ["A"])  # alone: nothing to pair
        await store.record_coview(site, ["A", "B"])
        await store.record_coview(site, ["A", "B", "C"])
        await store.record_coview(site, ["C", "B", "A", "D", "E", "F"])
        await store.record_cocart(site, ["B", "A"])
        counts = await store.co_counts(site, ["A"])
        return counts.coview, counts.cocart

    coview, cocart = run(redis_url, body, co_top=3)
    assert r.zscore(Keys().coview(site, "A"), "B") == 1.0
    assert r.zscore(Keys().coview(site, "C"), "A") == 1.0
    assert r.zcard(Keys().coview(site, "F")) == 3  # paired with five others, trimmed to 3
    assert r.ttl(Keys().coview(site, "F")) > 0
    assert coview == {"B": 1.0, "C": 1.0, "F": 1.0} and cocart == {"B": 1.0}


def test_index_cache_rebuilds_when_the_catalog_changes(redis_url: str) -> None:
    site = new_site()
    shoes = [Product(id=f"S{n}", title=f"Tempo runner {n}", price=50.0) for n in range(3)]

    async def body(store: CatalogStore) -> tuple[int, int, int, bool]:
        cache = SimilarityIndexCache(store, check_every_s=0.0)
        await store.upsert(site, shoes[:2])
        first = await cache.get(site)
        same = await cache.get(site)
        await store.upsert(site, shoes)
        second = await cache.get(site)
        return len(first), len(same), len(second), first is same

    assert run(redis_url, body) == (2, 2, 3, True)
