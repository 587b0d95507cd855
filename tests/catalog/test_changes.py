"""What a feed import counts as a change for the catalog emails, the feed's stock count, and the
bounded index of who viewed what."""

from __future__ import annotations

import asyncio
import io
import secrets
import time

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from widget_server.catalog.changes import ChangeRules, ImportChanges, detect
from widget_server.catalog.feeds import FieldError, Product, RowError, parse_feed, parse_quantity
from widget_server.catalog.interest import InterestIndex
from widget_server.catalog.store import CatalogStore, content_hash
from widget_server.store.client import open_store
from widget_server.store.keys import Keys
from widget_server.store.local_cluster import LocalCluster
from widget_server.visitors.session_view import SessionView
from widget_server.wire import protocol as p

RULES = ChangeRules()


def item(**fields: object) -> Product:
    return msgspec.structs.replace(Product(id="MUG", title="Mug", price=40.0), **fields)


def kinds(before: Product | None, after: Product, rules: ChangeRules = RULES) -> list[str]:
    return [change.kind for change in detect(before, after, rules)]


def test_a_lower_effective_price_by_the_threshold_is_a_price_drop() -> None:
    assert kinds(item(), item(price=38.0)) == ["price_drop"]  # exactly 5 %
    assert kinds(item(), item(price=38.5)) == []  # less
    assert kinds(item(), item(sale_price=30.0)) == ["price_drop"]  # a sale counts
    assert kinds(item(sale_price=30.0), item()) == []  # the sale ended: dearer
    assert kinds(item(), item(price=38.5), ChangeRules(min_drop_percent=1)) == ["price_drop"]
    assert kinds(item(currency="EUR"), item(price=1.0, currency="USD")) == []
    assert kinds(item(), item(price=10.0, availability="out_of_stock")) == []
    [change] = detect(item(), item(price=30.0), RULES)
    assert change.mark == "30.00" and change.weight == pytest.approx(0.25)


def test_stock_changes() -> None:
    sold_out = item(availability="out_of_stock")
    assert kinds(sold_out, item()) == ["back_in_stock"]
    assert kinds(sold_out, item(availability="backorder")) == ["back_in_stock"]
    assert kinds(sold_out, item(quantity=2)) == ["back_in_stock"]  # not also low stock
    assert kinds(item(), sold_out) == []
    assert kinds(item(quantity=20), item(quantity=5)) == ["low_stock"]
    assert kinds(item(), item(quantity=5)) == ["low_stock"]  # unknown before
    assert kinds(item(quantity=4), item(quantity=3)) == []  # low already
    assert kinds(item(quantity=20), item(quantity=6)) == []
    assert kinds(item(quantity=20), item(quantity=0)) == []  # none left is not "a few"
    assert kinds(item(quantity=20), item(quantity=9), ChangeRules(low_stock_quantity=10)) == [
        "low_stock"
    ]
    assert kinds(item(quantity=20), item(quantity=3, price=30.0)) == ["low_stock", "price_drop"]


def test_new_products_count_only_after_a_first_feed_and_when_available() -> None:
    assert kinds(None, item(product_type="Home > Kitchen")) == ["category_interest"]
    [change] = detect(None, item(product_type="Home > Kitchen"), RULES)
    assert change.category == "home > kitchen"
    assert kinds(None, item(), ChangeRules(new_products=False)) == []
    assert kinds(None, item(availability="out_of_stock")) == []


def test_an_import_counts_every_change_and_keeps_a_bounded_list() -> None:
    changes = ImportChanges()
    changes.observe([(item(), item(price=10.0)), (None, item()), (item(), item())])
    assert changes.counts == {
        "price_drop": 1, "back_in_stock": 0, "low_stock": 0, "category_interest": 1,
    }  # fmt: skip
    assert changes.any() and [c.product_id for c in changes.kept["price_drop"]] == ["MUG"]


@given(st.integers(min_value=0, max_value=1_000_000_000), st.sampled_from(["", ".0", ".00"]))
def test_quantities_parse_as_whole_units(units: int, tail: str) -> None:
    assert parse_quantity(f" {units}{tail} ") == units


@given(st.text(max_size=20))
def test_a_quantity_is_a_whole_number_or_empty(text: str) -> None:
    try:
        parsed = parse_quantity(text)
    except FieldError as exc:
        assert exc.field == "quantity"
        return
    if parsed is None:
        assert not text.strip()
    else:
        whole, _, fraction = text.strip().partition(".")
        assert whole.isascii() and whole.isdigit() and set(fraction) <= {"0"}
        assert int(whole) == parsed <= 1_000_000_000


def test_feeds_give_the_quantity_or_the_sell_on_google_quantity() -> None:
    feed = (
        b"id\ttitle\tprice\tquantity\tsell_on_google_quantity\n"
        b"A\tMug\t4 EUR\t12\t\nB\tCup\t3 EUR\t\t7\nC\tBowl\t5 EUR\t\t\nD\tPlate\t6 EUR\tmany\t\n"
    )
    items = list(parse_feed(io.BytesIO(feed)))
    assert [i.quantity for i in items[:3] if isinstance(i, Product)] == [12, 7, None]
    assert isinstance(items[3], RowError) and items[3].field == "quantity"
    rss = (
        b'<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>X</g:id>'
        b"<g:title>Lamp</g:title><g:price>9 EUR</g:price><g:quantity>3</g:quantity>"
        b"</item></channel></rss>"
    )
    [lamp] = list(parse_feed(io.BytesIO(rss)))
    assert isinstance(lamp, Product) and lamp.quantity == 3


