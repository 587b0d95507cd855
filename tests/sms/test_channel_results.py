"""A flow's results per channel, through the real scheduler, worker, webhooks and short links: who
got which channel, what was delivered and clicked, what recipients bought, and the arms compared
among the visitors who could get texts when they qualified."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from widget_server.experiments.reports import flow_report
from widget_server.mail.flows import Flow, FlowStep, MailConfig, in_holdout, in_sms_holdout
from widget_server.wire.protocol import Purchase

from ..mail_support import UNLIMITED, shopper
from .test_channel import HOUR, FakeMessagesApi, api, sms_shop, sms_step

__all__ = ["api"]

FLOW = Flow(
    name="cart",
    kind="cart",
    holdout=0.5,
    daily_cap=20,
    steps=[
        sms_step(0, "Your cart at {shop} is waiting: {link}"),
        FlowStep(delay_minutes=60, template="cart", subject="Your cart"),
    ],
)


def test_results_per_channel_and_among_visitors_who_could_get_texts(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    async def main() -> None:
        config = MailConfig(flows=[FLOW], budget=UNLIMITED)
        async with sms_shop(redis_url, api, tmp_path, config) as shop:
            ctx, site = shop.ctx, shop.site
            # Visitors until there is one of each: texts and emails, holdout with a phone, and
            # emails only (no phone).
            wanted = {(False, True): "", (True, True): "", (False, False): ""}
            addresses: dict[str, str] = {}
            n = 0
            while not all(wanted.values()):
                n += 1
                who = await shopper(ctx, site, email_address=f"v{n}@{site}.test")
                addresses[who.visitor] = f"v{n}@{site}.test"
                phone = n % 2 == 1
                slot = (in_holdout(site, who.visitor, FLOW), phone)
                if slot in wanted and not wanted[slot]:
                    wanted[slot] = who.visitor
            texted, held, emailed = (
                wanted[(False, True)],
                wanted[(True, True)],
                wanted[(False, False)],
            )
            phones = {texted: "+491701234567", held: "+491701234568"}
            t0 = time.time()
            for visitor in (texted, held, emailed):
                shop.visitor, shop.email = visitor, addresses[visitor]
                if visitor in phones:
                    await shop.opt_in(phones[visitor])
                await shop.leave(t0)
            await shop.run_until(t0 + 2 * HOUR, t0)

            [text] = [m for m in api.to(phones[texted]) if "code" not in m.body]
            assert not [m for m in api.to(phones[held]) if "code" not in m.body]
            delivered = {"MessageSid": text.sid, "MessageStatus": "delivered", "To": text.to}
            assert (await shop.provider_post("/v1/sms/status", delivered)).status_code == 204
            assert (await shop.client.get(text.body.rsplit(" ", 1)[1])).status_code == 302
            for visitor, value in ((texted, 80.0), (held, 50.0), (emailed, 30.0)):
                order = Purchase(id="m", order_id=f"o-{visitor}", value=value)
                await ctx.scheduler.after_purchase(site, visitor, order, now=time.time())

            doc = await flow_report(ctx.redis, ctx.keys, site, FLOW, time.time())
            assert doc["channels"]["sms"] == {
                "recipients": 1, "sent": 1, "delivered": 1, "failed": 0, "clicks": 1,
                "click_conversions": 1, "conversions": 1, "revenue": 80.0,
                "revenue_per_recipient": 80.0,
            }  # fmt: skip
            assert doc["channels"]["email"] == {
                "recipients": 2, "sent": 2, "delivered": 2, "bounces": 0, "clicks": 0,
                "click_conversions": 0, "conversions": 2, "revenue": 110.0,
                "revenue_per_recipient": 55.0,
            }  # fmt: skip
            arms = {r["variant"]: r for r in doc["report"]["variants"]}
            assert (arms["email"]["exposures"], arms["holdout"]["exposures"]) == (2, 1)
            reach = {r["variant"]: r for r in doc["sms_reach"]["variants"]}
            assert (reach["email"]["exposures"], reach["email"]["revenue"]) == (1, 80.0)
            assert (reach["holdout"]["exposures"], reach["holdout"]["revenue"]) == (1, 50.0)

    asyncio.run(main())


def test_a_visitor_with_only_a_confirmed_phone_gets_the_texts_of_an_order_flow(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    review = Flow(
        name="review",
        kind="review",
        daily_cap=20,
        steps=[
            sms_step(60, "How is your order from {shop}? {link}"),
            FlowStep(delay_minutes=120, template="review", subject="How was it?"),
        ],
    )
    config = MailConfig(flows=[review], budget=UNLIMITED)

    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, config, email=False) as shop:
            t0 = time.time()
            nothing = await shop.ctx.scheduler.after_order(
                shop.site, shop.visitor, "o-1", [("sku-1", "mugs")], now=t0
            )
            # An address without marketing consent and no phone yet: nothing.
            assert "no_consent" in [r.outcome for r in nothing]
            assert "scheduled" not in [r.outcome for r in nothing]
            await shop.opt_in()
            started = await shop.ctx.scheduler.after_order(
                shop.site, shop.visitor, "o-2", [("sku-1", "mugs")], now=t0
            )
            assert "scheduled" in [r.outcome for r in started]
            await shop.run_until(t0 + 3 * HOUR, t0)
            assert [o for _, _, o in shop.outcomes] == ["sent", "no_consent"]
            [text] = shop.flow_sms()
            assert text.body.startswith(f"How is your order from {shop.site}? https://")

    asyncio.run(main())


def test_a_visitor_in_the_sms_holdout_gets_the_emails_and_no_text(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    flow = FLOW.model_copy(update={"holdout": 0.0, "sms_holdout": 0.5})
    config = MailConfig(flows=[flow], budget=UNLIMITED)

    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, config) as shop:
            ctx, site = shop.ctx, shop.site
            n = 0
            while True:  # a visitor the SMS holdout keeps from texts
                n += 1
                who = await shopper(ctx, site, email_address=f"s{n}@{site}.test")
                if in_sms_holdout(site, who.visitor, flow):
                    break
            shop.visitor, shop.email = who.visitor, f"s{n}@{site}.test"
            await shop.opt_in()
            t0 = time.time()
            await shop.leave(t0)
            await shop.run_until(t0 + 2 * HOUR, t0)
            assert [o for _, _, o in shop.outcomes] == ["sms_holdout", "sent"]
            assert shop.flow_sms() == []
            doc = await flow_report(ctx.redis, ctx.keys, site, flow, time.time())
            assert doc["stage"] == "h0s500" and doc["sms_holdout"] == 0.5
            reach = {r["variant"]: r["exposures"] for r in doc["sms_reach"]["variants"]}
            assert reach == {"email": 0, "email_only": 1}
            assert doc["sms_value"]["control"] == "email_only"

    asyncio.run(main())
