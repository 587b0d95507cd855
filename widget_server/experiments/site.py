"""The site's week in one document: what the whole tool added against the site-wide holdout,
and the campaign and email-flow reports it summarises.

The site-wide experiment compares every visitor who may see offers and messages (the ``tool``
arm) with the site-wide holdout, who see none (``lua/offer_visit.lua`` at each visit; orders
within :data:`~widget_server.offers.engine.SITE_ATTRIBUTION_DAYS` of a visit, through
``lua/offer_attribute.lua``). It is judged like a campaign, by the always-valid rule, with
revenue per visitor capped at the 99th percentile of the holdout's buyers. Without a holdout
there is no comparison: campaigns overlap (one visitor may be in several), so their
incremental revenues are not added up.

The campaign and flow figures are their own reports' (:func:`.reports.campaign_report`,
:func:`.reports.flow_report`) over the same days, unchanged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from ..mail.flows import MailConfig
from ..offers.assign import HOLDOUT
from ..offers.campaigns import Campaign
from ..offers.engine import SITE_ATTRIBUTION_DAYS, TOOL
from ..store.keys import Keys
from ..store.replies import reply_text
from ..store.sites import Site
from . import reports
from .buyers import capped_series, parse_buyers
from .stats import ExperimentSettings, Report, expected_split, experiment_report

PERIODS = (7, 30, 90)
# The activity counters of the site-wide experiment's days: (metric, arm).
_ACTIVITY = {("orders", TOOL), ("orders", HOLDOUT), ("revenue", TOOL), ("revenue", HOLDOUT),
             ("influenced_orders", ""), ("influenced_revenue", "")}  # fmt: skip
_CAP_PERCENTILE = 99.0


def period_days(site: Site, now: float, days: int) -> list[str]:
    """The last ``days`` day keys up to today in the site's time zone, oldest first."""
    today = datetime.fromtimestamp(now, ZoneInfo(site.timezone)).date()
    return [(today - timedelta(days=n)).strftime("%Y%m%d") for n in range(days - 1, -1, -1)]


def experiment_days(site: Site, now: float) -> list[str]:
    """The site-wide experiment's days: from its version's start to today (at most 400, as
    long as its counters are kept)."""
    zone = ZoneInfo(site.timezone)
    today = datetime.fromtimestamp(now, zone).date()
    start = datetime.fromtimestamp(site.holdout_started or site.created or now, zone).date()
    count = min(400, max(1, (today - start).days + 1))
    return [(today - timedelta(days=n)).strftime("%Y%m%d") for n in range(count - 1, -1, -1)]


async def site_experiment(
    redis: Redis, keys: Keys, site: Site, now: float, settings: ExperimentSettings | None = None
) -> tuple[Report | None, reports.Series, str]:
    """The tool against the site-wide holdout since the holdout's version started: the report
    (None without a holdout), its cumulative series and its first day."""
    days = experiment_days(site, now)
    version = site.holdout_version
    async with redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(keys.site_experiment_stats(site.key, day, version))
        pipe.hgetall(keys.site_experiment_buyers(site.key, version))
        *raw_days, raw_buyers = await pipe.execute()
    series = reports.cumulative_series(days, raw_days)
    if site.holdout <= 0:
        return None, series, days[0]
    settings = settings or ExperimentSettings()
    tested, cap = capped_series(
        series, parse_buyers(raw_buyers), HOLDOUT, _CAP_PERCENTILE, settings.min_conversions
    )
    split = expected_split({TOOL: 1.0}, site.holdout)
    report = experiment_report(
        f"site:{site.key}",
        tested[-1][1] if tested else {},
        HOLDOUT,
        split,
        settings,
        history=[counts for _, counts in tested[:-1]],
        revenue_cap=cap,
    )
    return replace(report, headline=site_headline(report)), series, days[0]


def site_headline(report: Report) -> str:
    """The site-wide comparison's conclusion in the dashboard's words (the tool, not a
    variant), by the always-valid rule."""
    tool = report.variants[1] if len(report.variants) > 1 else None
    if report.verdict in ("split_broken", "collecting") or tool is None:
        return report.headline
    change = tool.change or tool.difference
    said = f"{change.estimate * 100:+.1f}%" if tool.change and change else "a difference"
    if report.verdict == "winner":
        return f"The tool adds buyers: {said} buyers per visitor against the site-wide holdout."
    if report.verdict == "worse":
        return (f"Visitors with the tool buy less than the site-wide holdout ({said} buyers per"
                " visitor): look at what the campaigns show.")  # fmt: skip
    return ("No difference from the site-wide holdout shown yet. Keep it running: with the"
            " always-valid rule you may look any day.")  # fmt: skip


