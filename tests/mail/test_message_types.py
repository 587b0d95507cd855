"""The behavioural emails beyond abandonment, through the real server (a visitor's messages over
the WebSocket schedule them) and the worker (``process_job`` with its SMTP transport, on a
simulated clock, since these emails are due days later): welcome series, products to go with
an order, review request, replenishment, win-back; priorities and the budget when several are
due at once; a purchase stopping everything."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from widget_server.catalog.store import CatalogStore
from widget_server.experiments.reports import flow_report
from widget_server.mail.context import MailContext
from widget_server.mail.flows import Budget, Flow, FlowStep, MailConfig, in_holdout
from widget_server.mail.jobs import MailJob
from widget_server.realtime.shop_api import signature_for
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry

from ..mail_support import SmtpSink, mail_context, work_due
from ..support import Client, ServerProcess, add_site, new_visitor
from .test_similar import lamp, with_similar

T = TypeVar("T")
DAY = 86_400.0
COFFEE = "Food > Coffee"


def step(minutes: float, subject: str, template: str) -> FlowStep:
    return FlowStep(delay_minutes=minutes, template=template, subject={"en": subject})


def flows(budget: Budget, holdout: float = 0.0) -> MailConfig:
    """Every kind this module drives, each with one email; the cart one at once."""
    return MailConfig(
        flows=[
            Flow(name="cart", kind="cart", steps=[step(0, "Your cart", "cart")], daily_cap=20),
            Flow(name="welcome", kind="welcome", holdout=holdout, daily_cap=20,
                 steps=[step(0, "Welcome to {shop}", "welcome")]),
            Flow(name="cross", kind="cross_sell", daily_cap=20,
                 steps=[step(2 * 24 * 60, "Goes with {product}", "cross_sell")]),
            Flow(name="review", kind="review", daily_cap=20,
                 steps=[step(7 * 24 * 60, "How is {product}?", "review")]),
            Flow(name="refill", kind="replenishment", daily_cap=20, categories={COFFEE.lower(): 30},
                 steps=[step(0, "Time to stock up", "replenishment")]),
            Flow(name="winback", kind="winback", daily_cap=20,
                 steps=[step(30 * 24 * 60, "We miss you", "winback")]),
        ],
        budget=budget,
    )  # fmt: skip


GENEROUS = Budget(per_day=10, per_week=20, quiet_hours=None)
CATALOG = [
    lamp("walnut", "Walnut desk lamp"),
    lamp("oak", "Oak desk lamp", price=70.0),
    lamp("marble", "Marble desk lamp"),
    lamp("beans", "Espresso beans 1 kg", product_type=COFFEE, price=19.0),
]


@dataclass
class Shop:
    """One server with a key prefix of its own, an SMTP sink, and a site with the flows above."""

    server: ServerProcess
    sink: SmtpSink
    keys: Keys
    redis_url: str

    def run(self, work: Callable[[MailContext], Awaitable[T]]) -> T:
        async def main() -> T:
            async with mail_context(self.redis_url, self.sink.url, keys=self.keys) as ctx:
                with_similar(ctx)
                return await work(ctx)

        return asyncio.run(main())

    def new_site(self, config: MailConfig) -> str:
        site = add_site(self.redis_url, keys=self.keys)

        async def save(ctx: MailContext) -> None:
            await ctx.flows.save(site, config)
            await CatalogStore(ctx.redis, ctx.keys).upsert(site, list(CATALOG))

        self.run(save)
        return site

    def pending(self, site: str, visitor: str) -> dict[str, dict[str, str]]:
        """The visitor's scheduled emails by flow name."""

        async def read(ctx: MailContext) -> dict[str, dict[str, str]]:
            return {job["flow"]: job for job in await ctx.scheduler.pending(site, visitor)}

        return self.run(read)

    def wait_pending(self, site: str, visitor: str, flows: set[str]) -> dict[str, dict[str, str]]:
        """Wait until the server has scheduled (at least) ``flows`` for the visitor."""
        deadline = time.monotonic() + 15
        while not flows <= set(jobs := self.pending(site, visitor)):
            assert time.monotonic() < deadline, f"scheduled: {sorted(jobs)}"
            time.sleep(0.05)
        return jobs

    def work_until(self, until: float, start: float = 0.0) -> list[tuple[float, MailJob, str]]:
        """The worker, on a clock that starts at ``start`` and jumps to each due email up to
        ``until``: what it did."""

        return self.run(lambda ctx: work_due(ctx, ctx.require_sending(), until=until, start=start))

    def mail_to(self, address: str) -> list[EmailMessage]:
        return [r.message for r in self.sink.received if address in r.rcpt_tos]


