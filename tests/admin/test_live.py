"""The admin's live view, decision trace and A/B report over real HTTP against a real server with
real WebSocket visitors, and the three pages in a real Chromium (with the screenshots)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import markupsafe
import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright
from redis.asyncio import Redis

from widget_server.admin import explain
from widget_server.admin.charts import line_chart, nice_step
from widget_server.admin.pages.live import per_minute
from widget_server.experiments import reports
from widget_server.offers.assign import HOLDOUT, assign
from widget_server.offers.campaign_store import CampaignStore
from widget_server.offers.campaigns import parse_campaign
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry, new_site

from ..experiments.test_stats import VERDICT_CASES
from ..support import (
    NO_SITE_LIMITS,
    Client,
    ServerProcess,
    add_site,
    message_campaign,
    new_visitor,
    save_campaigns,
)
from .test_admin import XSS, AdminClient, make_user, signed_in
from .test_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, SCREENSHOTS, Watched
from .test_browser import sign_in as browser_sign_in

KEYS = Keys()
EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
LIVE = {"exit_intent": [], "live": True}


def latest_audit(r: redis.Redis, site: str) -> dict[str, Any]:
    """The newest audit entry about ``site`` (other tests' entries may come after it)."""
    for raw in r.lrange(KEYS.admin_audit(), 0, 200):
        entry: dict[str, Any] = json.loads(raw)
        if entry.get("site") == site:
            return entry
    return {}


def poll(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def number(html: str, element_id: str) -> int:
    match = re.search(rf'id="{element_id}">(\d+)<', html)
    assert match, element_id
    return int(match.group(1))


def first_event(client: AdminClient, path: str) -> tuple[httpx.Response, dict[str, Any]]:
    """Open an event stream and return its response and the first JSON snapshot."""
    with client.http.stream("GET", path) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                return response, json.loads(line[6:])
    raise AssertionError("the stream ended without data")


def off_loop(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function`` on another thread (this one may run Playwright's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def run(coroutine: Any) -> Any:
    return off_loop(asyncio.run, coroutine)


def offer_of(c: Client, campaign: str) -> dict[str, Any]:
    """The next offer of ``campaign`` (earlier messages, other offers included, are skipped)."""
    deadline = time.monotonic() + 5
    while True:
        offer: dict[str, Any] = c.recv_until("offer", max(0.01, deadline - time.monotonic()))
        if offer["offer"]["campaign"] == campaign:
            return offer["offer"]


def drive_visitors(server: ServerProcess, site: str, count: int) -> int:
    """Visitors who qualify and leave; every third buys. Returns the number of buyers."""
    buyers = 0
    for i in range(count):
        with Client(server.ws_url) as c:
            c.hello(site, new_visitor())
            c.answer(c.send(dict(EXIT)))
            if i % 3 == 0:
                buyers += 1
                c.event("purchase", order_id=f"o{i}", value=20.0 + i)
    return buyers


# --- pure parts ----------------------------------------------------------------------------------


def test_reasons_signals_and_outcomes_in_words() -> None:
    assert explain.reason_text("capped_session", "1 per session") == (
        "already shown in this session (cap: 1 per session)"
    )
    assert explain.reason_text("not_active", "") == "not active"
    assert explain.reason_text("something_new", "x") == "something new (x)"
    assert set(explain.REASONS) >= {"targeting_miss", "holdout", "pool_exhausted", "global_cap"}
    names = {"cart": "Cart saver"}
    assert explain.signal_text({"type": "hesitation", "seconds": 20.0, "page_type": "cart"}) == (
        "Hesitation: idle 20 s on a cart page"
    )
    assert explain.signal_text({"type": "scroll_depth", "percent": 60}) == (
        "Scrolled 60% of the page"
    )
    assert explain.signal_text({"type": "time_on_page", "seconds": 20}) == "20 s on the page"
    assert explain.signal_text({"type": "live", "campaign": "cart"}, names) == (
        "Live broadcast of Cart saver"
    )
    entry = {"chosen": "cart.holdout", "shown": None, "rejected": [
        {"campaign": "cart", "reason": "holdout", "detail": "control group"},
        {"campaign": "gone", "reason": "targeting_miss", "detail": "utm_source is 'news'"},
    ]}  # fmt: skip
    assert explain.outcome_text(entry, names) == (
        "Nothing shown: the visitor is in the holdout of Cart saver"
    )
    lines = explain.campaign_lines(entry, names)
    assert [(line.name, line.shown) for line in lines] == [("Cart saver", False), ("gone", False)]
    assert lines[1].outcome == "the visitor is not in its audience (failed: utm_source is 'news')"


def test_per_minute_counts_slide_over_the_last_60_seconds() -> None:
    minutes = [{"minute": 600, "events": 60, "signals": 6, "offers": 2},
               {"minute": 660, "events": 10, "signals": 0, "offers": 1}]  # fmt: skip
    assert per_minute(minutes, now=660) == {"events": 70, "signals": 6, "offers": 3}
    assert per_minute(minutes, now=690) == {"events": 40, "signals": 3, "offers": 2}
    assert per_minute(minutes[-1:], now=719) == {"events": 10, "signals": 0, "offers": 1}
    assert per_minute([], now=0) == {"events": 0, "signals": 0, "offers": 0}


def test_charts_scale_and_describe_their_lines() -> None:
    assert [nice_step(x) for x in (0.0, 0.11, 4.4, 130.0)] == [1.0, 0.05, 2.0, 50.0]
    chart = line_chart(
        "c", "Conversion rate", ["20250101", "20250102", "20250103"],
        {"holdout": [0.1, 0.1, 0.1], "a": [0.0, 0.2, 0.15]}, lambda v: f"{v:.0%}",
    )  # fmt: skip
    assert chart.desc == (
        "Conversion rate, cumulative by day from 2025-01-01 to 2025-01-03."
        " On the last day: holdout 10%; a 15%."
    )
    assert [t.label for t in chart.y_ticks] == ["0%", "5%", "10%", "15%", "20%"]
    ticks = [(t.label, t.anchor) for t in chart.x_ticks]
    assert ticks == [("01-01", "start"), ("01-02", "middle"), ("01-03", "end")]
    holdout, a = chart.lines
    assert holdout.dash and holdout.color != a.color and len(a.dots) == 3
    first_y = float(a.points.split()[0].split(",")[1])
    assert first_y == chart.bottom  # 0% sits on the baseline
    single = line_chart("d", "Revenue", ["20250101"], {"a": [0.0]}, str)
    assert single.lines[0].points == f"{(chart.left + chart.right) / 2:.1f},{chart.bottom:.1f}"


def test_keys_find_the_visitor_of_a_scanned_session_key() -> None:
    keys = Keys("pfx")
    key = keys.session("shop", "v1234567", "s1234567")
    assert keys.visitor_in("shop", key) == "v1234567"
    assert keys.visitor_in("shop2", key) is None and keys.visitor_in("shop", "pfx:x") is None
    assert keys.rate("shop", "202501011200") == "pfx:rate:shop:202501011200"


# --- the live view --------------------------------------------------------------------------------


def test_live_view_shows_connected_visitors_and_streams_counts(
    server: ServerProcess, redis_url: str
) -> None:
    site = add_site(redis_url)
    viewer = signed_in(server, redis_url, "viewer")
    page = viewer.get(f"/admin/sites/{site}/live")
    assert page.status_code == 200
    assert number(page.text, "live-connected") == 0
    assert "No decisions yet" in page.text and "No campaign can go live" in page.text
    assert 'src="/admin/static/live.js"' in page.text and "<script>" not in page.text

    with Client(server.ws_url) as visitor:
        visitor.hello(site, new_visitor(), page={"url": "https://shop.test/", "page_type": "home"})
        for n in range(4):
            assert visitor.event("page_view", url=f"https://shop.test/p{n}")["type"] == "ack"
        visitor.answer(visitor.send(dict(EXIT)))

        def counted() -> dict[str, Any] | None:
            _, data = first_event(viewer, f"/admin/sites/{site}/live/stream")
            events = sum(minute["events"] for minute in data["minutes"])
            signals = sum(minute["signals"] for minute in data["minutes"])
            return data if (events, signals) == (4, 1) else None

        data = poll(counted, what="the flushed counts")  # every few seconds, not per event
        assert data["connected"] == 1 and data["per_minute"]["events"] >= 3
        assert data["decisions"] == [] and data["running"] == []
        html = viewer.get(f"/admin/sites/{site}/live").text
        assert number(html, "live-connected") == 1 and number(html, "live-events") >= 3
        assert number(html, "live-signals") == 1
        response, _ = first_event(viewer, f"/admin/sites/{site}/live/stream")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "script-src 'self'" in response.headers["content-security-policy"]
    poll(lambda: first_event(viewer, f"/admin/sites/{site}/live/stream")[1]["connected"] == 0,
         what="the visitor to leave")  # fmt: skip
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(f"/admin/sites/{site}/live/stream").status_code == 303


def test_a_live_offer_started_from_the_page_reaches_connected_visitors(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [
        message_campaign("flash", name="Flash sale", trigger=LIVE),
        message_campaign("later", name="Later sale", trigger=LIVE, status="paused"),
        message_campaign("exit", name="Exit offer"),
    ])  # fmt: skip
    editor = signed_in(server, redis_url, "editor")
    viewer = signed_in(server, redis_url, "viewer")
    page = editor.get(f"/admin/sites/{site}/live").text
    assert '<option value="flash">Flash sale</option>' in page
    assert 'value="later"' not in page and 'value="exit"' not in page
    assert "Later sale</a> (paused)" in page
    assert 'id="live-start"' not in viewer.get(f"/admin/sites/{site}/live").text

    with Client(server.ws_url) as visitor:
        visitor_id = new_visitor()
        visitor.hello(site, visitor_id)
        start = f"/admin/sites/{site}/live/start"
        assert viewer.post(start, {"campaign": "flash"}).status_code == 403
        refused = editor.post(start, {"campaign": "later"})
        assert refused.status_code == 400 and "cannot go live" in refused.text
        assert editor.post(start, {"campaign": "flash", "minutes": "0"}).status_code == 400
        started = editor.post(start, {"campaign": "flash", "minutes": "5"})
        assert started.status_code == 303
        assert started.headers["location"] == f"/admin/sites/{site}/live?notice=live_started"
        offer = visitor.recv_until("offer")["offer"]
        assert offer["campaign"] == "flash" and offer["headline"] == "Offer flash"

        def offered() -> str | None:
            html = editor.get(f"/admin/sites/{site}/live?notice=live_started").text
            return html if number(html, "live-offers") >= 1 else None

        html = poll(offered, what="the offer count")
        assert "The live offer is going out" in html and "Stop Flash sale" in html
        assert "Live broadcast of Flash sale" in html and "Sent Flash sale (variant a)" in html
        assert "Showed Flash sale" not in html  # not painted yet
        assert f"visitors?q={visitor_id}#session-" in html
        visitor.painted(offer)
        html = editor.get(f"/admin/sites/{site}/live").text
        assert "The widget painted the offer sent" in html
        assert "Showed Flash sale (variant a)" in html
    entry = latest_audit(r, site)
    assert entry["action"] == "campaign.live_start" and entry["after"]["minutes"] == 5
    stopped = editor.post(f"/admin/sites/{site}/live/stop", {"campaign": "flash"})
    assert stopped.headers["location"].endswith("notice=live_stopped")
    assert r.hgetall(KEYS.live_offers(site)) == {}
    assert latest_audit(r, site)["action"] == "campaign.live_stop"


# --- the decision trace --------------------------------------------------------------------------


def test_trace_finds_a_visitor_by_id_session_and_email_and_explains_each_campaign(
    server: ServerProcess, redis_url: str
) -> None:
    site = add_site(redis_url, frequency=NO_SITE_LIMITS)  # two offers in one visit
    caps = {"per_session": 1}
    save_campaigns(redis_url, site, [
        message_campaign("first", name="First offer", priority=5, caps=caps),
        message_campaign("second", name="Second offer", priority=1, caps=caps),
        message_campaign("resting", name="Resting offer", status="paused"),
    ])  # fmt: skip
    visitor_id = new_visitor()
    with Client(server.ws_url) as c:
        cart_page = {"url": "https://shop.test/cart", "page_type": "cart", "title": "Your cart"}
        session = c.hello(site, visitor_id, page=cart_page)["session"]
        c.event("cart_add", item={"id": "SKU-1", "quantity": 2, "price": 15.5, "title": "Mug"})
        c.event("identify", email="Ada@Example.test", consent=True, source="widget",
                wording="2026-10-newsletter")  # fmt: skip
        c.answer(c.send(dict(EXIT)))
        first = c.recv_until("offer")["offer"]
        assert first["campaign"] == "first"
        c.painted(first)
        c.answer(c.send(dict(EXIT)))
        second = c.recv_until("offer")["offer"]
        assert second["campaign"] == "second"
        c.painted(second)
    viewer = signed_in(server, redis_url, "viewer")
    empty = viewer.get(f"/admin/sites/{site}/visitors")
    assert empty.status_code == 200 and "Find a visitor" in empty.text

    by_id = viewer.get(f"/admin/sites/{site}/visitors", params={"q": visitor_id})
    assert by_id.status_code == 200 and "Found by visitor id" in by_id.text
    text = by_id.text
    assert "already shown in this session (cap: 1 per session)" in text.lower()
    assert "not active (status: paused)" in text.lower()
    assert "Showed Second offer (variant a)" in text and "Showed First offer (variant a)" in text
    assert "qualified, but a campaign with a higher priority came first" in text.lower()
    assert "Exit intent: the pointer left through the top of the window" in text
    assert "Ada@Example.test (email marketing: yes)" in text
    record = re.search(r'id="consent-record">(.*?)</dd>', text, re.S)
    assert record and "from widget, wording “2026-10-newsletter”" in record.group(1)
    assert "2 items, 31.00" in text and "2 \u00d7 Mug at 15.50" in text
    assert "shown 2, clicked 0, closed 0" in text and "Your cart" in text
    assert f'id="session-{session}"' in text

    by_email = viewer.get(f"/admin/sites/{site}/visitors", params={"q": "ADA@example.test"})
    assert "Found by email" in by_email.text and visitor_id in by_email.text
    by_session = viewer.get(f"/admin/sites/{site}/visitors", params={"q": session})
    assert "Found by session id" in by_session.text and "searched for" in by_session.text
    missing = viewer.get(f"/admin/sites/{site}/visitors", params={"q": XSS[0]})
    assert missing.status_code == 404 and "No visitor found" in missing.text
    assert XSS[0] not in missing.text and "&lt;script&gt;" in missing.text


def test_a_session_without_decisions_is_found_by_its_id(
    server: ServerProcess, redis_url: str
) -> None:
    site = add_site(redis_url)
    visitor_id = new_visitor()
    with Client(server.ws_url) as c:
        session = c.hello(site, visitor_id)["session"]
    viewer = signed_in(server, redis_url, "viewer")
    found = viewer.get(f"/admin/sites/{site}/visitors", params={"q": session})
    assert found.status_code == 200 and "Found by session id" in found.text
    assert visitor_id in found.text and "No decisions in this session" in found.text


# --- the A/B report ------------------------------------------------------------------------------


def expected_report(redis_url: str, site: str, version: int | None = None) -> tuple[str, Any]:
    async def build() -> tuple[str, Any]:
        client = Redis.from_url(redis_url)
        try:
            store = CampaignStore(client, KEYS)
            campaign = await store.get(site, "ab")
            assert campaign is not None
            if version is not None:
                campaign = await store.experiment(site, "ab", version)
                assert campaign is not None
            now = time.time()
            report, _ = await reports.build_report(client, KEYS, site, campaign, now)
            document = await reports.campaign_report(client, KEYS, site, campaign, now)
            return reports.report_csv(report), document
        finally:
            await client.aclose()

    return run(build())  # type: ignore[no-any-return]


def without_time(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "generated_at"}


def test_report_page_exports_and_declaring_a_winner(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign("ab", name=XSS[0], holdout=0.2, variants=[
        {"key": "a", "offer": {"kind": "message", "headline": "A"}},
        {"key": "b", "offer": {"kind": "message", "headline": "B"}},
    ])])  # fmt: skip
    viewer = signed_in(server, redis_url, "viewer")
    base = f"/admin/sites/{site}/campaigns/ab/report"
    api = f"/admin/api/sites/{site}/campaigns/ab/report"
    empty = viewer.get(base)
    assert empty.status_code == 200 and "No visitors in this experiment yet" in empty.text
    buyers = drive_visitors(server, site, 30)

    page = viewer.get(base)
    assert page.status_code == 200
    html = page.text
    assert XSS[0] not in html and "A/B report: &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg viewBox=") == 2 and html.count('role="img"') == 2
    assert '<title id="chart-conversion-title">Conversion rate</title>' in html
    assert 'id="chart-revenue-desc">Revenue per exposed visitor, cumulative by day' in html
    assert "Not enough data yet" in html and 'class="warn"' in html
    assert 'id="min-sample"' in html and "Sample ratio mismatch" not in html
    assert "Live offers during this experiment" not in html  # none ran
    assert "Editors and owners can declare a winner." in html and "winner-form" not in html
    csv_text, document = expected_report(redis_url, site)
    for sentence in document["report"]["sentences"]:
        assert str(markupsafe.escape(sentence)) in html
    rows = {row["variant"]: row for row in document["report"]["variants"]}
    assert sum(row["exposures"] for row in rows.values()) == 30
    assert sum(row["conversions"] for row in rows.values()) == buyers

    exported = viewer.get(api + ".csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    assert exported.text == csv_text
    assert without_time(viewer.get(api + ".json").json()) == without_time(document)
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(api + ".csv").status_code == 303

    # A viewer may look but not decide; an editor decides after confirming.
    assert viewer.post(base + "/winner", {"variant": "b", "confirm": "yes"}).status_code == 403
    editor = signed_in(server, redis_url, "editor")
    assert 'id="winner-form"' in editor.get(base).text
    confirm = editor.post(base + "/winner", {"variant": "b"})
    assert confirm.status_code == 200 and "Yes, send all traffic to b" in confirm.text
    assert "The holdout (20% of qualified visitors, who saw nothing) ends." in confirm.text
    assert json.loads(r.hget(KEYS.campaigns(site), "ab") or "{}")["experiment_version"] == 1
    holdout = editor.post(base + "/winner", {"variant": "holdout", "confirm": "yes"})
    assert holdout.status_code == 400
    done = editor.post(base + "/winner", {"variant": "b", "confirm": "yes"})
    assert done.status_code == 303
    assert done.headers["location"] == base + "?version=1&notice=winner"
    stored = json.loads(r.hget(KEYS.campaigns(site), "ab") or "{}")
    assert [v["key"] for v in stored["variants"]] == ["b"] and stored["experiment_version"] == 2
    entry = latest_audit(r, site)
    assert entry["action"] == "campaign.declare_winner" and entry["target"] == "ab"
    assert entry["before"]["experiment_version"] == 1 and entry["after"]["holdout"] == 0
    assert "campaign.declare_winner" in editor.get("/admin/audit").text

    closed = editor.get(done.headers["location"]).text
    assert "The winner was declared" in closed and "This experiment is closed" in closed
    assert '<option value="1" selected>1 (closed)</option>' in closed
    assert '<option value="2">2 (running)</option>' in closed and "winner-form" not in closed
    closed_csv, closed_document = expected_report(redis_url, site, version=1)
    assert editor.get(api + ".csv?version=1").text == closed_csv
    closed_json = editor.get(api + ".json?version=1").json()
    assert without_time(closed_json) == without_time(closed_document)
    assert "No visitors in this experiment yet" in editor.get(base).text
    assert editor.get(base + "?version=7").status_code == 404


def seed_experiment(
    r: redis.Redis, site: str, campaign: str, seed: int, covariates: bool = True
) -> float:
    """Two arms of 1,500 visitors whose conversion follows their cart value at exposure, with
    one 5,000 order in b; the stats of today and the buyers' records, as the scripts keep them.
    Without ``covariates``, none were kept (a version older than them).
    Returns the 99th percentile of a's buyers' revenue (the cap)."""
    import random

    rng = random.Random(seed)
    today = datetime.now(UTC).strftime("%Y%m%d")
    fields: dict[str, float] = {}
    records: dict[str, str] = {}
    control: list[float] = []
    for arm, lift in (("a", 0.0), ("b", 0.02)):
        for n in range(1500):
            cart = rng.choice([0.0, 0.0, 20.0, 45.0, 90.0])
            x = (cart, 1.0 if cart else 0.0, float(rng.randint(1, 8)), 0.0)
            add = {"exposures": 1.0, "xn": 1.0}
            for i in range(4):
                add[f"x{i}"] = x[i]
                for j in range(i, 4):
                    add[f"xx{i}_{j}"] = x[i] * x[j]
            if not covariates:
                add = {"exposures": 1.0}
            if rng.random() < 0.03 + cart / 600 + lift:
                value = 5000.0 if (arm, n) == ("b", 7) else round(20 + cart + rng.random() * 40, 2)
                add.update(conversions=1.0, revenue=value, revenue_sq=value * value)
                records[secrets.token_hex(8)] = json.dumps(
                    {
                        "a": arm,
                        "x": ",".join(repr(v) for v in x) if covariates else "",
                        "d": {today: repr(value)},
                    }
                )
                if arm == "a":
                    control.append(value)
            for metric, value in add.items():
                key = f"{metric}:{arm}"
                fields[key] = fields.get(key, 0.0) + value
    r.hset(KEYS.campaign_stats(site, campaign, today), mapping=fields)
    r.hset(KEYS.campaign_buyers(site, campaign), mapping=records)
    ordered = sorted(control)
    h = (len(ordered) - 1) * 0.99
    low = int(h)
    return ordered[low] + (h - low) * (ordered[min(low + 1, len(ordered) - 1)] - ordered[low])


def test_the_report_says_whether_it_is_adjusted_and_capped(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    editor = signed_in(server, redis_url, "editor")
    variants = [{"key": "a", "offer": {"kind": "message", "headline": "A"}},
                {"key": "b", "offer": {"kind": "message", "headline": "B"}}]  # fmt: skip
    site = add_site(redis_url)
    save_campaigns(redis_url, site, [message_campaign("ab", variants=variants)])
    cap = seed_experiment(r, site, "ab", seed=1)
    html = editor.get(f"/admin/sites/{site}/campaigns/ab/report").text
    _, document = expected_report(redis_url, site)
    report = document["report"]
    assert report["adjustment"] == "adjusted" and report["revenue_cap"]["cap"] == pytest.approx(cap)
    assert report["revenue_cap"]["capped"] >= 1  # the 5,000 order, at least
    assert 'data-adjustment="adjusted"' in html
    assert (
        "for what was known of each visitor before the offer (cart value, items in the cart,"
        in html
    )
    snippet = html[html.index('id="revenue-cap"') :][:500]
    assert f"capped at {cap:,.2f}" in snippet and "the 99th percentile of a's" in snippet, snippet
    more = html[html.index('id="more-statistics"') :]
    assert 'id="unadjusted-change"' in more and 'id="unadjusted-revenue"' in more
    decision = html[html.index('id="decision-revenue"') :]
    assert decision.startswith(
        'id="decision-revenue"><th scope="row">Difference per visitor, capped'
    )

    plain = add_site(redis_url)
    unadjusted = {"variance_reduction": False, "revenue_cap_percentile": None}
    save_campaigns(redis_url, plain, [message_campaign("ab", variants=variants, **unadjusted)])
    seed_experiment(r, plain, "ab", seed=1)
    html = editor.get(f"/admin/sites/{plain}/campaigns/ab/report").text
    assert 'data-adjustment="off"' in html and "unadjusted-change" not in html
    assert "Revenue per visitor is not capped (chosen before the test started)" in html

    older = add_site(redis_url)  # adjusted by choice, but its visitors' covariates were not kept
    save_campaigns(redis_url, older, [message_campaign("ab", variants=variants)])
    seed_experiment(r, older, "ab", seed=1, covariates=False)
    html = editor.get(f"/admin/sites/{older}/campaigns/ab/report").text
    assert 'data-adjustment="unadjusted"' in html and "unadjusted-change" not in html
    assert ("but <strong>these figures are unadjusted</strong>: covariates were not kept for"
            " every visitor of this experiment version.") in html  # fmt: skip
    assert f"capped at {cap:,.2f}" in html  # capping needs no covariates


@pytest.mark.parametrize("rule", ["sequential", "fixed_horizon"])
def test_the_report_page_tells_one_story_in_every_verdict(
    server: ServerProcess, redis_url: str, r: redis.Redis, rule: str
) -> None:
    """For each verdict the headline, the winner badge, the decision row's "significant"
    marks and the declare-a-winner section say the same thing, by the experiment's rule; the
    figures that are not the decision sit in the folded "more statistics"."""
    editor = signed_in(server, redis_url, "editor")
    today = datetime.now(UTC).strftime("%Y%m%d")
    for verdict, counts in VERDICT_CASES.items():
        site = add_site(redis_url)
        save_campaigns(redis_url, site, [message_campaign("ab", decision_rule=rule,
            planned_exposures=40_000, variants=[
                {"key": "a", "offer": {"kind": "message", "headline": "A"}},
                {"key": "b", "offer": {"kind": "message", "headline": "B"}}])])  # fmt: skip
        empty = editor.get(f"/admin/sites/{site}/campaigns/ab/report")
        assert empty.status_code == 200 and "No visitors in this experiment yet" in empty.text
        assert ("No variant has won by this experiment's always-valid rule" in empty.text
                if rule == "sequential" else
                "has not reached its planned 40,000 exposures per arm" in empty.text)  # fmt: skip
        r.hset(KEYS.campaign_stats(site, "ab", today), mapping={
            f"{metric}:{arm}": value for arm, c in counts.items()
            for metric, value in (("exposures", c.exposures), ("conversions", c.conversions),
                                  ("revenue", c.revenue), ("revenue_sq", c.revenue_sq))
        })  # fmt: skip
        _, document = expected_report(redis_url, site)
        report = document["report"]
        assert report["verdict"] == verdict, (rule, verdict)
        html = editor.get(f"/admin/sites/{site}/campaigns/ab/report").text
        assert f'id="verdict" data-verdict="{verdict}"' in html
        assert f"<strong>{markupsafe.escape(report['headline'])}</strong>" in html
        badge = '<span class="badge ok">winner</span>'
        advice = html[html.index('id="winner-advice"') :]
        checked = re.findall(r'value="(\w+)" required checked', html)
        start = html.index('id="decision-p"')
        decision_row = html[start : html.index("</tr>", start)]
        if verdict == "winner":
            assert html.count(badge) == 1 and "b " + badge in html
            assert (
                "The always-valid rule picked" in advice
                or "The fixed-horizon rule picked" in advice
            )
            assert checked == ["b"] and decision_row.count("significant") == 1
        else:
            assert badge not in html and checked == [] and "rule picked" not in advice
        if verdict == "worse":
            assert decision_row.count("significant") == 1 and "badge ok" not in decision_row
            assert "(a does better)" in advice
        if verdict in ("no_difference", "collecting", "split_broken"):
            assert "significant" not in decision_row
        if verdict == "split_broken":
            assert "The split looks broken" in html and "The split looks healthy" not in html
        else:
            assert "The split looks healthy" in html
        more = html[html.index('id="more-statistics"') :]
        assert (
            "Chance to beat" in more
            and "Chance to beat" not in html[: html.index('id="more-statistics"')]
        )


# --- in a browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def seed_history(r: redis.Redis, site: str) -> None:
    """Six earlier days of an A/B test, so that the charts have a shape: the experiment
    started a week ago."""
    stored = json.loads(r.hget(KEYS.campaigns(site), "cart-saver") or "{}")
    stored["experiment_started"] = time.time() - 7 * 86_400
    r.hset(KEYS.campaigns(site), "cart-saver", json.dumps(stored))
    today = datetime.now(UTC).date()
    for back in range(6, 0, -1):
        day = (today - timedelta(days=back)).strftime("%Y%m%d")
        n = 40 + back * 3
        r.hset(KEYS.campaign_stats(site, "cart-saver", day), mapping={
            "exposures:holdout": n // 5, "exposures:a": n, "exposures:b": n + 2,
            "impressions:a": n - 3, "impressions:b": n - 2,
            "conversions:holdout": 1, "conversions:a": 3 + back % 2, "conversions:b": 5 + back % 3,
            "revenue:holdout": 38.0, "revenue:a": 131.5, "revenue:b": 236.0,
            "revenue_sq:holdout": 1444.0, "revenue_sq:a": 5900.0, "revenue_sq:b": 11400.0,
        })  # fmt: skip


@pytest.mark.browser
def test_live_trace_and_report_pages_in_a_browser(
    browser: Browser, server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    key = "myshop-" + secrets.token_hex(3)

    async def create_site() -> None:
        client = Redis.from_url(redis_url)
        try:
            site = new_site(key, name="My Shop", origins=["https://shop.test"])
            await SiteRegistry(client, KEYS).save(site)
        finally:
            await client.aclose()

    run(create_site())
    saver = message_campaign("cart-saver", name="Cart saver", holdout=0.1, priority=5,
                             caps={"per_session": 1}, variants=[
        {"key": "a", "offer": {"kind": "message", "headline": "Wait! 10% off your cart"}},
        {"key": "b", "offer": {"kind": "message", "headline": "Free shipping today"}},
    ])  # fmt: skip
    off_loop(save_campaigns, redis_url, key, [
        message_campaign("flash", name="Flash sale: 20% off everything", trigger=LIVE),
        saver,
        message_campaign("welcome", name="Welcome message", status="paused"),
    ])  # fmt: skip
    seed_history(r, key)
    email = off_loop(make_user, redis_url, "editor", f"ada-{secrets.token_hex(3)}@myshop.example")
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    watched = Watched(context)
    page: Page = watched.page
    visitors = [Client(server.ws_url) for _ in range(3)]
    try:
        browser_sign_in(page, server, email)
        # Visitors in the cart saver's experiment, not its holdout (which no live offer reaches).
        in_test = (v for v in iter(new_visitor, "") if assign(parse_campaign(saver), v) != HOLDOUT)
        ids = [next(in_test) for _ in visitors]
        for n, (c, visitor_id) in enumerate(zip(visitors, ids, strict=True)):
            product = {"url": f"https://shop.test/p/{n}", "page_type": "product"}
            c.hello(key, visitor_id, page={**product, "title": f"Linen shirt {n}"})
            c.event("cart_add", item={"id": f"SKU-{n}", "quantity": 1, "price": 24.0,
                                      "title": f"Linen shirt {n}"})  # fmt: skip
            c.answer(c.send(dict(EXIT)))
        page.goto(f"{server.url}/admin/sites/{key}/live")
        page.wait_for_function("() => document.getElementById('live').dataset.updated")
        for c in visitors:  # more activity while the page is open: the stream brings it in
            c.event("page_view", url="https://shop.test/cart", page_type="cart")
        page.wait_for_function(
            "() => Number(document.getElementById('live-events').textContent) >= 5", timeout=30_000
        )
        assert page.locator("#live-connected").inner_text() == "3"
        page.get_by_label("Minutes").fill("30")
        page.get_by_role("button", name="Start the live offer now").click()
        page.wait_for_url("**/live?notice=live_started")
        for c in visitors:
            offer_of(c, "flash")
        feed = page.locator("#decision-feed")
        feed.get_by_text("Live broadcast of Flash sale: 20% off everything").first.wait_for()
        page.wait_for_function(
            "() => Number(document.getElementById('live-offers').textContent) >= 3",
            timeout=30_000,
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "admin-live.png"), full_page=True)

        page.locator(f'#decision-feed a:has-text("{ids[0]}")').first.click()
        page.wait_for_url(f"**/visitors?q={ids[0]}*")
        assert "Found by visitor id" in page.locator("main").inner_text()
        page.get_by_text("Timeline").first.click()
        page.screenshot(path=str(SCREENSHOTS / "admin-trace.png"), full_page=True)
        page.get_by_label("Visitor id, session id or email").fill("nobody@example.test")
        page.get_by_label("Visitor id, session id or email").press("Enter")
        expect(page.get_by_role("heading", name="No visitor found")).to_be_visible()

        page.goto(f"{server.url}/admin/sites/{key}/campaigns/cart-saver")
        tabs = page.get_by_role("navigation", name="Campaign")
        tabs.get_by_role("link", name="A/B report").click()
        assert page.locator("svg[role=img]").count() == 2
        assert page.locator("#chart-conversion polyline").count() == 3
        # The week since the experiment started, today included.
        assert page.locator("details:has-text('The numbers by day') tbody tr").count() == 7
        verdict = page.locator("#verdict")
        assert verdict.get_attribute("data-verdict") == "collecting"  # too little data yet
        more = page.locator("#more-statistics")
        assert not more.get_by_text("Chance to beat").is_visible()  # folded
        more.locator("summary").click()
        expect(more.get_by_text("Chance to beat")).to_be_visible()
        more.locator("summary").click()
        page.screenshot(path=str(SCREENSHOTS / "admin-report.png"), full_page=True)
        page.set_viewport_size(PHONE)
        for path in ("live", f"visitors?q={ids[1]}", "campaigns/cart-saver/report"):
            page.goto(f"{server.url}/admin/sites/{key}/{path}")
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (path, width)
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Skip to the content"
        watched.check()
    finally:
        for c in visitors:
            c.close()
        context.close()
