"""The campaign templates: proven starting points, each previewed by the real widget, one click
from a pre-filled editor (nothing is saved until the marketer saves)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...offers.campaigns import Campaign, parse_campaign
from ...shipped import EXAMPLES_DIR
from .. import campaign_form as cf
from ..guard import Admin, Guard
from .campaigns import editor_page, fresh_campaigns
from .sites import not_found, site_or_none
from .versions import preview_page

TEMPLATES_FILE = EXAMPLES_DIR / "campaign-templates.json"


def routes(guard: Guard) -> list[BaseRoute]:
    base = "/sites/{site}/campaigns/templates"
    return [
        Route(base, guard(gallery)),
        Route(base + "/{template}", guard(use_template, "editor")),
        Route(base + "/{template}/preview", guard(template_preview)),
    ]


@cache
def templates() -> tuple[dict[str, Any], ...]:
    """The shipped templates (key, title, description, campaign), read once."""
    return tuple(json.loads(TEMPLATES_FILE.read_text(encoding="utf-8")))


def template_or_none(key: str) -> dict[str, Any] | None:
    return next((t for t in templates() if t["key"] == key), None)


def free_id(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``... when a campaign has it already."""
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted}-{n}" in taken:
        n += 1
    return f"{wanted}-{n}"


async def gallery(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    shown = [{**t, "parsed": parse_campaign(t["campaign"])} for t in templates()]
    return admin.page("gallery.html", site=site, templates=shown)


async def use_template(admin: Admin) -> Response:
    """The campaign editor filled from a template, as a new draft (saved by the editor's Save)."""
    site = await site_or_none(admin)
    template = template_or_none(admin.param("template"))
    if site is None or template is None:
        return not_found(admin, "template")
    taken = {c.id for c in await fresh_campaigns(admin, site.key)}
    campaign = parse_campaign(template["campaign"])
    state = cf.state_from_campaign(campaign)
    state["id"] = free_id(campaign.id, taken)
    return await editor_page(admin, site, None, state)


async def template_preview(admin: Admin) -> Response:
    """The template's offer painted by the real widget on a sample page (its thumbnail)."""
    site = await site_or_none(admin)
    template = template_or_none(admin.param("template"))
    if site is None or template is None:
        return not_found(admin, "template")
    campaign: Campaign = parse_campaign(template["campaign"])
    width = admin.request.query_params.get("width", "desktop")
    return await preview_page(admin, site, campaign, campaign.variants[0], width)