async def site_summary(
    redis: Redis,
    keys: Keys,
    site: Site,
    campaigns: Sequence[Campaign],
    flows: MailConfig,
    now: float,
    days: int = 7,
) -> dict[str, Any]:
    """The dashboard's document: the period's activity, the site-wide experiment, and every
    campaign's and flow's own report over the period."""
    window = period_days(site, now, days)
    async with redis.pipeline(transaction=False) as pipe:
        for day in window:
            pipe.hgetall(keys.site_experiment_stats(site.key, day, site.holdout_version))
        raw_days = await pipe.execute()
    reached = int(await redis.pfcount(*(keys.site_reached(site.key, day) for day in window)))
    activity = {"reached": reached, "orders": 0, "revenue": 0.0, "influenced_orders": 0,
                "influenced_revenue": 0.0}  # fmt: skip
    for raw in raw_days:
        for key, value in raw.items():
            metric, _, arm = reply_text(key).partition(":")
            number = float(reply_text(value))
            if (metric, arm) in _ACTIVITY:
                activity[metric] += number
    activity["orders"] = int(activity["orders"])
    activity["influenced_orders"] = int(activity["influenced_orders"])
    report, series, since = await site_experiment(redis, keys, site, now)
    campaign_docs = [
        await reports.campaign_report(redis, keys, site.key, c, now, days) for c in campaigns
    ]
    flow_docs = [
        await reports.flow_report(redis, keys, site.key, flow, now, days) for flow in flows.flows
    ]
    shown = sum(row["impressions"] for doc in campaign_docs for row in doc["report"]["variants"])
    best, worst = ranked(campaign_docs)
    return {
        "site": site.key,
        "generated_at": now,
        "period": {"days": days, "from": window[0], "to": window[-1]},
        "time_zone": site.timezone,
        "activity": {**activity, "offers_shown": shown},
        "attribution_days": SITE_ATTRIBUTION_DAYS,
        "holdout": site.holdout,
        "experiment": None if report is None else reports.plain(report),
        "experiment_since": since,
        "experiment_series": reports.series_json(series),
        "campaigns": campaign_docs,
        "flows": flow_docs,
        "best": best,
        "worst": worst,
    }


def ranked(campaign_docs: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The best and the worst campaign by their rule's change in conversion against their
    control (the best treatment's), among those whose rule has spoken; one campaign is only
    the best."""
    effects = []
    for doc in campaign_docs:
        report = doc["report"]
        row = best_arm(report)
        if row is not None and report["verdict"] in ("winner", "worse", "no_difference"):
            effects.append((row["difference"]["estimate"], doc["campaign"]))
    if not effects:
        return None, None
    effects.sort()
    best = effects[-1][1]
    worst = effects[0][1] if len(effects) > 1 else None
    return best, worst


def best_arm(report: dict[str, Any]) -> dict[str, Any] | None:
    """A report's treatment with the largest change in conversion by its rule, or None
    before its rule may speak (or without a treatment)."""
    rows = [row for row in report["variants"][1:] if row.get("difference")]
    return max(rows, key=lambda row: row["difference"]["estimate"], default=None)


CSV_COLUMNS = ("kind", "name", "control", "arm", "exposures", "impressions", "conversions",
               "revenue", "verdict", "change", "change_low", "change_high",
               "revenue_difference", "revenue_difference_low", "revenue_difference_high",
               "incremental_revenue")  # fmt: skip


def summary_csv(document: dict[str, Any]) -> str:
    """One row per arm: the site-wide experiment, every campaign, every flow; the decision's
    figures as their reports give them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if document["experiment"] is not None:
        rows.append(("site", document["site"], document["experiment"]))
    rows += [("campaign", doc["campaign"], doc["report"]) for doc in document["campaigns"]]
    rows += [("flow", doc["flow"], doc["report"]) for doc in document["flows"]]
    for kind, name, report in rows:
        for arm in report["variants"]:
            change = arm.get("change") or arm.get("difference")
            money = arm.get("revenue_decision")
            incremental = None
            if money is not None and report["control"] == HOLDOUT:
                incremental = money["estimate"] * arm["exposures"]
            writer.writerow([
                kind, name, report["control"], arm["variant"], arm["exposures"],
                arm["impressions"], arm["conversions"], _cell(arm["revenue"]), report["verdict"],
                *_triple(change), *_triple(money), _cell(incremental),
            ])  # fmt: skip
    return out.getvalue()


def _triple(interval: dict[str, float] | None) -> list[str]:
    if interval is None:
        return ["", "", ""]
    return [_cell(interval["estimate"]), _cell(interval["low"]), _cell(interval["high"])]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"