@pytest.fixture
def shop(redis_url: str, tmp_path: Path) -> Iterator[Shop]:
    """Its own key prefix: the worker here sees this test's emails only."""
    keys = Keys(prefix="t" + secrets.token_hex(4))
    secret = secrets.token_urlsafe(32)
    with SmtpSink() as sink:
        server = ServerProcess(
            redis_url, tmp_path / "server", WIDGET_REDIS_PREFIX=keys.prefix,
            WIDGET_SECRET_KEY=secret,
        )  # fmt: skip
        server.start()
        try:
            yield Shop(server, sink, keys, redis_url)
        finally:
            server.stop()


def identified(shop: Shop, site: str, name: str, **hello: Any) -> tuple[Client, str, str]:
    """A visitor on the site who gave their address with marketing consent."""
    visitor, address = new_visitor(), f"{name}@{site}.test"
    client = Client(shop.server.ws_url)
    client.hello(site, visitor, **hello)
    assert client.event("identify", email=address, consent=True)["type"] == "ack"
    return client, visitor, address


def html(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def test_welcome_series_starts_once_when_consent_counts(shop: Shop) -> None:
    site = shop.new_site(flows(GENEROUS))
    client, visitor, address = identified(shop, site, "new", lang="de")
    with client:
        jobs = shop.wait_pending(site, visitor, {"welcome"})
        assert jobs["welcome"]["locale"] == "de"  # the language the visitor's page spoke
        client.event("identify", email=address, consent=True)  # again: not a second series
    done = shop.work_until(time.time() + 60)
    assert [(job.flow, outcome) for _, job, outcome in done] == [("welcome", "sent")]
    [message] = shop.mail_to(address)
    assert message["Subject"].startswith("Welcome to")
    assert "Willkommen bei" in html(message)  # the template's German words
    with Client(shop.server.ws_url) as again:
        again.hello(site, visitor)
        again.event("identify", email=address, consent=True)
    shop.work_until(time.time() + 60)
    assert len(shop.mail_to(address)) == 1  # sent once, ever
    # Without consent: nothing.
    with Client(shop.server.ws_url) as other:
        other.hello(site, stranger := new_visitor())
        other.event("identify", email=f"no@{site}.test", consent=False)
    assert shop.pending(site, stranger) == {}


def test_an_order_brings_products_to_go_with_it_then_a_review_request(shop: Shop) -> None:
    site = shop.new_site(flows(GENEROUS))
    client, visitor, address = identified(shop, site, "buyer")
    with client:
        item = {"id": "walnut", "quantity": 1, "price": 80.0, "title": "Walnut desk lamp",
                "category": "Home > Lighting"}  # fmt: skip
        client.event("purchase", order_id="W-1", value=80.0, items=[item])
        jobs = shop.wait_pending(site, visitor, {"cross", "review"})
    assert "refill" not in jobs  # a lamp is not a consumable
    ordered = float(jobs["cross"]["scheduled"])
    assert float(jobs["cross"]["due"]) == pytest.approx(ordered + 2 * DAY)
    assert float(jobs["review"]["due"]) == pytest.approx(ordered + 7 * DAY)
    assert shop.work_until(ordered + DAY) == []  # nothing due the first day
    done = shop.work_until(ordered + 8 * DAY)
    assert [(job.flow, outcome) for _, job, outcome in done] == [
        ("cross", "sent"),
        ("review", "sent"),
    ]
    cross, review = shop.mail_to(address)
    suggested = html(cross)
    assert "Oak desk lamp" in suggested and "Walnut desk lamp" not in suggested
    assert "Walnut desk lamp" in html(review) and review["Subject"] == "How is Walnut desk lamp?"
    # A second order has its own emails (the once-only mark is per order).
    with Client(shop.server.ws_url) as again:
        again.hello(site, visitor)
        again.event("purchase", order_id="W-2", value=70.0,
                    items=[{**item, "id": "oak", "title": "Oak desk lamp"}])  # fmt: skip
    assert shop.wait_pending(site, visitor, {"cross", "review"})["review"]["occurrence"] == "W-2"


def test_a_consumable_brings_a_replenishment_reminder_after_its_interval(shop: Shop) -> None:
    site = shop.new_site(flows(GENEROUS))
    client, visitor, address = identified(shop, site, "coffee")
    with client:
        beans = {"id": "beans", "quantity": 2, "price": 19.0, "title": "Espresso beans 1 kg",
                 "category": COFFEE}  # fmt: skip
        client.event("purchase", order_id="C-1", value=38.0, items=[beans])
        jobs = shop.wait_pending(site, visitor, {"refill"})
    ordered = float(jobs["refill"]["scheduled"])
    assert float(jobs["refill"]["due"]) == pytest.approx(ordered + 30 * DAY)
    early = [(j.flow, o) for _, j, o in shop.work_until(ordered + 29 * DAY)]
    assert [f for f, o in early if o == "sent"] == ["cross", "review"], early
    done = shop.work_until(ordered + 31 * DAY)
    assert ("refill", "sent") in [(job.flow, outcome) for _, job, outcome in done]
    [reminder] = [m for m in shop.mail_to(address) if m["Subject"] == "Time to stock up"]
    assert "Espresso beans 1 kg" in html(reminder)


def test_a_replenishment_interval_is_learned_from_repeat_orders(shop: Shop) -> None:
    """No interval set for tea: after three repeat orders 20 days apart (any visitors), the
    next order of tea is reminded 20 days later."""
    config = flows(GENEROUS)
    site = shop.new_site(config)

    regular = new_visitor()
    with Client(shop.server.ws_url) as client:  # a visitor the shop knows (a profile)
        client.hello(site, regular)

    async def orders(ctx: MailContext) -> dict[str, dict[str, str]]:
        s, start = ctx.scheduler, time.time()
        for n in range(4):  # three intervals of 20 days
            await s.after_order(site, regular, f"T-{n}", [("tea", "Tea")], now=start + n * 20 * DAY)
        assert await s.pending(site, regular) == []  # no address: learned from, never emailed
        return {}

    shop.run(orders)
    client, visitor, _ = identified(shop, site, "tea")
    with client:
        tea = {"id": "tea", "quantity": 1, "price": 9.0, "title": "Green tea", "category": "Tea"}
        client.event("purchase", order_id="T-9", value=9.0, items=[tea])
        jobs = shop.wait_pending(site, visitor, {"refill"})
    assert float(jobs["refill"]["due"]) - float(jobs["refill"]["scheduled"]) == pytest.approx(
        20 * DAY
    )


def test_win_back_after_an_absence_and_each_visit_restarts_it(shop: Shop) -> None:
    site = shop.new_site(flows(GENEROUS))
    client, visitor, address = identified(shop, site, "gone")
    with client:
        client.event("product_view", product={"id": "oak", "title": "Oak desk lamp"})
    first = shop.wait_pending(site, visitor, {"winback"})["winback"]
    assert float(first["due"]) == pytest.approx(float(first["scheduled"]) + 30 * DAY)
    with Client(shop.server.ws_url) as back:  # a visit: the pending one is cancelled...
        back.hello(site, visitor)
        deadline = time.monotonic() + 15
        while "winback" in shop.pending(site, visitor):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    again = shop.wait_pending(site, visitor, {"winback"})["winback"]  # ...and set again after it
    assert float(again["scheduled"]) > float(first["scheduled"])
    done = shop.work_until(float(again["due"]) + 60)
    sent = [job.flow for _, job, outcome in done if outcome == "sent"]
    assert sent.count("winback") == 1
    assert "Oak desk lamp" in html(shop.mail_to(address)[-1])  # what they looked at


def test_two_flows_due_at_once_go_by_priority_within_the_budget(shop: Shop) -> None:
    """A cart left right after signing up: the cart email (priority 80) and the welcome (55)
    are due together; with one email a day, the cart one goes now and the welcome tomorrow."""
    site = shop.new_site(flows(Budget(per_day=1, per_week=5, quiet_hours=None)))
    client, visitor, address = identified(shop, site, "both")
    with client:
        client.event("cart_add", item={"id": "walnut", "title": "Walnut desk lamp", "price": 80.0})
    shop.wait_pending(site, visitor, {"cart", "welcome"})
    now = time.time()  # both are due: the worker meets them together
    done = shop.work_until(now + 2 * DAY, start=now)
    sends = [(at, job.flow) for at, job, outcome in done if outcome == "sent"]
    assert [flow for _, flow in sends] == ["cart", "welcome"]
    days = [datetime.fromtimestamp(at, UTC).date() for at, _ in sends]
    assert days[1] > days[0]  # the next day (the site's time zone is UTC), not a minute later
    held = [(job.flow, outcome) for _, job, outcome in done if outcome == "deferred"]
    assert ("welcome", "deferred") in held
    subjects = [m["Subject"] for m in shop.mail_to(address)]
    assert subjects[0] == "Your cart" and subjects[1].startswith("Welcome to")


def test_a_purchase_stops_every_pending_email_and_starts_the_order_ones(shop: Shop) -> None:
    site = shop.new_site(flows(GENEROUS))
    client, visitor, _ = identified(shop, site, "stopper")
    with client:
        client.event("cart_add", item={"id": "walnut", "title": "Walnut desk lamp", "price": 80.0})
    shop.wait_pending(site, visitor, {"cart", "welcome", "winback"})
    with Client(shop.server.ws_url) as back:
        back.hello(site, visitor)
        item = {"id": "walnut", "price": 80.0, "title": "Walnut desk lamp"}
        back.event("purchase", order_id="S-1", value=80.0, items=[item])
        deadline = time.monotonic() + 15
        while set(shop.pending(site, visitor)) != {"cross", "review"}:
            assert time.monotonic() < deadline, sorted(shop.pending(site, visitor))
            time.sleep(0.05)


def test_an_order_the_widget_and_then_the_webhook_report_keeps_its_own_emails(
    shop: Shop,
) -> None:
    """The widget reports an order, then the shop's order webhook reports it too: it counts
    once, and the emails it started stay (the webhook's report used to cancel them)."""
    site = shop.new_site(flows(GENEROUS))
    client, visitor, address = identified(shop, site, "twice")
    item = {"id": "walnut", "quantity": 1, "price": 80.0, "title": "Walnut desk lamp",
            "category": "Home > Lighting"}  # fmt: skip
    with client:
        client.event("purchase", order_id="T-1", value=80.0, items=[item])
        started = shop.wait_pending(site, visitor, {"cross", "review"})
        answer = order_webhook(
            shop, site, {"order_id": "T-1", "value": 80.0, "visitor": visitor, "items": [item]}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["new_order"] is False
        kept = shop.pending(site, visitor)
    assert {f: kept[f]["scheduled"] for f in ("cross", "review")} == {
        f: started[f]["scheduled"] for f in ("cross", "review")
    }
    done = shop.work_until(float(started["review"]["due"]) + 60)
    sent = [job.flow for _, job, outcome in done if outcome == "sent"]
    assert "cross" in sent and "review" in sent, done
    assert (
        len([m for m in shop.mail_to(address) if m["Subject"] == "How is Walnut desk lamp?"]) == 1
    )


def order_webhook(shop: Shop, site: str, order: dict[str, Any]) -> httpx.Response:
    """``POST /v1/orders`` signed with the site's secret, as the shop's backend sends it."""

    async def secret(ctx: MailContext) -> str:
        found = await SiteRegistry(ctx.redis, ctx.keys).get(site)
        assert found is not None
        return found.secret

    raw = json.dumps(order).encode()
    stamp = str(int(time.time()))
    headers = {"x-widget-timestamp": stamp, "content-type": "application/json",
               "x-widget-signature": signature_for(shop.run(secret), stamp, raw)}  # fmt: skip
    return httpx.post(f"{shop.server.url}/v1/orders?site={site}", content=raw, headers=headers)


def test_each_new_kind_has_a_holdout_report(shop: Shop) -> None:
    """Welcome series with half held out: held-out visitors get nothing, both arms are counted
    in the flow's report like a campaign's."""
    config = flows(GENEROUS, holdout=0.5)
    site = shop.new_site(config)
    welcome = config.flow("welcome")
    assert welcome is not None
    arms = {"email": 0, "holdout": 0}
    for i in range(8):
        client, visitor, _ = identified(shop, site, f"h{i}")
        with client:
            pass
        held = in_holdout(site, visitor, welcome)
        arms["holdout" if held else "email"] += 1
        if not held:
            shop.wait_pending(site, visitor, {"welcome"})

    async def report(ctx: MailContext) -> dict[str, Any]:
        return await flow_report(ctx.redis, ctx.keys, site, welcome, time.time(), days=7)

    deadline = time.monotonic() + 15
    while True:
        rows = {r["variant"]: r["exposures"] for r in shop.run(report)["report"]["variants"]}
        if rows == arms or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows == arms


def test_the_browsers_time_zone_is_kept_for_quiet_hours(shop: Shop) -> None:
    site = shop.new_site(flows(GENEROUS))

    async def zone_of(ctx: MailContext, visitor: str) -> str | None:
        value = await ctx.redis.hget(ctx.keys.profile(site, visitor), "tz")
        return value.decode() if value else None

    for sent, kept in [("Asia/Tokyo", "Asia/Tokyo"), ("../../etc/passwd", None)]:
        visitor = new_visitor()
        with Client(shop.server.ws_url) as client:
            client.hello(site, visitor, tz=sent)
        assert shop.run(lambda ctx, v=visitor: zone_of(ctx, v)) == kept  # type: ignore[misc]