def test_a_product_without_a_quantity_hashes_as_before_quantities() -> None:
    # The hash of this product before products had a quantity: importing the same feed after
    # the upgrade rewrites nothing.
    old = Product(id="a", title="t", price=3.0, sale_price=2.0, updated=5)
    assert content_hash(old) == "0183a059a994112e445a9c6772624999"
    assert content_hash(msgspec.structs.replace(old, quantity=3)) != content_hash(old)


def test_an_upsert_reports_each_changed_product_with_the_one_it_replaces(redis_url: str) -> None:
    async def main() -> None:
        client = open_store(redis_url)
        try:
            store = CatalogStore(client, Keys(prefix="c" + secrets.token_hex(4)))
            await store.upsert("s", [item(), Product(id="CUP", title="Cup", price=3.0)])
            seen: list[tuple[Product | None, Product]] = []
            new = Product(id="BOWL", title="Bowl", price=5.0)
            await store.upsert(
                "s", [item(price=30.0), Product(id="CUP", title="Cup", price=3.0), new],
                on_change=seen.extend,
            )  # fmt: skip
            assert [(b.price if b else None, a.id, a.price) for b, a in seen] == [
                (40.0, "MUG", 30.0),
                (None, "BOWL", 5.0),
            ]
        finally:
            await client.aclose()

    asyncio.run(main())


def test_the_interest_index_keeps_the_latest_visitors_and_forgets_them(redis_url: str) -> None:
    async def main() -> None:
        client = open_store(redis_url)
        keys = Keys(prefix="c" + secrets.token_hex(4))
        clock = [1_000_000.0]
        index = InterestIndex(client, keys, per_product=3, per_visitor=2, clock=lambda: clock[0])
        view = SessionView(session={}, profile={})
        try:
            for n in range(5):
                visitor = f"v{n}"
                await client.hset(keys.profile("s", visitor), "kept", "1")
                clock[0] += 1
                message = p.ProductView(id=f"m{n}", product=p.Product(id="MUG"))
                index.observe("s", visitor, message, view)
                await index.flush()
            latest = await index.interested("s", "MUG", now=clock[0], limit=10)
            assert latest == ["v4", "v3", "v2"]  # the latest three, newest first
            # The window: 30 days after the last view nobody is interested any more.
            later = clock[0] + 31 * 86400
            assert await index.interested("s", "MUG", now=later, limit=10) == []
            # A visitor's own list holds two entries; older ones leave the sets they were in.
            for pid in ("CUP", "BOWL"):
                clock[0] += 1
                message = p.ProductView(id=pid, product=p.Product(id=pid, category="Kitchen"))
                index.observe("s", "v4", message, view)
                await index.flush()
            assert "v4" not in await index.interested("s", "MUG", now=clock[0], limit=10)
            assert await client.zcard(keys.interest_of("s", "v4")) == 2
            assert await index.forget("s", "v4") == 2
            assert await index.interested("s", "BOWL", now=clock[0], limit=10) == []
            # A duplicate (replayed) message notes nothing.
            dup = SessionView(session={}, profile={}, duplicate=True)
            index.observe("s", "v3", p.ProductView(id="x", product=p.Product(id="PAN")), dup)
            await index.flush()
            assert await index.interested("s", "PAN", now=clock[0], limit=10) == []
        finally:
            await client.aclose()

    asyncio.run(main())


def test_interest_notes_are_written_in_the_background(redis_url: str) -> None:
    async def main() -> None:
        client = open_store(redis_url)
        keys = Keys(prefix="c" + secrets.token_hex(4))
        index = InterestIndex(client, keys)
        try:
            await client.hset(keys.profile("s", "v"), "kept", "1")
            message = p.ProductView(id="m", product=p.Product(id="MUG"))
            index.observe("s", "v", message, SessionView(session={}, profile={}))
            deadline = time.monotonic() + 10
            while not await index.interested("s", "MUG", now=time.time(), limit=1):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_the_interest_index_works_on_a_cluster(valkey_cluster: LocalCluster) -> None:
    """Each set on a slot of its own: recording, reading and erasing never need one script
    across slots."""

    async def main() -> None:
        client = open_store(valkey_cluster.seed_url, "cluster")
        keys = Keys(prefix="c" + secrets.token_hex(4))
        index = InterestIndex(client, keys)
        view = SessionView(session={}, profile={})
        try:
            for visitor in ("ann", "bob", "cid"):
                await client.hset(keys.profile("s", visitor), "kept", "1")
                for pid in ("MUG", "CUP", "LAMP"):
                    product = p.Product(id=pid, category="Kitchen")
                    index.observe("s", visitor, p.ProductView(id=pid, product=product), view)
            await index.flush()
            now = time.time()
            assert sorted(await index.interested("s", "CUP", now=now, limit=10)) == [
                "ann", "bob", "cid",
            ]  # fmt: skip
            assert await index.forget("s", "bob") == 4  # three products, one category
            assert sorted(await index.interested("s", "CUP", now=now, limit=10)) == ["ann", "cid"]
            kitchen = await index.interested_in_category("s", "kitchen", now=now, limit=10)
            assert sorted(kitchen) == ["ann", "cid"]
        finally:
            await client.aclose()

    asyncio.run(main())
