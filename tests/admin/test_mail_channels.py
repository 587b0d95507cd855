"""The emails page shows a flow's results per channel (email, SMS, the holdout) and the arms
compared among the visitors who could get texts, from the counters the real scheduler and flow
experiments write."""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from redis.asyncio import Redis

from widget_server.mail.flows import (
    Flow,
    FlowStep,
    MailConfig,
    MailFlowStore,
    in_holdout,
    in_sms_holdout,
)
from widget_server.mail.jobs import MailScheduler
from widget_server.visitors.session_view import CartLine

from .test_admin import KEYS, AdminClient, new_site_key
from .test_mail import emails, owner, table

__all__ = ["owner"]

FLOW = Flow(
    name="cart",
    kind="cart",
    holdout=0.4,
    sms_holdout=0.5,
    steps=[
        FlowStep(delay_minutes=0, channel="sms", sms_text={"en": "Your cart: {link}"}),
        FlowStep(delay_minutes=60, template="cart", subject="Your cart"),
    ],
)


def test_the_results_show_each_channel_and_the_visitors_who_could_get_texts(
    owner: AdminClient, redis_url: str
) -> None:
    site = new_site_key(owner)
    counts = {"reach": {"email": 0, "holdout": 0, "email_only": 0}, "texted": 0, "emailed": 0,
              "held": 0}  # fmt: skip

    async def traffic() -> None:
        client = Redis.from_url(redis_url)
        try:
            await MailFlowStore(client, KEYS).save(site, MailConfig(flows=[FLOW]))
            scheduler = MailScheduler(client, KEYS)
            experiments = scheduler.experiments
            for i in range(90):
                visitor = f"visitor-{secrets.token_hex(6)}"
                phone = i % 3 == 0
                held = in_holdout(site, visitor, FLOW)
                now = time.time()
                cart = [CartLine("sku-1", 1, 10.0, "Mug", "", "")]
                await scheduler.visitor_left(site, visitor, now=now, cart=cart, sms=phone,
                                             email=f"v{i}@example.com", consent=True)  # fmt: skip
                await scheduler.cancel(site, visitor)  # the messages are sent by hand below
                no_text = in_sms_holdout(site, visitor, FLOW)
                if phone:
                    segment = "holdout" if held else "email_only" if no_text else "email"
                    counts["reach"][segment] += 1
                if held:
                    counts["held"] += 1
                    continue
                counts["emailed"] += 1
                await experiments.sent(site, visitor, FLOW, "email", now)
                if phone and not no_text:
                    counts["texted"] += 1
                    await experiments.sent(site, visitor, FLOW, "sms", now)
                    await experiments.clicked(site, visitor, FLOW, now, channel="sms")
                    await scheduler.purchased(site, visitor, value=40.0)
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:  # a browser test may keep an event loop on this thread
        pool.submit(asyncio.run, traffic()).result()
    html = owner.get(emails(site)).text
    texted, emailed = counts["texted"], counts["emailed"]
    rows = table(html, "channels-cart")
    assert rows[0] == [
        "Channel", "Visitors reached", "Sent", "Delivered", "Clicked", "Bought after clicking",
        "Bought", "Revenue per visitor",
    ]  # fmt: skip
    share = f"({texted / emailed:.1%})"
    assert rows[1] == ["Email", str(emailed), str(emailed), f"{emailed}(100.0%)", "0(0.0%)", "0",
                       f"{texted}{share}", f"{40 * texted / emailed:.2f}"]  # fmt: skip
    assert rows[2] == ["SMS", str(texted), str(texted), "0(0.0%)", f"{texted}(100.0%)",
                       str(texted), f"{texted}(100.0%)", "40.00"]  # fmt: skip
    assert rows[3] == ["Holdoutno message", str(counts["held"]), "—", "—", "—", "—", "0(0.0%)",
                       "0.00"]  # fmt: skip
    reach = table(html, "reach-table-cart")
    assert reach[0] == ["Measure", "holdoutno message", "messages", "emails onlyno text"]
    segments = counts["reach"]
    assert reach[1] == ["Visitors who qualified", str(segments["holdout"]),
                        str(segments["email"]), str(segments["email_only"])]  # fmt: skip
    assert reach[2] == ["Visitors who bought", "0", str(texted), "0"]
    value = table(html, "value-table-cart")
    assert value[0] == ["Measure", "emails onlyno text", "messages"]  # the control first
    assert value[2] == ["Visitors who bought", "0", str(texted)]
    assert "Too early" in html[html.index('id="value-sentences-cart"') :]
    document = owner.get(f"/admin/api/sites/{site}/emails/cart/report.json").json()
    assert document["channels"]["sms"]["recipients"] == texted
    assert document["sms_reach"]["control"] == "holdout"
