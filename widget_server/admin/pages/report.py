"""A campaign's A/B report: the numbers in plain language, cumulative charts, CSV and JSON exports,
earlier (closed) experiments, and declaring a winner."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ...experiments import reports
from ...offers.assign import HOLDOUT
from ...offers.campaigns import Campaign, CampaignInvalid
from ...store.sites import Site
from ..charts import Chart, line_chart
from ..guard import Admin, Guard
from ..web import format_money, format_share, redirect
from .campaigns import campaign_or_none, store
from .sites import not_found, site_or_none

DEFAULT_DAYS = 90
MAX_DAYS = 366


def routes(guard: Guard) -> list[BaseRoute]:
    page = "/sites/{site}/campaigns/{campaign}/report"
    api = "/api/sites/{site}/campaigns/{campaign}/report"
    return [
        Route(page, guard(report_page)),
        Route(page + "/winner", guard(declare_winner, "editor"), methods=["POST"]),
        Route(api + ".json", guard(report_json)),
        Route(api + ".csv", guard(report_csv)),
    ]


async def _experiment(admin: Admin) -> tuple[Site, Campaign, Campaign] | Response:
    """The site, the current campaign, and the campaign of the experiment version asked for."""
    site = await site_or_none(admin)
    current = await campaign_or_none(admin, site) if site else None
    if site is None or current is None:
        return not_found(admin, "campaign")
    raw = admin.request.query_params.get("version", "")
    if not raw:
        return site, current, current
    chosen = None
    if raw.isdigit() and len(raw) < 9:
        chosen = await store(admin).experiment(site.key, current.id, int(raw))
    if chosen is None:
        return admin.refuse(404, f"{current.name} has no experiment version {raw[:12]}.")
    return site, current, chosen


def _days(admin: Admin) -> int:
    raw = admin.request.query_params.get("days", "")
    return min(int(raw), MAX_DAYS) if raw.isdigit() and int(raw) > 0 else DEFAULT_DAYS


async def _document(admin: Admin, site: Site, campaign: Campaign) -> dict[str, Any]:
    services = admin.services
    return await reports.campaign_report(
        services.redis, services.keys, site.key, campaign, time.time(), _days(admin)
    )


def charts(document: dict[str, Any]) -> list[Chart]:
    """Cumulative conversion rate and revenue per exposed visitor, one line per arm."""
    arms = [row["variant"] for row in document["report"]["variants"]]
    series = document["series"]
    if not series:
        return []
    days = [point["day"] for point in series]

    def values(metric: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for arm in arms:
            counts = [point["variants"].get(arm, {}) for point in series]
            out[arm] = [
                c.get(metric, 0.0) / c["exposures"] if c.get("exposures") else 0.0 for c in counts
            ]
        return out

    return [
        line_chart(
            "chart-conversion",
            "Conversion rate",
            days,
            values("conversions"),
            lambda v: format_share(v),
        ),
        line_chart(
            "chart-revenue",
            "Revenue per exposed visitor",
            days,
            values("revenue"),
            lambda v: format_money(v),
        ),
    ]


def sentences(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's sentences (the headline first), each with how it should stand out: ``warn``
    for too little data."""
    too_early = {f"Not enough data yet: {s}." for s in report["health"]["shortfalls"]}
    return [(text, "warn" if text in too_early else "") for text in report["sentences"]]


async def report_page(admin: Admin) -> Response:
    found = await _experiment(admin)
    if isinstance(found, Response):
        return found
    site, current, campaign = found
    document = await _document(admin, site, campaign)
    closed = campaign.experiment_version != current.experiment_version
    return admin.page(
        "report.html",
        site=site,
        campaign=current,
        experiment=campaign,
        closed=closed,
        versions=await store(admin).experiment_versions(site.key, current.id),
        document=document,
        report=document["report"],
        sentences=sentences(document["report"]),
        charts=charts(document),
        can_declare=admin.can_edit and not closed and _arms(current) > 1,
        days=_days(admin),
        query=f"?version={campaign.experiment_version}",
    )


def _arms(campaign: Campaign) -> int:
    return len(campaign.variants) + (1 if campaign.holdout > 0 else 0)


def _filename(site: Site, campaign: Campaign, extension: str) -> str:
    return f"{site.key}-{campaign.id}-v{campaign.experiment_version}-report.{extension}"


async def report_json(admin: Admin) -> Response:
    found = await _experiment(admin)
    if isinstance(found, Response):
        return found
    site, _, campaign = found
    document = await _document(admin, site, campaign)
    disposition = f'attachment; filename="{_filename(site, campaign, "json")}"'
    return JSONResponse(document, headers={"Content-Disposition": disposition})


async def report_csv(admin: Admin) -> Response:
    found = await _experiment(admin)
    if isinstance(found, Response):
        return found
    site, _, campaign = found
    services = admin.services
    report, _ = await reports.build_report(
        services.redis, services.keys, site.key, campaign, time.time(), _days(admin)
    )
    disposition = f'attachment; filename="{_filename(site, campaign, "csv")}"'
    return PlainTextResponse(
        reports.report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )


async def declare_winner(admin: Admin) -> Response:
    """First POST: a confirmation page; the second (``confirm=yes``) declares the winner."""
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    variant = admin.form.get("variant")
    winner = campaign.variant(variant) if variant != HOLDOUT else None
    if winner is None or _arms(campaign) < 2:
        return admin.refuse(400, "Choose one of the campaign's variants as the winner.")
    if admin.form.get("confirm") != "yes":
        return admin.page("winner_confirm.html", site=site, campaign=campaign, variant=winner)
    try:
        saved = await store(admin).declare_winner(
            site.key, campaign.id, winner.key, author=admin.user.email
        )
    except CampaignInvalid as exc:
        return admin.refuse(400, "; ".join(e.message for e in exc.errors))
    await admin.record(
        "campaign.declare_winner",
        campaign.id,
        site=site.key,
        before=json.loads(campaign.model_dump_json()),
        after=json.loads(saved.model_dump_json()),
    )
    path = f"/sites/{site.key}/campaigns/{campaign.id}/report?version={campaign.experiment_version}"
    return redirect(path, "winner")
