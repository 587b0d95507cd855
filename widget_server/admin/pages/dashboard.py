"""The site dashboard, the admin's home: what the whole tool added against the site-wide holdout,
the period's activity, every campaign and email flow as their own reports say, a CSV."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ...experiments import site as site_report
from ...store.sites import Site
from ..charts import Chart, line_chart
from ..guard import Admin, Guard
from ..web import format_money, format_share, redirect
from .campaigns import store
from .sites import not_found, site_or_none


def routes(guard: Guard) -> list[BaseRoute]:
    return [
        Route("/", guard(home)),
        Route("/sites/{site}/dashboard", guard(dashboard)),
        Route("/api/sites/{site}/dashboard.csv", guard(dashboard_csv)),
    ]


async def home(admin: Admin) -> Response:
    """The admin's home: the dashboard of the only site, else the list of sites."""
    sites = await admin.services.sites.list()
    if len(sites) == 1:
        return redirect(f"/sites/{sites[0].key}/dashboard")
    return redirect("/sites")


def _days(admin: Admin) -> int:
    raw = admin.request.query_params.get("days", "")
    return int(raw) if raw.isdigit() and int(raw) in site_report.PERIODS else 7


async def _document(admin: Admin, site: Site) -> dict[str, Any]:
    services = admin.services
    campaigns = await store(admin).for_site(site.key)
    flows = await services.mail.flows.get(site.key)
    return await site_report.site_summary(
        services.redis, services.keys, site, campaigns, flows, time.time(), _days(admin)
    )


async def dashboard(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    document = await _document(admin, site)
    return admin.page(
        "dashboard.html",
        site=site,
        document=document,
        experiment=document["experiment"],
        charts=charts(document),
        best_arms={
            doc["campaign"]: site_report.best_arm(doc["report"]) for doc in document["campaigns"]
        },
        periods=site_report.PERIODS,
        days=document["period"]["days"],
    )


async def dashboard_csv(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    document = await _document(admin, site)
    name = f"{site.key}-dashboard-{document['period']['from']}-{document['period']['to']}.csv"
    return PlainTextResponse(
        site_report.summary_csv(document),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def charts(document: dict[str, Any]) -> list[Chart]:
    """The site-wide experiment's cumulative conversion and revenue per visitor, the tool
    against its holdout."""
    series = document["experiment_series"]
    if document["experiment"] is None or not series:
        return []
    days = [point["day"] for point in series]

    def values(metric: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for arm in ("holdout", "tool"):
            counts = [point["variants"].get(arm, {}) for point in series]
            out[arm] = [
                c.get(metric, 0.0) / c["exposures"] if c.get("exposures") else 0.0 for c in counts
            ]
        return out

    return [
        line_chart("chart-site-conversion", "Buyers per visitor", days, values("conversions"),
                   lambda v: format_share(v)),
        line_chart("chart-site-revenue", "Revenue per visitor", days, values("revenue"),
                   lambda v: format_money(v)),
    ]  # fmt: skip
