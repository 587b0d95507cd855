"""Emails a feed import starts, through the real store, scheduler, worker and SMTP server:
visitors view products (real sessions, the interest index written as the server writes it), a
feed is imported again with changes, and the worker sends what the flows say."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from widget_server.catalog.changes import CHANGE_KINDS
from widget_server.catalog.feeds import Product
from widget_server.catalog.interest import InterestIndex
from widget_server.catalog.store import CatalogStore, ImportReport, import_parsed
from widget_server.experiments.reports import flow_report
from widget_server.mail.catalog_triggers import CatalogTriggers
from widget_server.mail.flows import Flow, FlowStep, MailConfig, in_holdout
from widget_server.wire import protocol as p

from ..mail_support import (
    UNLIMITED,
    Scenario,
    Shopper,
    address_for,
    eventually,
    running_worker,
    scenario,
)


def catalog_config(*, holdout: float = 0.0, delay_minutes: float = 0.0, **rules: Any) -> MailConfig:
    """The four catalog flows, each one step (subject ``<kind>: <first product>``)."""
    flows = [
        Flow(
            name=kind,
            kind=kind,
            holdout=holdout if kind == "price_drop" else 0.0,
            steps=[
                FlowStep(delay_minutes=delay_minutes, template=kind, subject=f"{kind}: {{product}}")
            ],
            **rules,
        )
        for kind in CHANGE_KINDS
    ]
    return MailConfig(flows=flows, budget=UNLIMITED)


def product(pid: str, price: float = 40.0, **fields: Any) -> Product:
    fields.setdefault("product_type", "Kitchen")
    return Product(
        id=pid, title=f"Item {pid}", price=price, currency="EUR",
        link=f"https://shop.test/p/{pid}", **fields,
    )  # fmt: skip


@dataclass
class Shop:
    s: Scenario
    catalog: CatalogStore
    interest: InterestIndex
    triggers: CatalogTriggers

    @property
    def site(self) -> str:
        return self.s.site

    async def load(self, *products: Product) -> ImportReport:
        return await import_parsed(
            self.catalog, self.site, list(products), source="test", triggers=self.triggers
        )

    async def visitor(self, name: str, *views: str, category: str = "") -> Shopper:
        """A visitor with an address and consent who viewed ``views`` over a real session."""
        who = await self.s.shopper(email_address=address_for(self.site, name), cart=[])
        await self.view(who, *views, category=category)
        return who

    async def view(self, who: Shopper, *views: str, category: str = "") -> None:
        for pid in views:
            seen = p.Product(id=pid, title=f"Item {pid}", category=category)
            view = await who.send(p.ProductView, product=seen)
            message = p.ProductView(id=f"m{who.seq}", product=seen)
            self.interest.observe(self.site, who.visitor, message, view)
        await self.interest.flush()  # what the server does within a second

    async def deliver(self, *visitors: Shopper) -> list[EmailMessage]:
        """Run the worker until none of ``visitors`` has an email pending; what was sent."""
        scheduler = self.s.ctx.scheduler

        async def done() -> bool:
            for who in visitors:
                if await scheduler.pending(self.site, who.visitor):
                    return False
            return True

        async with running_worker(self.s.ctx):
            await eventually(done)
        return self.s.sink.messages()


def shop_scenario(redis_url: str, body: Any, config: MailConfig | None = None) -> None:
    async def run(s: Scenario) -> None:
        catalog = CatalogStore(s.ctx.redis, s.ctx.keys)
        interest = InterestIndex(s.ctx.redis, s.ctx.keys, catalog)
        triggers = CatalogTriggers(
            s.ctx.redis, s.ctx.keys, s.ctx.scheduler, interest=interest, catalog=catalog
        )
        await body(Shop(s, catalog, interest, triggers))

    scenario(redis_url, run, config=config or catalog_config())


def recipients(messages: list[EmailMessage]) -> list[str]:
    return [str(m["To"]) for m in messages]


def test_a_price_drop_emails_the_visitor_who_viewed_the_product_once(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", 40.0), product("LAMP", 80.0))
        ann = await shop.visitor("ann", "MUG")
        bob = await shop.visitor("bob", "LAMP")

        report = await shop.load(product("MUG", 30.0), product("LAMP", 79.0))  # LAMP: -1.25 %

        assert report.changes["price_drop"] == 1 and report.emails == 1
        sent = await shop.deliver(ann, bob)
        assert recipients(sent) == [address_for(shop.site, "ann")]
        assert sent[0]["Subject"] == "price_drop: Item MUG"
        # The same prices again: no change, no email.
        again = await shop.load(product("MUG", 30.0), product("LAMP", 79.0))
        assert again.changes["price_drop"] == 0 and again.emails == 0
        last = await shop.catalog.last_import(shop.site)
        assert last is not None and last.changes["price_drop"] == 0

    shop_scenario(redis_url, body)


def test_the_threshold_of_a_price_drop_is_the_flows(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", 40.0))
        ann = await shop.visitor("ann", "MUG")
        report = await shop.load(product("MUG", 36.0))  # -10 %, the flow asks for 20 %
        assert report.changes["price_drop"] == 0
        report = await shop.load(product("MUG", 20.0, sale_price=None))  # -44 %
        assert report.changes["price_drop"] == 1
        assert recipients(await shop.deliver(ann)) == [address_for(shop.site, "ann")]

    shop_scenario(redis_url, body, catalog_config(min_drop_percent=20))


def test_back_in_stock_emails_the_visitor_who_viewed_it(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", availability="out_of_stock"), product("LAMP"))
        ann = await shop.visitor("ann", "MUG")
        bob = await shop.visitor("bob", "LAMP")

        report = await shop.load(product("MUG"), product("LAMP"))

        assert report.changes["back_in_stock"] == 1 and report.emails == 1
        sent = await shop.deliver(ann, bob)
        assert recipients(sent) == [address_for(shop.site, "ann")]
        assert sent[0]["Subject"] == "back_in_stock: Item MUG"

    shop_scenario(redis_url, body)


def test_low_stock_comes_from_the_feeds_quantity(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", quantity=50), product("LAMP", quantity=50))
        ann = await shop.visitor("ann", "MUG")
        bob = await shop.visitor("bob", "LAMP")

        report = await shop.load(product("MUG", quantity=2), product("LAMP", quantity=40))

        assert report.changes["low_stock"] == 1 and report.emails == 1
        sent = await shop.deliver(ann, bob)
        assert recipients(sent) == [address_for(shop.site, "ann")]
        assert sent[0]["Subject"] == "low_stock: Item MUG"
        # Still low (one fewer): not a new change.
        assert (await shop.load(product("MUG", quantity=1))).changes["low_stock"] == 0

    shop_scenario(redis_url, body)


def test_new_products_go_to_visitors_whose_favourite_categories_have_them(
    redis_url: str,
) -> None:
    async def body(shop: Shop) -> None:
        first = await shop.load(
            product("MUG", product_type="Kitchen"),
            product("CUP", product_type="Kitchen"),
            product("LAMP", product_type="Living"),
        )
        assert first.changes["category_interest"] == 0  # a first feed announces nothing
        ann = await shop.visitor("ann", "MUG", "CUP")
        bob = await shop.visitor("bob", "LAMP")

        report = await shop.load(
            product("MUG", product_type="Kitchen"),
            product("CUP", product_type="Kitchen"),
            product("LAMP", product_type="Living"),
            product("TEAPOT", product_type="Kitchen"),
        )

        assert report.changes["category_interest"] == 1 and report.emails == 1
        sent = await shop.deliver(ann, bob)
        assert recipients(sent) == [address_for(shop.site, "ann")]
        assert sent[0]["Subject"] == "category_interest: Item TEAPOT"
        assert await shop.triggers.favourite_categories(shop.site, ann.visitor) == ["kitchen"]

    shop_scenario(redis_url, body)


def test_several_changes_make_one_email_with_up_to_three_products(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        ids = ["A", "B", "C", "D"]
        await shop.load(
            *(product(i, 100.0) for i in ids), product("E", availability="out_of_stock")
        )
        ann = await shop.visitor("ann", *ids, "E")

        drops = [product(i, price) for i, price in zip(ids, [90.0, 50.0, 80.0, 70.0], strict=True)]
        report = await shop.load(*drops, product("E"))

        assert report.changes["price_drop"] == 4 and report.changes["back_in_stock"] == 1
        assert report.emails == 1
        [email] = await shop.deliver(ann)
        assert email["Subject"] == "price_drop: Item B"  # the biggest drop first
        text = email.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert [i for i in ["A", "B", "C", "D", "E"] if f"Item {i}" in text] == ["B", "C", "D"]

    shop_scenario(redis_url, body)


def test_a_visitor_in_the_holdout_gets_none_but_counts_in_the_report(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        config = await shop.s.ctx.flows.get(shop.site)
        flow = config.enabled_flow("price_drop")
        assert flow is not None
        await shop.load(product("MUG", 40.0))
        held = await shop.visitor("held")
        while not in_holdout(shop.site, held.visitor, flow):  # 90 % are: a few tries at most
            held = await shop.visitor("held")
        await shop.view(held, "MUG")  # the only visitor who viewed it
        others = [await shop.visitor(f"v{n}", "LAMP") for n in range(2)]

        report = await shop.load(product("MUG", 30.0))

        assert report.changes["price_drop"] == 1
        assert await shop.s.ctx.scheduler.pending(shop.site, held.visitor) == []
        assert await shop.deliver(held, *others) == []
        document = await flow_report(
            shop.s.ctx.redis, shop.s.ctx.keys, shop.site, flow, time.time(), days=2
        )
        rows = {row["variant"]: row for row in document["report"]["variants"]}
        assert rows["holdout"]["exposures"] == 1
        assert sum(row["exposures"] for row in rows.values()) == 1

    shop_scenario(redis_url, body, catalog_config(holdout=0.9))


def test_a_purchase_cancels_a_pending_price_drop_email(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", 40.0))
        ann = await shop.visitor("ann", "MUG")
        await shop.load(product("MUG", 30.0))
        scheduler = shop.s.ctx.scheduler
        [job] = await scheduler.pending(shop.site, ann.visitor)
        assert job["kind"] == "price_drop"

        purchase = p.Purchase(id="order", order_id="O-1", value=30.0)
        await ann.send(p.Purchase, order_id="O-1", value=30.0)
        await scheduler.after_purchase(shop.site, ann.visitor, purchase, now=time.time())

        assert await scheduler.pending(shop.site, ann.visitor) == []
        assert await shop.deliver(ann) == []

    shop_scenario(redis_url, body, catalog_config(delay_minutes=60))


def test_a_flow_that_is_off_sends_nothing(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", 40.0))
        ann = await shop.visitor("ann", "MUG")
        report = await shop.load(product("MUG", 30.0))
        assert report.changes["price_drop"] == 1 and report.emails == 0
        assert await shop.s.ctx.scheduler.pending(shop.site, ann.visitor) == []

    off = MailConfig(
        flows=[f.model_copy(update={"enabled": False}) for f in catalog_config().flows]
    )
    shop_scenario(redis_url, body, off)


def test_erasure_takes_the_visitor_out_of_the_interest_index(redis_url: str) -> None:
    async def body(shop: Shop) -> None:
        await shop.load(product("MUG", 40.0))
        ann = await shop.visitor("ann", "MUG", "CUP")
        now = time.time()
        assert await shop.interest.interested(shop.site, "MUG", now=now, limit=10) == [ann.visitor]
        assert await shop.interest.interested_in_category(
            shop.site, "Kitchen", now=now, limit=10
        ) == [ann.visitor]

        assert await shop.interest.forget(shop.site, ann.visitor) == 3  # 2 products, 1 category
        await ann.store.forget(shop.site, ann.visitor)  # the profile, as the erasure does

        assert await shop.interest.interested(shop.site, "MUG", now=now, limit=10) == []
        keys = shop.s.ctx.keys
        assert not await shop.s.ctx.redis.exists(keys.interest_of(shop.site, ann.visitor))
        # A view noted just before the erasure and written after it leaves no trace.
        late = p.ProductView(id="late", product=p.Product(id="MUG"))
        shop.interest.observe(shop.site, ann.visitor, late, ann.view)
        await shop.interest.flush()
        assert await shop.interest.interested(shop.site, "MUG", now=now, limit=10) == []
        report = await shop.load(product("MUG", 30.0))
        assert report.emails == 0

    shop_scenario(redis_url, body)
