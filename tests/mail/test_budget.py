"""The schedule that never annoys: a budget per visitor over every flow (a day in their time
zone, any 7 days), quiet hours in their time zone, and a purchase or an unsubscribe that stops
everything. Through the real scheduler, worker and store, with the outbox transport, on a
simulated clock (the worker takes its time from the caller)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from widget_server.catalog.store import CatalogStore
from widget_server.mail.context import MailContext
from widget_server.mail.flows import MAX_HOLD_S, Budget, Flow, FlowStep, MailConfig
from widget_server.mail.jobs import BudgetCheck, MailJob
from widget_server.mail.send import OutboxTransport
from widget_server.mail.worker import quiet_end, visitor_zone
from widget_server.visitors.session_view import CartLine
from widget_server.wire import protocol as p

from ..mail_support import mail_context, make_site, session_store, shopper, work_due
from .test_similar import lamp

CART = [CartLine("sku-1", 1, 10.0, "Mug", "", "")]
HOUR, DAY = 3600.0, 86_400.0
# Simulated time starts at a UTC midnight after the real now (the profile's own times are real).
T0 = (time.time() // DAY + 2) * DAY


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
    """One site and one identified, consenting visitor, and what the worker sent them."""

    ctx: MailContext
    transport: OutboxTransport
    site: str
    visitor: str
    email: str
    now: float = T0
    sent: list[tuple[float, MailJob]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    # What happened, in order: ("leave" | "buy" | "unsubscribe" | "sent", time).
    log: list[tuple[str, float]] = field(default_factory=list)

    async def leave(self, *, checkout: bool = False) -> None:
        self.log.append(("leave", self.now))
        await self.ctx.scheduler.visitor_left(
            self.site, self.visitor, now=self.now, cart=CART, email=self.email, consent=True,
            checkout=checkout,
        )  # fmt: skip

    async def buy(self) -> None:
        """An order, as the shop's API records it."""
        self.log.append(("buy", self.now))
        order = p.Purchase(id=f"o{self.now:.0f}", order_id=f"{self.now:.0f}", value=20.0)
        await session_store(self.ctx).record_order(self.site, self.visitor, order, now=self.now)
        await self.ctx.scheduler.purchased(self.site, self.visitor, value=20.0, now=self.now)

    async def run_until(self, until: float) -> None:
        """Let the worker send everything due up to ``until``, in time order."""
        for moment, job, outcome in await work_due(self.ctx, self.transport, until=until,
                                                   start=self.now):  # fmt: skip
            self.now = moment
            self.outcomes.append(outcome)
            if outcome == "sent":
                self.sent.append((moment, job))
                self.log.append(("sent", moment))
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


EVENTS = st.lists(
    st.tuples(
        st.floats(0, 12 * DAY, allow_nan=False),
        st.sampled_from(["cart", "cart", "checkout", "buy", "unsubscribe"]),
    ),
    max_size=8,
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


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=EVENTS, budget=BUDGETS, timezone=ZONES)
def test_no_history_of_events_gets_past_the_budget_quiet_hours_a_purchase_or_an_unsubscribe(
    redis_url: str, tmp_path: Path, events: list[tuple[float, str]], budget: Budget, timezone: str
) -> None:
    async def main() -> Shop:
        async with mail_context(redis_url) as ctx:
            shop = await open_shop(ctx, tmp_path, budget, timezone)
            for offset, event in sorted(events):
                await shop.run_until(T0 + offset)
                if event == "buy":
                    await shop.buy()
                elif event == "unsubscribe":
                    shop.log.append(("unsubscribe", shop.now))
                    await ctx.scheduler.unsubscribed(shop.site, shop.email, now=shop.now)
                else:
                    await shop.leave(checkout=event == "checkout")
            await shop.run_until(T0 + 30 * DAY)
            return shop

    shop = asyncio.run(main())
    times = [t for t, _ in shop.sent]
    assert times == sorted(times)
    for t in times:
        assert sum(1 for s in times if t - 7 * DAY < s <= t) <= budget.per_week
        assert sum(1 for s in times if local(s, timezone).date() == local(t, timezone).date()) <= (
            budget.per_day
        )
        assert not budget.quiet(local(t, timezone).hour)
    sends = iter(shop.sent)
    for at, (what, _) in enumerate(shop.log):
        if what != "sent":
            continue
        t, job = next(sends)
        before = [event for event, _ in shop.log[:at]]
        assert "unsubscribe" not in before, "sent after an unsubscribe"
        # The leave that scheduled it is the last one at its time; no purchase since.
        left = max(
            i
            for i, (e, moment) in enumerate(shop.log[:at])
            if (e, moment) == ("leave", job.scheduled)
        )
        assert "buy" not in before[left:], "sent after a purchase"
        step = flows(budget).flow(job.flow).steps[job.step]  # type: ignore[union-attr]
        assert t <= job.scheduled + step.delay_minutes * 60 + MAX_HOLD_S
