"""The schedule that never annoys: a budget per visitor over every flow and both channels (a
day in their time zone, any 7 days), quiet hours in their time zone, and a purchase, an
unsubscribe, a STOP or a withdrawn or unconfirmed consent that stops what it should. Through
the real scheduler, worker, store and confirmation page, with the outbox transport and a local
SMS provider, on a simulated clock (the worker takes its time from the caller, the page from
the history)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from datetime import time as dtime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.applications import Starlette

from widget_server.catalog.feeds import Product
from widget_server.catalog.interest import InterestIndex
from widget_server.catalog.store import CatalogStore, import_parsed
from widget_server.mail.catalog_triggers import CatalogTriggers
from widget_server.mail.context import MailContext
from widget_server.mail.flows import (
    AFTER_ORDER,
    MAX_HOLD_S,
    Budget,
    Flow,
    FlowKind,
    FlowStep,
    MailConfig,
)
from widget_server.mail.jobs import CONFIRM_FLOW, BudgetCheck, MailJob, utc_day
from widget_server.mail.routes import mail_routes
from widget_server.mail.send import OutboxTransport
from widget_server.mail.sms_optin import confirm_code, request_code
from widget_server.mail.sms_routes import sms_routes
from widget_server.mail.tokens import CONFIRM_TTL_S
from widget_server.mail.worker import PRIORITY_WAIT_S, quiet_end, visitor_zone
from widget_server.realtime.consent import after_identify, recorded_identify
from widget_server.sms.provider import SmsSender, sms_settings_from_env
from widget_server.visitors.session_view import CartLine, SessionView
from widget_server.wire import protocol as p

from ..mail_support import (
    PUBLIC_URL,
    Shopper,
    mail_context,
    make_site,
    session_store,
    shopper,
    work_due,
)
from ..sms_support import AUTH_TOKEN, FROM_NUMBER, FakeMessagesApi, twilio_signature
from .test_similar import lamp, with_similar

CART = [CartLine("sku-1", 1, 10.0, "Mug", "", "")]
HOUR, DAY = 3600.0, 86_400.0
# Simulated time starts at a UTC midnight after the real now (the profile's own times are real).
T0 = (time.time() // DAY + 2) * DAY


@pytest.fixture
def api() -> Iterator[FakeMessagesApi]:
    """The SMS provider (the Twilio Messages API, local)."""
    with FakeMessagesApi() as fake:
        yield fake


def flows(budget: Budget) -> MailConfig:
    """A cart flow of four emails (at once, 30 min, 6 h, 26 h) and a checkout flow of two."""
    cart = [FlowStep(delay_minutes=m, template="cart", subject="Cart") for m in (0, 30, 360, 1560)]
    checkout = [FlowStep(delay_minutes=m, template="cart", subject="Checkout") for m in (0, 120)]
    return MailConfig(
        flows=[
            Flow(name="cart", kind="cart", steps=cart, daily_cap=20),
            Flow(name="checkout", kind="checkout", steps=checkout, daily_cap=20),
        ],
        budget=budget,
    )


@dataclass
class Shop:
    """One site with a cart and a checkout flow, one identified, consenting visitor, and what
    the worker did."""

    ctx: MailContext
    transport: OutboxTransport
    site: str
    visitor: str
    email: str
    now: float = T0
    sent: list[tuple[float, MailJob]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    async def leave(self, *, checkout: bool = False) -> None:
        await self.ctx.scheduler.visitor_left(
            self.site, self.visitor, now=self.now, cart=CART, email=self.email, consent=True,
            checkout=checkout,
        )  # fmt: skip

    async def run_until(self, until: float) -> None:
        """Let the worker send everything due up to ``until``, in time order."""
        for moment, job, outcome in await work_due(self.ctx, self.transport, until=until,
                                                   start=self.now):  # fmt: skip
            self.now = moment
            self.outcomes.append(outcome)
            if outcome == "sent":
                self.sent.append((moment, job))
        self.now = max(self.now, until)

    async def stats(self, flow: str = "cart") -> dict[str, int]:
        raw = await self.ctx.redis.hgetall(self.ctx.keys.mail_stats(self.site, flow))
        return {k.decode(): int(v) for k, v in raw.items()}


async def open_shop(ctx: MailContext, outbox: Path, budget: Budget, timezone: str = "UTC") -> Shop:
    site = await make_site(ctx, timezone=timezone)
    await ctx.flows.save(site, flows(budget))
    who = await shopper(ctx, site, email_address=f"ann@{site}.test", cart=[])
    return Shop(ctx, OutboxTransport(outbox), site, who.visitor, f"ann@{site}.test")


def local(moment: float, timezone: str) -> datetime:
    return datetime.fromtimestamp(moment, ZoneInfo(timezone))


# --- the model --------------------------------------------------------------------------------


def test_budget_settings_are_checked() -> None:
    assert Budget() == Budget(per_day=1, per_week=3, quiet_hours=(21, 8))
    for bad, words in [
        ({"per_day": 4, "per_week": 3}, "weekly budget must be at least the daily one"),
        ({"quiet_hours": (9, 9)}, "different hours"),
        ({"quiet_hours": (9, 24)}, "less than or equal to 23"),
        ({"per_day": 0}, "greater than or equal to 1"),
    ]:
        with pytest.raises(ValidationError, match=words):
            Budget.model_validate(bad)
    # Old configurations, saved before the budget existed, get the default one.
    assert MailConfig.model_validate({"flows": []}).budget == Budget()


@given(st.integers(0, 23), st.integers(0, 23), st.integers(0, 23))
def test_quiet_hours_run_from_their_start_to_their_end_across_midnight(
    start: int, end: int, hour: int
) -> None:
    if start == end:
        return
    quiet = {(start + i) % 24 for i in range((end - start) % 24)}
    assert Budget(quiet_hours=(start, end)).quiet(hour) == (hour in quiet)
    assert not Budget(quiet_hours=None).quiet(hour)


@given(st.floats(T0, T0 + 400 * DAY), st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]))
def test_a_budget_day_is_the_visitors_day_and_quiet_hours_end_at_their_end(
    moment: float, timezone: str
) -> None:
    zone = ZoneInfo(timezone)
    check = BudgetCheck.of(Budget(), moment, zone)
    start, following = local(check.day_start, timezone), local(check.next_day, timezone)
    assert check.day_start <= moment < check.next_day
    assert (start.hour, start.minute, following.hour, following.minute) == (0, 0, 0, 0)
    assert 22 * HOUR <= check.next_day - check.day_start <= 26 * HOUR  # DST days included
    end = quiet_end(Budget(quiet_hours=(21, 8)), moment, zone)
    assert moment < end <= moment + DAY + HOUR and local(end, timezone).hour == 8


def test_the_visitors_own_time_zone_comes_before_the_sites() -> None:
    from widget_server.store.sites import new_site

    site = new_site("s", origins=["https://shop.test"], timezone="Europe/Berlin")
    assert visitor_zone({"tz": "America/New_York"}, site) == ZoneInfo("America/New_York")
    for unknown in ({"tz": "Mars/Olympus"}, {"tz": "../../etc/passwd"}, {}):
        assert visitor_zone(unknown, site) == ZoneInfo("Europe/Berlin")


# --- through the worker -----------------------------------------------------------------------


def test_quiet_hours_hold_an_email_until_they_end_in_the_visitors_time_zone(
    redis_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            budget = Budget(per_day=5, per_week=10, quiet_hours=(21, 8))
            shop = await open_shop(ctx, tmp_path, budget, "Europe/Berlin")
            evening = datetime(2031, 3, 4, 22, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
            shop.now = evening
            await shop.leave()
            await shop.run_until(evening)
            assert shop.sent == [] and shop.outcomes == ["deferred"]
            assert (await shop.stats())["held:quiet_hours"] == 1
            await shop.run_until(evening + 2 * DAY)
            first = local(shop.sent[0][0], "Europe/Berlin")
            assert (first.day, first.hour, first.minute) == (5, 8, 0)
            assert all(not budget.quiet(local(t, "Europe/Berlin").hour) for t, _ in shop.sent)

    asyncio.run(main())


def test_the_budget_keeps_a_flow_to_one_email_a_day_and_drops_what_waits_too_long(
    redis_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            shop = await open_shop(ctx, tmp_path, Budget(per_day=1, per_week=2, quiet_hours=None))
            shop.now = T0 + 10 * HOUR
            await shop.leave()
            await shop.run_until(T0 + 20 * DAY)
            # Email 1 at once; email 2 (due 30 min later) waits for the next day; the week's
            # budget is then spent, and emails 3 and 4 would wait more than three days: dropped.
            assert [(t - T0, job.step) for t, job in shop.sent] == [(10 * HOUR, 0), (DAY, 1)]
            stats = await shop.stats()
            assert stats["sent:0"] == stats["sent:1"] == 1 and stats["skipped:budget"] == 2
            assert stats["held:budget"] >= 1
            assert await ctx.scheduler.pending(shop.site, shop.visitor) == []

    asyncio.run(main())


def test_an_email_that_certainly_did_not_go_out_gives_its_budget_back(
    redis_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            shop = await open_shop(ctx, tmp_path, Budget(per_day=1, per_week=3, quiet_hours=None))
            await shop.leave()
            check = BudgetCheck.of(Budget(per_day=1), T0, ZoneInfo("UTC"))
            [job] = await ctx.scheduler.claim(T0, limit=1)
            assert await ctx.scheduler.commit(job, now=T0, daily_cap=9, budget=check) == "ok"
            assert await ctx.scheduler.fail(job, retry_at=T0 + 1, error="451", uncommit=True)
            [again] = await ctx.scheduler.claim(T0 + 1, limit=1)
            assert await ctx.scheduler.commit(again, now=T0 + 1, daily_cap=9, budget=check) == "ok"
            # The day's budget is now spent for every flow of the site.
            [other] = [j for j in await ctx.scheduler.claim(T0 + 1800, limit=5) if j.step == 1]
            late = BudgetCheck.of(Budget(per_day=1), T0 + 1800, ZoneInfo("UTC"))
            assert await ctx.scheduler.commit(other, now=T0 + 1800, daily_cap=9, budget=late) == (
                "budget"
            )
            assert await ctx.scheduler.budget_frees(shop.site, shop.visitor, late) == T0 + DAY

    asyncio.run(main())


def test_the_weeks_budget_frees_to_the_fraction_of_a_second_budget_frees_names(
    redis_url: str, tmp_path: Path
) -> None:
    """A message held by the week's budget goes at the moment ``budget_frees`` names, with times
    that have more digits than a Lua number joined to a string keeps (14): the commit's count of
    the week once took the message that had just left it for one still in it, and the held one
    came back at that same moment again and again."""

    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            budget = Budget(per_day=1, per_week=1, quiet_hours=None)
            shop = await open_shop(ctx, tmp_path, budget)
            first = shop.now = T0 + 10 * HOUR + 0.00004
            await shop.leave()
            zone = ZoneInfo("UTC")
            [job] = await ctx.scheduler.claim(first, limit=1)
            check = BudgetCheck.of(budget, first, zone)
            assert await ctx.scheduler.commit(job, now=first, daily_cap=9, budget=check) == "ok"
            assert await ctx.scheduler.complete(job)
            later = first + 1800
            [held] = await ctx.scheduler.claim(later, limit=1)  # the second email, 30 min later
            check = BudgetCheck.of(budget, later, zone)
            assert await ctx.scheduler.commit(held, now=later, daily_cap=9, budget=check) == (
                "budget"
            )
            frees = await ctx.scheduler.budget_frees(shop.site, shop.visitor, check)
            assert frees == first + 7 * DAY
            assert await ctx.scheduler.defer(held, until=frees)
            [again] = [j for j in await ctx.scheduler.claim(frees, limit=5) if j.id == held.id]
            check = BudgetCheck.of(budget, frees, zone)
            assert await ctx.scheduler.commit(again, now=frees, daily_cap=9, budget=check) == "ok"

    asyncio.run(main())


def test_a_replenishment_reminder_is_held_from_when_it_is_due_not_from_the_order(
    redis_url: str, tmp_path: Path
) -> None:
    """A reminder due 28 days after the order, at night: the quiet hours hold it until the
    morning, as any message (the hold was counted from the order, four weeks before, so the
    reminder was dropped at once)."""

    async def main() -> None:
        async with mail_context(redis_url) as ctx:
            site = await make_site(ctx, timezone="Europe/Berlin")
            step = FlowStep(delay_minutes=0, template="replenishment", subject="Stock up")
            refill = Flow(name="refill", kind="replenishment", categories={"coffee": 28},
                          steps=[step])  # fmt: skip
            budget = Budget(per_day=1, per_week=3, quiet_hours=(21, 8))
            await ctx.flows.save(site, MailConfig(flows=[refill], budget=budget))
            beans = lamp("beans", "Espresso beans", product_type="Food > Coffee", price=19.0)
            await CatalogStore(ctx.redis, ctx.keys).upsert(site, [beans])
            who = await shopper(ctx, site, email_address=f"ann@{site}.test", cart=[])
            evening = datetime(2031, 3, 4, 22, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
            await ctx.scheduler.after_order(
                site, who.visitor, "C-1", [("beans", "Food > Coffee")], now=evening
            )
            done = await work_due(
                ctx, OutboxTransport(tmp_path), until=evening + 40 * DAY, start=evening
            )
            assert [outcome for _, _, outcome in done] == ["deferred", "sent"]
            sent = local(done[-1][0], "Europe/Berlin")
            assert (sent.month, sent.day, sent.hour, sent.minute) == (4, 2, 8, 0)

    asyncio.run(main())


# --- every kind of message, both channels -----------------------------------------------------

COFFEE = "Food > Coffee"
LAMPS = "Home > Lighting > Desk lamps"
REFILL_DAYS = 3
MINUTES_A_DAY = 24 * 60


def email(minutes: float, subject: str, template: str) -> FlowStep:
    return FlowStep(delay_minutes=minutes, template=template, subject=subject)


def text(minutes: float) -> FlowStep:
    return FlowStep(delay_minutes=minutes, channel="sms", sms_text={"en": "{shop}: {link}"})


def every_kind(budget: Budget, *, double_opt_in: bool = False) -> MailConfig:
    """The twelve kinds, each due within the simulated weeks; SMS steps in the cart flow and
    the back-in-stock flow; with ``double_opt_in``, consents count once confirmed."""

    def flow(name: str, kind: FlowKind, *steps: FlowStep, **more: Any) -> Flow:
        return Flow(name=name, kind=kind, steps=list(steps), daily_cap=20, **more)

    day = MINUTES_A_DAY
    return MailConfig(
        flows=[
            flow("cart", "cart", email(0, "Cart", "cart"), email(30, "Cart", "cart"), text(90),
                 email(360, "Cart", "cart"), email(1560, "Cart", "cart")),
            flow("checkout", "checkout", email(0, "Checkout", "cart"),
                 email(120, "Checkout", "cart")),
            flow("browse", "browse", email(60, "Still like {product}?", "browse")),
            flow("welcome", "welcome", email(0, "Welcome", "welcome"),
                 email(3 * day, "Favourites", "welcome")),
            flow("cross", "cross_sell", email(2 * day, "Goes with {product}", "cross_sell")),
            flow("review", "review", email(5 * day, "How is {product}?", "review")),
            flow("refill", "replenishment", email(0, "Stock up", "replenishment"),
                 categories={COFFEE.lower(): REFILL_DAYS}),
            flow("winback", "winback", email(4 * day, "Miss you", "winback"),
                 email(8 * day, "Still here", "winback")),
            flow("drop", "price_drop", email(0, "Cheaper", "price_drop")),
            flow("restock", "back_in_stock", email(0, "Back", "back_in_stock"), text(60)),
            flow("low", "low_stock", email(0, "Few left", "low_stock")),
            flow("new", "category_interest", email(30, "New for you", "category_interest")),
        ],
        budget=budget,
        double_opt_in=double_opt_in,
    )  # fmt: skip


def feed() -> dict[str, Product]:
    """The site's catalog: walnut runs low, oak drops in price, marble comes back in stock,
    beans (a consumable) are ordered again; the visitor viewed the three lamps."""
    return {
        "walnut": lamp("walnut", "Walnut desk lamp", quantity=40),
        "oak": lamp("oak", "Oak desk lamp", price=70.0),
        "marble": lamp("marble", "Marble desk lamp"),
        "beans": lamp("beans", "Espresso beans 1 kg", product_type=COFFEE, price=19.0),
    }


ORDERS = [["walnut"], ["beans"], ["walnut", "beans"]]
# What the worker answers when it drops a message it could not send in time.
DROPPED = {
    "quiet_hours": "quiet",
    "sms_quiet_hours": "quiet",
    "budget": "budget",
    "sms_budget": "budget",
    "priority": "priority",
}


@dataclass
class Entry:
    """One line of a history: an event (what, when, the flows with emails pending after it;
    for a click on a confirmation link, the page's status, 0 when no link had come), or what
    the worker did with a job (the outcome, when), with the index of the event that scheduled
    the job (-1 for a confirmation email, which is no flow's) and when it was due."""

    what: str
    at: float
    job: MailJob | None = None
    origin: int = -1
    due: float = 0.0
    answer: int = 0
    pending: frozenset[str] = frozenset()


CONFIRM_LINK = re.compile(r"https?://[^\s\"<>]+/v1/mail/confirm\?t=[A-Za-z0-9_.%-]+")


class Outbox(OutboxTransport):
    """The outbox transport, keeping the double opt-in links it wrote, by recipient."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.confirm_links: dict[str, list[str]] = {}

    async def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        await super().send(message, sender=sender, recipient=recipient)
        body = message.get_body(("plain",))
        assert isinstance(body, EmailMessage)
        links = self.confirm_links.setdefault(recipient.lower(), [])
        links += CONFIRM_LINK.findall(body.get_content())


@dataclass
class History:
    """One site with every kind of flow, its catalog and one identified, consenting visitor
    who viewed the three lamps (and confirmed a phone number, with ``phone``; whose consent
    waits for its confirmation, with ``double_opt_in``); what happened to them, in order; and
    for each scheduled job (id, scheduled, occurrence) the index of the event that scheduled
    it and when it was due then."""

    ctx: MailContext
    transport: Outbox
    site: str
    who: Shopper
    email: str
    triggers: CatalogTriggers
    http: httpx.AsyncClient
    api: FakeMessagesApi
    phone: str = ""
    now: float = T0
    products: dict[str, Product] = field(default_factory=feed)
    orders: list[p.Purchase] = field(default_factory=list)
    log: list[Entry] = field(default_factory=list)
    origins: dict[tuple[str, float, str], tuple[int, float]] = field(default_factory=dict)

    @property
    def visitor(self) -> str:
        return self.who.visitor

    async def pending(self) -> list[dict[str, str]]:
        return await self.ctx.scheduler.pending(self.site, self.visitor)

    async def event(self, what: str, arg: int) -> None:
        """Do ``what`` now, log it, and note the jobs it scheduled."""
        before = {(j["id"], float(j["scheduled"]), j["occurrence"]) for j in await self.pending()}
        self.log.append(Entry(what, self.now))
        if what in ("cart", "checkout", "browse"):
            await self.leave(what)
        elif what == "identify":  # consent given (again): the welcome series, once
            await self.identify(consent=True)
        elif what == "withdraw":  # the consent withdrawn
            await self.identify(consent=False)
        elif what == "confirm":
            self.log[-1].answer = await self.confirm()
        elif what == "buy":
            await self.buy(ORDERS[arg])
        elif what == "again" and self.orders:
            await self.report_again(self.orders[-1])
        elif what == "unsubscribe":
            await self.ctx.scheduler.unsubscribed(self.site, self.email, now=self.now)
        elif what == "stop" and self.phone:
            await self.text_us("STOP")
        elif what == "return":
            await self.ctx.scheduler.visitor_returned(self.site, self.visitor, now=self.now)
        elif what in ("price_drop", "restock", "low_stock", "new_product"):
            await self.feed_change(what)
        after = await self.pending()
        for job in after:
            key = (job["id"], float(job["scheduled"]), job["occurrence"])
            if key not in before:
                self.origins[key] = (len(self.log) - 1, float(job["due"]))
        self.log[-1].pending = frozenset(job["flow"] for job in after)

    async def identify(self, *, consent: bool) -> None:
        """An ``identify`` with the visitor's address, as the server records it (with the
        site's double opt-in setting) and then handles it."""
        message = p.Identify(id=f"i{len(self.log)}", email=self.email, consent=consent)
        recorded = await recorded_identify(self.ctx, self.site, message, "")
        view = await self.who.store.apply(
            self.site, self.visitor, self.who.session_id, recorded, now=time.time()
        )
        await after_identify(
            self.who.store, self.ctx, self.site, self.visitor, recorded, view, now=self.now
        )

    async def confirm(self) -> int:
        """The visitor clicks the confirm button of the latest confirmation email they got
        (the real route, with the simulated clock); the page's status, or 0 without one."""
        links = self.transport.confirm_links.get(self.email.lower())
        if not links:
            return 0
        answer = await self.http.post(links[-1])
        assert (
            answer.status_code != 200
            or "is confirmed" in answer.text
            or ("stays unsubscribed" in answer.text)
        ), answer.text
        return answer.status_code

    async def leave(self, how: str) -> None:
        """The visitor's last socket closed: the server's call with their session and profile
        (which also restarts the win-back series)."""
        browse = how == "browse"
        session = {
            "id": self.who.session_id,
            "cart": "[]" if browse else json.dumps([asdict(line) for line in CART]),
            "checkout": "1" if how == "checkout" else "0",
            "products_viewed": "2" if browse else "0",
            "viewed": json.dumps(["oak", "marble"] if browse else []),
        }
        view = SessionView(session=session, profile=await self.profile())
        await self.ctx.scheduler.visitor_left_from_view(self.site, self.visitor, view, now=self.now)

    async def buy(self, product_ids: list[str]) -> None:
        """A new order, as the shop's order webhook records it. It stops every pending message
        at once, an earlier order's too, then starts its own."""
        items = [
            p.CartItem(id=i, price=self.products[i].price, title=self.products[i].title,
                       category=self.products[i].product_type)
            for i in product_ids
        ]  # fmt: skip
        order = p.Purchase(id=f"p{len(self.orders)}", order_id=f"o{len(self.orders)}",
                           value=sum(item.price for item in items), items=items)  # fmt: skip
        self.orders.append(order)
        assert await session_store(self.ctx).record_order(self.site, self.visitor, order,
                                                          now=self.now)  # fmt: skip
        await self.ctx.scheduler.after_purchase(self.site, self.visitor, order, now=self.now)
        left = {(job["kind"], job["occurrence"]) for job in await self.pending()}
        assert left <= {(kind, order.order_id) for kind in AFTER_ORDER}, left

    async def report_again(self, order: p.Purchase) -> None:
        """The same order reported once more (the widget saw it, then the shop's webhook
        came): it counts once and stops none of the messages it started."""
        own = {
            (job["id"], job["scheduled"])
            for job in await self.pending()
            if job["kind"] in AFTER_ORDER and job["occurrence"] == order.order_id
        }
        assert not await session_store(self.ctx).record_order(self.site, self.visitor, order,
                                                              now=self.now)  # fmt: skip
        await self.ctx.scheduler.order_reported_again(self.site, self.visitor, order.order_id)
        kept = {(job["id"], job["scheduled"]) for job in await self.pending()}
        assert own <= kept, "an order reported again stopped the messages it started"

    async def feed_change(self, what: str) -> None:
        """A feed import that lowers oak's price, brings marble back (after an import without
        it in stock), runs walnut low (after one with plenty) or adds a lamp."""
        change = {"price_drop": "oak", "restock": "marble", "low_stock": "walnut"}.get(what)
        before = {
            "restock": {"availability": "out_of_stock"},
            "low_stock": {"quantity": 40},
        }.get(what)
        if change and before:
            await self.load(msgspec.structs.replace(self.products[change], **before))
        if what == "price_drop":
            oak = self.products["oak"]
            self.products["oak"] = msgspec.structs.replace(oak, price=round(oak.price * 0.8, 2))
        elif what == "restock":
            marble = self.products["marble"]
            self.products["marble"] = msgspec.structs.replace(marble, availability="in_stock")
        elif what == "low_stock":
            self.products["walnut"] = msgspec.structs.replace(self.products["walnut"], quantity=2)
        else:
            change = f"lamp{len(self.products)}"
            self.products[change] = lamp(change, f"Lamp {len(self.products)}")
        await self.load(self.products[change])

    async def load(self, *products: Product) -> None:
        await import_parsed(self.ctx.catalog or CatalogStore(self.ctx.redis, self.ctx.keys),
                            self.site, list(products), source="test", now=self.now,
                            triggers=self.triggers)  # fmt: skip

    async def text_us(self, body: str) -> None:
        """A text from the visitor's phone to the shop's number, as the provider posts it."""
        params = {"MessageSid": "SMx", "From": self.phone, "To": FROM_NUMBER, "Body": body}
        url = f"{PUBLIC_URL}/v1/sms/inbound?{urlencode({'site': self.site})}"
        signature = twilio_signature(AUTH_TOKEN, url, params)
        answer = await self.http.post(url, data=params, headers={"x-twilio-signature": signature})
        assert answer.status_code == 200, answer.text

    async def profile(self) -> dict[str, str]:
        raw = await self.ctx.redis.hgetall(self.ctx.keys.profile(self.site, self.visitor))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def run_until(self, until: float) -> None:
        """Let the worker handle everything due up to ``until``, in time order."""
        for moment, job, outcome in await work_due(self.ctx, self.transport, until=until,
                                                   start=self.now):  # fmt: skip
            self.now = moment
            if job.flow == CONFIRM_FLOW:
                self.log.append(Entry(outcome, moment, job, -1, job.due))
                continue
            origin, due = self.origins[(job.id, job.scheduled, job.occurrence)]
            self.log.append(Entry(outcome, moment, job, origin, due))
        self.now = max(self.now, until)


@contextlib.asynccontextmanager
async def history(
    redis_url: str,
    outbox: Path,
    api: FakeMessagesApi,
    budget: Budget,
    timezone: str,
    sms: bool,
    double_opt_in: bool = False,
) -> AsyncIterator[History]:
    settings = sms_settings_from_env(api.env())
    async with (
        mail_context(redis_url, sms=settings) as ctx,
        httpx.AsyncClient(timeout=10) as provider,
    ):
        ctx.sms = SmsSender(settings, provider)
        with_similar(ctx)
        site = await make_site(ctx, timezone=timezone)
        await ctx.flows.save(site, every_kind(budget, double_opt_in=double_opt_in))
        products = feed()
        await CatalogStore(ctx.redis, ctx.keys).upsert(site, list(products.values()))
        address = f"ann@{site}.test"
        # Under double opt-in the history starts with the visitor's consent (pending).
        who = await shopper(ctx, site, email_address=address, consent=not double_opt_in, cart=[])
        assert ctx.catalog is not None
        interest = InterestIndex(ctx.redis, ctx.keys, ctx.catalog)
        for pid in ("walnut", "oak", "marble"):
            seen = p.Product(id=pid, title=products[pid].title, category=LAMPS)
            view = await who.send(p.ProductView, product=seen)
            interest.observe(site, who.visitor, p.ProductView(id="v", product=seen), view)
        await interest.flush()
        triggers = CatalogTriggers(ctx.redis, ctx.keys, ctx.scheduler, interest=interest,
                                   catalog=ctx.catalog, clock=lambda: shop.now)  # fmt: skip
        on_the_clock = replace(ctx, clock=lambda: shop.now)  # the mail pages' simulated time
        app = Starlette(routes=[*sms_routes(lambda: ctx), *mail_routes(lambda: on_the_clock)])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL
        ) as http:
            shop = History(ctx, Outbox(outbox), site, who, address, triggers, http, api)
            if sms:
                shop.phone = f"+49170{secrets.randbelow(10**7):07d}"
                found = await ctx.sites.get(site)
                assert found is not None
                asked = await request_code(ctx, found, who.visitor, shop.phone, True, now=T0)
                assert asked.status == "code_sent", asked
                code = re.findall(r"\d{6}", api.to(shop.phone)[-1].body)[0]
                confirmed = await confirm_code(ctx, found, who.visitor, code, now=T0)
                assert confirmed.status == "confirmed", confirmed
            if double_opt_in:
                await shop.event("identify", 0)
            yield shop


# What can happen in a history (leaving with a cart, ordering and clicking the confirmation
# link twice as likely as the rest).
HAPPENINGS = [
    "cart", "cart", "checkout", "browse", "identify", "withdraw", "confirm", "confirm", "buy",
    "buy", "again", "unsubscribe", "stop", "return", "price_drop", "restock", "low_stock",
    "new_product",
]  # fmt: skip
EVENTS = st.lists(
    st.tuples(
        st.floats(0, 12 * DAY, allow_nan=False),
        st.sampled_from(HAPPENINGS),
        st.integers(0, len(ORDERS) - 1),
    ),
    max_size=10,
)
BUDGETS = st.builds(
    lambda day, extra, quiet: Budget(per_day=day, per_week=day + extra, quiet_hours=quiet),
    st.integers(1, 3),
    st.integers(0, 3),
    st.one_of(
        st.none(),
        st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(lambda h: h[0] != h[1]),
    ),
)
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])


