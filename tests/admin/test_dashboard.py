"""The site-wide holdout and the site dashboard: held-out visitors see no offer and get no
message, every visitor counts once in the tool-against-holdout comparison, and the dashboard
shows exactly what the campaign and flow reports say."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import markupsafe
import pytest
import redis
from playwright.sync_api import expect
from redis.asyncio import Redis

from widget_server.cli.main import DEMO_HOLDOUT
from widget_server.demo import traffic
from widget_server.devtools.simulate import SITE_HOLDOUT
from widget_server.experiments import reports
from widget_server.experiments import site as site_report
from widget_server.experiments.stats import VariantCounts, experiment_report
from widget_server.mail.flows import MailFlowStore
from widget_server.mail.jobs import MailScheduler
from widget_server.offers.assign import in_site_holdout
from widget_server.offers.campaign_store import CampaignStore
from widget_server.shipped import EXAMPLES_DIR
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry
from widget_server.visitors.session_view import CartLine

from ..offers.test_frequency import EXIT, reasons
from ..support import (
    Client,
    ServerProcess,
    add_site,
    message_campaign,
    new_visitor,
    save_campaigns,
)
from .test_admin import make_user, signed_in
from .test_browser import shot, signed_in_page

KEYS = Keys()


def visitor_where(site: str, held: bool, share: float = 0.5) -> str:
    return next(v for v in (new_visitor() for _ in range(500))
                if in_site_holdout(site, 1, share, v) == held)  # fmt: skip


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def settled_stats(r: redis.Redis, site: str, field: str, value: float) -> dict[str, float]:
    """The site-wide experiment's counters of today once ``field`` reached ``value``."""
    today = datetime.now(UTC).strftime("%Y%m%d")
    deadline = time.monotonic() + 5
    while True:
        raw = r.hgetall(KEYS.site_experiment_stats(site, today))
        stats = {k: float(v) for k, v in raw.items()}
        if stats.get(field) == value or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_the_site_wide_holdout_sees_nothing_and_counts_once(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url, holdout=0.5)
    save_campaigns(server.redis_url, site, [message_campaign("saver")])
    held, reached = visitor_where(site, True), visitor_where(site, False)
    with Client(server.ws_url) as c:
        session = c.hello(site, held)["session"]
        assert c.signal_answer(EXIT) is None
        c.event("purchase", order_id="h-1", value=40.0)
    assert reasons(r, site, held, session) == {"saver": "site_holdout"}
    for visit in range(2):  # two visits: exposed once
        with Client(server.ws_url) as c:
            c.hello(site, reached)
            offer = c.signal_answer(EXIT)
            if visit == 0:
                assert offer is not None
                c.painted(offer)
                c.event("purchase", order_id="t-1", value=60.0)
                c.event("purchase", order_id="t-2", value=15.0)
    stats = settled_stats(r, site, "revenue:tool", 75.0)
    assert stats == {
        "exposures:holdout": 1.0, "exposures:tool": 1.0,
        "conversions:holdout": 1.0, "conversions:tool": 1.0,  # buyers, once each
        "orders:holdout": 1.0, "orders:tool": 2.0,
        "revenue:holdout": 40.0, "revenue:tool": 75.0,
        "revenue_sq:holdout": 1600.0, "revenue_sq:tool": 75.0**2,
        "influenced_orders": 2.0, "influenced_revenue": 75.0,  # after the painted offer
    }  # fmt: skip
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert r.pfcount(KEYS.site_reached(site, today)) == 1  # the holdout is not reached

    async def leave(visitor: str) -> str:
        client = Redis.from_url(server.redis_url, decode_responses=True)
        try:
            scheduler = MailScheduler(client, KEYS, MailFlowStore(client, KEYS))
            result = await scheduler.visitor_left(
                site, visitor, now=time.time(), cart=[CartLine("SKU-1", 1, 20.0, "Mug", "", "")],
                email=f"{visitor[:8]}@example.com", consent=True,
            )  # fmt: skip
            return result.outcome
        finally:
            await client.aclose()

    assert run(leave(held)) == "site_holdout"  # no message either
    assert run(leave(reached)) in ("scheduled", "holdout")  # the flow's own holdout may keep it


def test_a_new_share_starts_a_new_comparison(redis_url: str) -> None:
    site = add_site(redis_url, holdout=0.05)

    async def change() -> tuple[int, int, int]:
        client = Redis.from_url(redis_url)
        try:
            registry = SiteRegistry(client, KEYS)
            first = await registry.get(site)
            assert first is not None and first.holdout_started > 0
            await registry.save(first)  # saved again unchanged: the same comparison
            same = await SiteRegistry(client, KEYS).get(site)
            assert same is not None and same.holdout_started == first.holdout_started
            await registry.save(__import__("msgspec").structs.replace(first, holdout=0.1))
            later = await SiteRegistry(client, KEYS).get(site)
            assert later is not None and later.holdout_started >= first.holdout_started
            return first.holdout_version, same.holdout_version, later.holdout_version
        finally:
            await client.aclose()

    assert run(change()) == (1, 1, 2)


