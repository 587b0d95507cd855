"""The session store against a real Valkey: state changes, idempotency, erasure, TTLs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
from redis.asyncio import Redis

from widget_server.store.keys import Keys
from widget_server.store.scripts import Scripts
from widget_server.visitors.sessions import SessionExpired, SessionStore
from widget_server.wire import protocol as p

from ..support import new_visitor

T = TypeVar("T")
SITE = "store"


def run(redis_url: str, body: Callable[[SessionStore], Awaitable[T]], **ttl: int) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            store = SessionStore(
                client,
                Scripts.of(client),
                Keys(),
                session_ttl_s=ttl.get("session", 1800),
                profile_ttl_s=ttl.get("profile", 86400),
                presence_ttl_s=90,
            )
            return await body(store)
        finally:
            await client.aclose()

    return asyncio.run(main())


def msg(cls: type[T], id: str, **fields: Any) -> T:
    return cls(id=id, **fields)


def test_new_session_then_resume(redis_url: str, r: redis.Redis) -> None:
    visitor = new_visitor()
    page = p.PageContext(
        url="https://shop.test/?utm_source=news&utm_medium=email", page_type="home"
    )

    async def body(store: SessionStore) -> tuple[Any, Any, Any]:
        first = await store.open(SITE, visitor, now=1000.0, page=page)
        again = await store.open(SITE, visitor, now=1010.0, resume=first.session_id)
        stale = await store.open(SITE, visitor, now=1020.0, resume="doesnotexist")
        return first, again, stale

    first, again, stale = run(redis_url, body)
    assert not first.resumed and again.resumed and not stale.resumed
    assert again.session_id == first.session_id != stale.session_id
    assert first.view.session["utm_source"] == "news"
    assert first.view.session["landing"].startswith("https://shop.test/")
    assert stale.view.visits == 2  # a new session is a new visit
    assert r.ttl(Keys().session(SITE, visitor, first.session_id)) > 1700


def test_cart_add_remove_update_and_purchase(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> list[Any]:
        sid = (await store.open(SITE, visitor, now=1.0)).session_id
        views = []
        for message in (
            p.CartAdd(id="1", item=p.CartItem(id="A", price=10.0, quantity=2)),
            p.CartAdd(id="2", item=p.CartItem(id="B", price=5.5)),
            p.CartAdd(id="3", item=p.CartItem(id="A", price=10.0)),
            p.CartRemove(id="4", item=p.CartItemRef(id="A", quantity=1)),
            p.CartRemove(id="5", item=p.CartItemRef(id="B")),
            p.CartUpdate(id="6", items=[p.CartItem(id="C", price=1.25, quantity=4)]),
            p.Purchase(id="7", order_id="o-1", value=5.0, coupon="SAVE10"),
        ):
            views.append(await store.apply(SITE, visitor, sid, message, now=2.0))
        return views

    views = run(redis_url, body)
    assert [v.cart_value for v in views] == [20.0, 25.5, 35.5, 25.5, 20.0, 5.0, 0.0]
    assert [v.cart_items for v in views] == [2, 3, 4, 3, 2, 4, 0]
    assert [(line.id, line.quantity) for line in views[3].cart] == [("A", 2), ("B", 1)]
    assert views[-1].purchased and views[-1].purchases == 1 and views[-1].revenue == 5.0
    assert views[-1].session["coupon"] == "SAVE10"
    assert views[-1].cart == []


def test_replayed_message_changes_nothing(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> list[Any]:
        sid = (await store.open(SITE, visitor, now=1.0)).session_id
        add = p.CartAdd(id="same", item=p.CartItem(id="A", price=10.0))
        return [await store.apply(SITE, visitor, sid, add, now=2.0) for _ in range(3)]

    views = run(redis_url, body)
    assert [v.duplicate for v in views] == [False, True, True]
    assert [v.cart_items for v in views] == [1, 1, 1]


def test_same_order_reported_twice_counts_once(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> Any:
        sid = (await store.open(SITE, visitor, now=1.0)).session_id
        for i in range(2):
            view = await store.apply(
                SITE, visitor, sid, p.Purchase(id=f"p{i}", order_id="o-9", value=40.0), now=2.0
            )
        return view

    view = run(redis_url, body)
    assert view.purchases == 1 and view.revenue == 40.0


def test_page_views_track_checkout_and_leaving_it(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> list[Any]:
        sid = (await store.open(SITE, visitor, now=1.0)).session_id
        out = []
        for i, page_type in enumerate(["product", "checkout", "product"]):
            message = p.PageView(id=f"pv{i}", url=f"https://s.test/{i}", page_type=page_type)  # type: ignore[arg-type]
            out.append(await store.apply(SITE, visitor, sid, message, now=2.0 + i))
        return out

    views = run(redis_url, body)
    assert [v.pages for v in views] == [1, 2, 3]
    assert [v.session["left_checkout"] for v in views] == ["0", "0", "1"]
    assert views[-1].session["page_started"] == "4"


def test_product_views_are_remembered_on_the_profile(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> Any:
        sid = (await store.open(SITE, visitor, now=1.0)).session_id
        for i, pid in enumerate(["A", "B", "A"]):
            view = await store.apply(
                SITE, visitor, sid, p.ProductView(id=f"v{i}", product=p.Product(id=pid)), now=2.0
            )
        return view

    view = run(redis_url, body)
    assert view.session["viewed"] == '["B","A"]'
    assert view.profile["viewed"] == '["B","A"]'
    assert view.session["products_viewed"] == "3"


def test_apply_on_a_vanished_session_raises_expired(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> None:
        await store.apply(SITE, visitor, "nosuchsession", p.Ping(id="x"), now=1.0)

    with pytest.raises(SessionExpired):
        run(redis_url, body)


def test_session_ttl_slides_and_expires(redis_url: str, r: redis.Redis) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> str:
        return (await store.open(SITE, visitor, now=time.time())).session_id

    sid = run(redis_url, body, session=1)
    assert r.exists(Keys().session(SITE, visitor, sid))
    time.sleep(2.1)
    assert not r.exists(Keys().session(SITE, visitor, sid))


def test_forget_erases_every_key_of_the_visitor(redis_url: str, r: redis.Redis) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> int:
        for _ in range(2):
            sid = (await store.open(SITE, visitor, now=1.0)).session_id
            await store.apply(SITE, visitor, sid, p.Purchase(id="b", order_id="o", value=1), now=2)
            await store.apply(
                SITE, visitor, sid, p.Identify(id="i", email="a@b.co", consent=True), now=2
            )
        return await store.forget(SITE, visitor)

    deleted = run(redis_url, body)
    assert deleted >= 5
    assert r.keys(Keys().tag(SITE, visitor).replace("{", "[{]").replace("}", "[}]") + "*") == []


def test_batch_applies_in_order_in_one_round_trip(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(store: SessionStore) -> list[Any]:
        sid = (await store.open(SITE, visitor, now=1.0)).session_id
        messages: list[p.ClientMessage] = [
            p.CartAdd(id="a", item=p.CartItem(id="A", price=2.0)),
            p.CartAdd(id="a", item=p.CartItem(id="A", price=2.0)),
            p.CheckoutStart(id="c"),
        ]
        return await store.apply_batch(SITE, visitor, sid, messages, now=2.0)

    results = run(redis_url, body)
    assert [getattr(v, "duplicate", None) for v in results] == [False, True, False]
    assert results[-1].session["checkout"] == "1"  # type: ignore[union-attr]


def test_a_visitor_who_only_looks_is_forgotten_within_a_day(redis_url: str, r: redis.Redis) -> None:
    """A hello and page views keep a short-lived profile (a returning visitor is still known the
    same day); the first thing worth remembering (here a cart line) keeps it for the retention."""
    looker, shopper = new_visitor(), new_visitor()
    retention = 30 * 86400

    async def body(store: SessionStore) -> int:
        page_view = msg(p.PageView, "pv", url="https://shop.test/")
        sessions = {}
        for who in (looker, shopper):
            sessions[who] = (await store.open(SITE, who, now=time.time())).session_id
            await store.apply(SITE, who, sessions[who], page_view, now=time.time())
        assert r.ttl(Keys().profile(SITE, shopper)) <= 86400
        cart_add = msg(p.CartAdd, "c1", item=p.CartItem(id="A", price=5.0))
        await store.apply(SITE, shopper, sessions[shopper], cart_add, now=time.time())
        again = await store.open(SITE, looker, now=time.time())  # back the same day: known
        await store.open(SITE, shopper, now=time.time())
        return again.view.visits

    assert run(redis_url, body, profile=retention) == 2
    assert 0 < r.ttl(Keys().profile(SITE, looker)) <= 86400
    assert 0 < r.ttl(Keys().sessions(SITE, looker)) <= 86400
    assert r.ttl(Keys().profile(SITE, shopper)) > 86400  # kept for the retention period