def next_allowed(reason: str, moment: float, sent: list[float], budget: Budget, zone: str) -> float:
    """When a message the worker meets at ``moment`` could go at the earliest, after ``sent``:
    the end of the quiet hours; the visitor's next day when the day's budget is spent, the
    moment the oldest of the week's leaves the 7 days when those are; a minute later for one
    that waits for a message of a higher priority."""
    if reason == "quiet":
        return quiet_end(budget, moment, ZoneInfo(zone))
    if reason == "priority":
        return moment + PRIORITY_WAIT_S
    frees = moment
    today = local(moment, zone).date()
    if sum(1 for s in sent if local(s, zone).date() == today) >= budget.per_day:
        tomorrow = datetime.combine(today + timedelta(days=1), dtime(0), ZoneInfo(zone))
        frees = tomorrow.timestamp()
    week = sorted(s for s in sent if s > moment - 7 * DAY)
    if len(week) >= budget.per_week:
        frees = max(frees, week[len(week) - budget.per_week] + 7 * DAY)
    return frees


@dataclass
class Consent:
    """What the product promises about the visitor's email consent, event by event: a consent
    given while none is (at first, or after a withdrawal) starts a new record, which under
    double opt-in counts only once a confirmation link of that record is followed within
    its 7 days; a consent repeated keeps the record; a withdrawal ends it."""

    double_opt_in: bool
    given: bool
    confirmed: bool = True
    record: int = 0
    # The confirmation emails sent: when, and the record each one's link names.
    links: list[tuple[float, int]] = field(default_factory=list)

    @property
    def counts(self) -> bool:
        return self.given and self.confirmed

    @property
    def awaiting(self) -> bool:
        return self.given and not self.confirmed

    def identify(self) -> None:
        if not self.given:
            self.given, self.confirmed = True, not self.double_opt_in
            self.record += 1

    def withdraw(self) -> None:
        self.given = False

    def click(self, at: float) -> int:
        """The status of the confirmation page for the latest link the visitor got (0: none)."""
        if not self.links:
            return 0
        sent, record = self.links[-1]
        if int(sent + CONFIRM_TTL_S) < at:
            return 410  # expired: changes nothing
        if not self.given or record != self.record:
            return 409  # a withdrawn or a later consent: the link no longer applies
        self.confirmed = True
        return 200


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=EVENTS, budget=BUDGETS, timezone=ZONES, sms=st.booleans(), double_opt_in=st.booleans()
)
def test_no_history_of_events_gets_past_the_budget_quiet_hours_a_purchase_or_the_consent(
    redis_url: str,
    tmp_path: Path,
    api: FakeMessagesApi,
    events: list[tuple[float, str, int]],
    budget: Budget,
    timezone: str,
    sms: bool,
    double_opt_in: bool,
) -> None:
    """Random histories of every kind of message: leaving (cart, checkout, browse; each also
    restarts the win-back series), consent given (welcome) and withdrawn, orders (products to
    go with them, review, replenishment), the same order reported again, feed imports (price
    drop, back in stock, low stock, a new product in a category the visitor likes), coming
    back, unsubscribing and texting STOP, for a visitor with or without a confirmed phone, on a
    site with or without double opt-in (then the history starts with a consent to confirm, and
    the visitor may follow the latest confirmation link at any time)."""

    async def main() -> History:
        async with history(redis_url, tmp_path, api, budget, timezone, sms, double_opt_in) as shop:
            for offset, what, arg in sorted(events):
                await shop.run_until(T0 + offset)
                await shop.event(what, arg)
            await shop.run_until(T0 + 30 * DAY)
            return shop

    shop = asyncio.run(main())
    config = every_kind(budget)
    consent = Consent(double_opt_in, given=not double_opt_in)
    sent: list[float] = []
    steps: set[str] = set()
    texted = 0
    asked: set[str] = set()  # the UTC days a confirmation email was asked for
    owed: float | None = None  # when a confirmation email is owed at once
    for at, entry in enumerate(shop.log):
        job = entry.job
        before = [e.what for e in shop.log[:at] if e.job is None]
        if job is None:
            assert owed is None, "no confirmation email at once"
            counted = consent.counts
            if entry.what == "identify":
                consent.identify()
                day = utc_day(entry.at)
                if consent.awaiting and day not in asked:  # at most one a day
                    asked.add(day)
                    owed = None if "unsubscribe" in before else entry.at
            elif entry.what == "withdraw":
                consent.withdraw()
            elif entry.what == "confirm":
                assert entry.answer == consent.click(entry.at), "the confirmation page"
            # The welcome series starts when the consent comes to count (given, or confirmed
            # under double opt-in), for the emails of it not sent yet.
            if consent.counts and not counted and "unsubscribe" not in before:
                welcomed = {"welcome:0", "welcome:1"} <= steps
                assert welcomed or "welcome" in entry.pending, "no welcome series"
            continue
        if job.flow == CONFIRM_FLOW:  # asked for: outside the budget and the quiet hours
            if entry.what == "sent":
                assert consent.awaiting, "a confirmation email for no consent awaiting one"
                assert "unsubscribe" not in before, "a confirmation email after an unsubscribe"
                assert entry.at == owed, "a confirmation email not at once or twice a day"
                consent.links.append((entry.at, consent.record))
                owed = None
            continue
        origin, due = entry.origin, entry.due
        if entry.what in DROPPED:  # dropped only when it could not go in time
            allowed = next_allowed(DROPPED[entry.what], entry.at, sent, budget, timezone)
            assert allowed - due > MAX_HOLD_S, f"{job.flow}:{job.step} dropped too early"
        # No worker dies here: no job is claimed again without an outcome.
        assert entry.what != "poison", f"{job.flow}:{job.step} dropped as poison"
        if entry.what != "sent":
            continue
        t = entry.at
        sent.append(t)
        # Every message within the budget, in all flows and both channels, in the visitor's zone.
        assert sum(1 for s in sent if t - 7 * DAY < s <= t) <= budget.per_week
        assert sum(1 for s in sent if local(s, timezone).date() == local(t, timezone).date()) <= (
            budget.per_day
        )
        assert not budget.quiet(local(t, timezone).hour)
        assert due <= t <= due + MAX_HOLD_S
        # At most one message per flow, step and occurrence, ever.
        assert job.step_field not in steps, f"{job.step_field} sent twice"
        steps.add(job.step_field)
        since = [e.what for e in shop.log[origin + 1 : at] if e.job is None]
        flow = config.flow(job.flow)
        assert flow is not None
        if flow.steps[job.step].channel == "sms":
            texted += 1
            assert shop.phone and "stop" not in before, "texted after a STOP"
        else:
            assert "unsubscribe" not in before, "emailed after an unsubscribe"
            # Only while the consent counts (confirmed, under double opt-in), and never for a
            # job scheduled before a withdrawal, even once consent is given again.
            assert consent.given, "emailed while the consent is withdrawn"
            assert consent.confirmed, "emailed before the consent was confirmed"
            assert "withdraw" not in since, "emailed for a job scheduled before a withdrawal"
        # No message of a job scheduled before an order goes after it; the emails an order
        # starts are the only ones it schedules.
        assert "buy" not in since, "sent after a purchase"
        assert (shop.log[origin].what == "buy") == (job.kind in AFTER_ORDER)
    assert owed is None, "no confirmation email at once"
    assert sent == sorted(sent)
    # Under double opt-in the first consent gets its confirmation email at once.
    assert not double_opt_in or consent.links[0][0] == T0
    # Every SMS the worker counted as sent reached the provider, and no other one did.
    texts = [m for m in api.to(shop.phone) if "/v1/sms/l/" in m.body] if shop.phone else []
    assert len(texts) == texted