def seed_site_experiment(r: redis.Redis, site: str, seed: int) -> None:
    """Today's counters of 4,000 visitors, 10% held out; the tool's buyers convert a little
    more; the buyers' records as the attribution script keeps them."""
    rng = random.Random(seed)
    today = datetime.now(UTC).strftime("%Y%m%d")
    fields: dict[str, float] = {}
    records = {}
    for n in range(4000):
        arm = "holdout" if n % 10 == 0 else "tool"
        add = {"exposures": 1.0}
        if rng.random() < (0.05 if arm == "holdout" else 0.08):
            value = round(20 + rng.random() * 80, 2)
            add.update(conversions=1.0, orders=1.0, revenue=value, revenue_sq=value * value)
            records[f"b{n}"] = json.dumps({"a": arm, "x": "", "d": {today: repr(value)}})
        for metric, value in add.items():
            fields[f"{metric}:{arm}"] = fields.get(f"{metric}:{arm}", 0.0) + value
    stats = KEYS.site_experiment_stats(site, today)
    for name, value in fields.items():  # added to what real visits counted
        r.hincrbyfloat(stats, name, value)
    r.hset(KEYS.site_experiment_buyers(site), mapping=records)


def test_the_dashboard_shows_what_the_campaign_and_flow_reports_say(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url, holdout=0.1)
    save_campaigns(redis_url, site, [message_campaign("saver"), message_campaign("other")])
    for n in range(3):  # a little real traffic through the server
        with Client(server.ws_url) as c:
            c.hello(site, visitor_where(site, False, 0.1))
            offer = c.signal_answer(EXIT)
            assert offer is not None
            c.painted(offer)
            if n == 0:
                c.event("purchase", order_id=f"o-{n}", value=30.0)
    settled_stats(r, site, "influenced_orders", 1.0)
    seed_site_experiment(r, site, seed=3)
    editor = signed_in(server, redis_url, "editor")

    async def documents() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        client = Redis.from_url(redis_url)
        try:
            record = await SiteRegistry(client, KEYS).get(site)
            assert record is not None
            campaigns = await CampaignStore(client, KEYS).for_site(site)
            flows = await MailFlowStore(client, KEYS).get(site)
            now = time.time()
            texted = MailScheduler(client, KEYS).experiments  # a text of the first flow, clicked
            await texted.exposed(site, "v-texted", flows.flows[0], "email", now, reach_arm="email")
            await texted.sent(site, "v-texted", flows.flows[0], "sms", now)
            await texted.clicked(site, "v-texted", flows.flows[0], now, channel="sms")
            summary = await site_report.site_summary(
                client, KEYS, record, campaigns, flows, now, 30
            )
            own = [await reports.campaign_report(client, KEYS, site, c, now, 30) for c in campaigns]
            mail = [await reports.flow_report(client, KEYS, site, f, now, 30) for f in flows.flows]
            return summary, own, mail
        finally:
            await client.aclose()

    summary, own, mail = run(documents())

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return {k: v for k, v in a.items() if k != "generated_at"} == {
            k: v for k, v in b.items() if k != "generated_at"
        }

    assert len(summary["campaigns"]) == 2 and len(summary["flows"]) == len(mail) > 0
    assert all(same(a, b) for a, b in zip(summary["campaigns"], own, strict=True))
    assert all(same(a, b) for a, b in zip(summary["flows"], mail, strict=True))
    shown = sum(row["impressions"] for doc in own for row in doc["report"]["variants"])
    assert summary["activity"]["offers_shown"] == shown == 3
    assert summary["activity"]["reached"] == 3
    assert summary["activity"]["influenced_orders"] == 1
    experiment = summary["experiment"]
    assert experiment is not None and experiment["control"] == "holdout"
    tool = experiment["variants"][1]
    assert tool["variant"] == "tool" and tool["exposures"] == 3600 + 3

    html = editor.get(f"/admin/sites/{site}/dashboard?days=30").text
    assert f"<strong>{markupsafe.escape(experiment['headline'])}</strong>" in html
    incremental = tool["revenue_decision"]
    n = tool["exposures"]
    assert f"{incremental['estimate'] * n:+,.2f}" in html
    assert f"{incremental['low'] * n:+,.2f} to {incremental['high'] * n:+,.2f}" in html
    for doc in own:
        start = html.index(f'id="campaign-{doc["campaign"]}"')
        row = html[start : html.index("</tr>", start)]
        variants = doc["report"]["variants"]
        cells = [
            f"{sum(v[m] for v in variants):,}" for m in ("exposures", "impressions", "conversions")
        ]
        assert all(f'<td class="num">{cell}</td>' in row for cell in cells)
        assert str(markupsafe.escape(doc["report"]["headline"])) in row
    for doc in mail:
        start = html.index(f'id="flow-{doc["flow"]}"')
        row = html[start : html.index("</tr>", start)]
        variants = doc["report"]["variants"]
        cells = [
            sum(v["exposures"] for v in variants),
            sum(v["impressions"] for v in variants),
            doc["channels"]["sms"]["sent"],
            doc["email"].get("email", {}).get("clicks", 0),
        ]
        shown_cells = re.findall(r'<td class="num">([^<]*)</td>', row)
        assert shown_cells[:4] == [f"{cell:,}" for cell in cells], row
    assert mail[0]["channels"]["sms"]["sent"] == 1 and mail[0]["email"]["email"]["clicks"] == 1
    exported = editor.get(f"/admin/api/sites/{site}/dashboard.csv?days=30")
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0].startswith("kind,name,control,arm,exposures")
    assert f"site,{site},holdout,tool,{n}," in exported.text
    assert sum(1 for line in lines if line.startswith("campaign,saver,")) == 1  # one arm


def test_without_a_holdout_the_dashboard_says_why_there_is_no_total(
    server: ServerProcess, redis_url: str
) -> None:
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign("saver")])
    editor = signed_in(server, redis_url, "viewer")
    html = editor.get(f"/admin/sites/{site}/dashboard").text
    assert 'id="no-holdout"' in html and "No site-wide holdout, so no total." in html
    assert "their visitors overlap" in html and 'id="site-verdict"' not in html
    assert 'aria-current="page">Dashboard</a>' in html


@pytest.mark.browser
def test_the_dashboard_in_a_browser_after_the_demo_traffic(
    server: ServerProcess, redis_url: str
) -> None:
    """The demo's synthetic visitors (a site-wide holdout of 10%, the demo's campaigns) through
    the real server; the dashboard in Chromium shows the tool against the holdout as the
    report computes it, and every campaign."""
    site = add_site(redis_url, origins=["*"], holdout=DEMO_HOLDOUT)
    examples = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())

    async def prepare() -> None:
        client = Redis.from_url(redis_url)
        try:
            await CampaignStore(client, KEYS).import_many(site, examples, author="test")
        finally:
            await client.aclose()

    run(prepare())
    result = run(traffic.send_traffic(server.url, redis_url, "auto", KEYS.prefix, site, 900))
    assert result is not None and not result.errors and result.visitors == 900

    async def expected() -> Any:
        client = Redis.from_url(redis_url)
        try:
            record = await SiteRegistry(client, KEYS).get(site)
            assert record is not None
            report, _, _ = await site_report.site_experiment(client, KEYS, record, time.time())
            return report
        finally:
            await client.aclose()

    report = run(expected())
    holdout, tool = report.variants
    held = sum(1 for o in result.outcomes if o.arm == SITE_HOLDOUT)
    assert holdout.exposures == held and holdout.exposures + tool.exposures == 900
    with signed_in_page(server, make_user(redis_url, "viewer")) as (page, _):
        page.goto(f"{server.url}/admin/sites/{site}/dashboard")
        verdict = page.locator("#site-verdict")
        assert verdict.get_attribute("data-verdict") == report.verdict
        assert verdict.inner_text().strip() == report.headline
        table = page.get_by_role("table", name="The tool against the site-wide holdout")
        visitors = table.get_by_role("row").filter(has_text="Visitors").first
        assert visitors.inner_text().split("\t")[1:] == [
            f"{holdout.exposures:,}",
            f"{tool.exposures:,}",
        ]
        campaigns = page.locator("#campaigns")
        for campaign in examples:
            expect(campaigns.get_by_role("link", name=campaign["name"])).to_be_visible()
        page.get_by_label("Period", exact=True).select_option("30")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/dashboard?days=30")
        assert page.get_by_label("Period", exact=True).input_value() == "30"
        today = datetime.now(UTC).date()
        first = (today - timedelta(days=29)).isoformat()
        expect(page.get_by_text(f"Days {first} to {today.isoformat()} (UTC)")).to_be_visible()
        shot(page, "dashboard", full_page=True)


def test_the_site_wide_headline_speaks_of_the_tool_in_every_verdict() -> None:
    split = {"holdout": 0.1, "tool": 0.9}
    cases = {
        "winner": (2000, 100, 18000, 1300),
        "worse": (2000, 150, 18000, 700),
        "no_difference": (2000, 100, 18000, 900),
        "collecting": (20, 1, 180, 10),
    }
    for verdict, (n_h, c_h, n_t, c_t) in cases.items():
        counts = {"holdout": VariantCounts("holdout", n_h, c_h, 40.0 * c_h, 1600.0 * c_h),
                  "tool": VariantCounts("tool", n_t, c_t, 40.0 * c_t, 1600.0 * c_t)}  # fmt: skip
        report = experiment_report("site", counts, "holdout", split)
        assert report.verdict == verdict
        said = site_report.site_headline(report)
        assert "variant" not in said, said
        if verdict == "winner":
            assert said.startswith("The tool adds buyers: +") and "site-wide holdout" in said
        elif verdict == "worse":
            assert said.startswith("Visitors with the tool buy less than the site-wide holdout")
        elif verdict == "no_difference":
            assert said.startswith("No difference from the site-wide holdout shown yet.")
        else:
            assert said == report.headline and said.startswith("Too early to call")
