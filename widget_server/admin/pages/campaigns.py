"""Campaigns: lists with today's numbers, the overview with its live preview, the editor, and the
status, duplicate actions. History, restore, the preview frame and code pools are in
:mod:`.versions`."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ...catalog.store import CatalogStore
from ...offers.audience import audience_sentence
from ...offers.campaign_store import CampaignStore
from ...offers.campaigns import (
    CAMPAIGN_ID_PATTERN,
    Campaign,
    CampaignInvalid,
    FieldError,
    parse_campaign,
)
from ...store.sites import Site
from .. import campaign_form as cf
from ..form_errors import label, place_errors
from ..guard import Admin, Guard
from ..numbers import pool_levels, today_numbers
from ..web import redirect
from .sites import not_found, site_or_none

STATUSES = ("draft", "active", "paused", "ended")
WIDTHS = ("desktop", "mobile")


def routes(guard: Guard) -> list[BaseRoute]:
    base = "/sites/{site}/campaigns"
    return [
        Route("/campaigns", guard(all_campaigns)),
        Route(base, guard(site_campaigns)),
        Route(base + "/new", guard(new_campaign, "editor"), methods=["GET", "POST"]),
        Route(base + "/audience", guard(audience_of_form, "editor"), methods=["POST"]),
        Route(base + "/{campaign}", guard(overview)),
        Route(base + "/{campaign}/edit", guard(edit_campaign, "editor"), methods=["GET", "POST"]),
        Route(base + "/{campaign}/status", guard(change_status, "editor"), methods=["POST"]),
        Route(base + "/{campaign}/duplicate", guard(duplicate, "editor"), methods=["POST"]),
    ]


def store(admin: Admin) -> CampaignStore:
    return admin.services.offers.campaigns


async def fresh_campaigns(admin: Admin, site: str) -> tuple[Campaign, ...]:
    """The site's campaigns as stored now (another node may have just changed them)."""
    store(admin).invalidate(site)
    return await store(admin).for_site(site)


async def campaign_or_none(admin: Admin, site: Site) -> Campaign | None:
    campaign_id = admin.param("campaign")
    if not re.match(CAMPAIGN_ID_PATTERN, campaign_id):
        return None
    return await store(admin).get(site.key, campaign_id)


async def _table(admin: Admin, site: Site) -> dict[str, Any]:
    campaigns = sorted(
        await fresh_campaigns(admin, site.key), key=lambda c: (STATUSES.index(c.status), c.id)
    )
    return {
        "site": site,
        "campaigns": campaigns,
        "today": await today_numbers(admin.services, site.key, campaigns),
        "pools": await pool_levels(admin.services, site.key, campaigns),
    }


async def all_campaigns(admin: Admin) -> Response:
    tables = [await _table(admin, site) for site in await admin.services.sites.list()]
    return admin.page("campaigns_all.html", tables=tables)


async def site_campaigns(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    return admin.page("campaigns.html", **await _table(admin, site))


async def overview(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    keys = [v.key for v in campaign.variants]
    variant = admin.request.query_params.get("variant", keys[0])
    width = admin.request.query_params.get("width", "desktop")
    # The languages it can be previewed in: the site's, its other ones, the translations'.
    locales = list(dict.fromkeys([site.locale, *site.text_locales, *(
        code for v in campaign.variants for code in v.offer.translations)]))  # fmt: skip
    locale = admin.request.query_params.get("locale", "")
    today = (await today_numbers(admin.services, site.key, [campaign]))[campaign.id]
    pool = (await pool_levels(admin.services, site.key, [campaign]))[campaign.id]
    return admin.page(
        "campaign.html",
        site=site,
        campaign=campaign,
        variant=variant if variant in keys else keys[0],
        width=width if width in WIDTHS else "desktop",
        widths=WIDTHS,
        locale=locale if locale in locales else site.locale,
        locales=locales,
        today=today,
        pool=pool,
        definition=json.loads(campaign.model_dump_json()),
    )


async def new_campaign(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    if admin.request.method == "GET":
        return await editor_page(admin, site, None, cf.blank_state())
    return await _submit(admin, site, None)


async def edit_campaign(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    if admin.request.method == "GET":
        return await editor_page(admin, site, campaign, cf.state_from_campaign(campaign))
    return await _submit(admin, site, campaign)


def submitted_state(admin: Admin, current: Campaign | None) -> cf.State:
    """The editor's state from the submitted form; a stored campaign keeps its id. Saving and
    the preview of unsaved changes both read the form through here."""
    state = cf.state_from_form(admin.form)
    if current is not None:
        state["id"] = current.id
    return state


async def _submit(admin: Admin, site: Site, current: Campaign | None) -> Response:
    state = submitted_state(admin, current)
    action = admin.form.get("action", "save")
    if action != "save":
        changed = cf.apply_action(state, action)
        return await editor_page(admin, site, current, changed if changed is not None else state)
    state = cf.normalized(state)
    problems, newer = await _conflicts(admin, site, current, state)
    if problems:
        return await editor_page(
            admin, site, current, state, problems, status=409, base_version=newer
        )
    try:
        saved = await store(admin).save(site.key, cf.campaign_data(state), author=admin.user.email)
    except CampaignInvalid as exc:
        return await editor_page(admin, site, current, state, exc.errors, status=422)
    await admin.record(
        "campaign.update" if current else "campaign.create",
        saved.id,
        site=site.key,
        before=json.loads(current.model_dump_json()) if current else None,
        after=json.loads(saved.model_dump_json()),
    )
    return redirect(f"/sites/{site.key}/campaigns/{saved.id}", "saved")


async def _conflicts(
    admin: Admin, site: Site, current: Campaign | None, state: cf.State
) -> tuple[list[FieldError], int | None]:
    """Someone else saved in the meantime, or the new id is taken."""
    if current is not None:
        latest = await store(admin).get(site.key, current.id)
        if latest is None or str(latest.version) == admin.form.get("base_version"):
            return [], None
        history = await store(admin).history(site.key, current.id)
        author = (str(history[0].get("author", "")) if history else "") or "Someone else"
        message = (
            f"{author} saved version {latest.version} while you were editing. Your changes are"
            " still in the form: open the campaign in another tab to compare; saving again"
            " replaces their version with yours."
        )
        return [FieldError("campaign", message)], latest.version
    campaign_id = str(state.get("id", "")).strip()
    if campaign_id and await store(admin).get(site.key, campaign_id) is not None:
        return [FieldError("id", "A campaign with this id exists already on this site.")], None
    return [], None


async def editor_page(
    admin: Admin,
    site: Site,
    campaign: Campaign | None,
    state: cf.State,
    errors: list[FieldError] | None = None,
    *,
    status: int = 200,
    base_version: int | None = None,
) -> Response:
    placed, summary = place_errors(errors or [], state)
    locales = cf.text_locales(state, site.locale, site.text_locales)
    return admin.page(
        "campaign_form.html",
        status=status,
        site=site,
        campaign=campaign,
        state=state,
        val=lambda path: display_value(state, path),
        label=label,
        errors=placed,
        summary=summary,
        base_version=base_version
        or admin.form.get("base_version")
        or (campaign.version if campaign else ""),
        page_types=cf.PAGE_TYPES,
        exit_kinds=cf.EXIT_KINDS,
        condition_fields=[(name, cf.FIELD_LABELS[name]) for name in cf.CONDITION_FIELDS],
        condition_ops=[(name, cf.OP_LABELS[name]) for name in cf.CONDITION_OPS],
        known_values=cf.KNOWN_VALUES,
        value_choices=await value_choices_of(admin, site),
        sentence=sentence_of(state, site.currency),
        statuses=STATUSES,
        text_locales=locales,
        translation_locales=cf.translation_locales(state, locales, site.locale),
    )


def sentence_of(state: cf.State, currency: str) -> str:
    """Who the campaign the editor's fields describe is shown to, in words ("" while the
    fields do not make a valid campaign)."""
    try:
        campaign = parse_campaign(cf.campaign_data(cf.normalized(state)))
    except CampaignInvalid:
        return ""
    return audience_sentence(campaign, currency)


async def audience_of_form(admin: Admin) -> Response:
    """The audience sentence of the editor's unsaved fields, for the editor to show while the
    marketer types (422 and no text while the fields are not a valid campaign)."""
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    state = cf.state_from_form(admin.form)
    state["id"] = state.get("id") or "unsaved"  # a stored campaign's id is not in its form
    sentence = sentence_of(state, site.currency)
    return PlainTextResponse(sentence, status_code=200 if sentence else 422)


async def value_choices_of(admin: Admin, site: Site) -> dict[str, list[tuple[str, str]]]:
    """The value pickers' suggestions, with the categories and brands of the site's catalog
    (at most 300 of each, in order)."""
    products = await CatalogStore(admin.services.redis, admin.services.keys).products(site.key)
    categories = sorted({p.product_type for p in products if p.product_type})[:300]
    brands = sorted({p.brand for p in products if p.brand})[:300]
    return cf.value_choices(categories, brands)


def display_value(state: cf.State, path: str) -> Any:
    """The value at a dotted path of the state, as an input shows it ("" when absent)."""
    node: Any = state
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, "")
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return ""
    if isinstance(node, float) and node.is_integer():
        return str(int(node))
    return node


async def change_status(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    status = admin.form.get("status")
    if status not in STATUSES:
        return admin.refuse(400, "Unknown status.")
    saved = await store(admin).set_status(site.key, campaign.id, status, author=admin.user.email)
    await admin.record(
        "campaign.status",
        campaign.id,
        site=site.key,
        before={"status": campaign.status},
        after={"status": saved.status},
    )
    return redirect(f"/sites/{site.key}/campaigns/{campaign.id}", "status")


async def duplicate(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    taken = {c.id for c in await fresh_campaigns(admin, site.key)}
    data = json.loads(campaign.model_dump_json())
    data.pop("version", None)
    data.update(id=copy_id(campaign.id, taken), status="draft")
    data["name"] = f"Copy of {campaign.name}"[:120]
    saved = await store(admin).save(site.key, data, author=admin.user.email)
    await admin.record("campaign.duplicate", saved.id, site=site.key, after=data)
    return redirect(f"/sites/{site.key}/campaigns/{saved.id}/edit", "duplicated")


def copy_id(campaign_id: str, taken: set[str]) -> str:
    """A free id for a copy: ``id-copy``, ``id-copy-2``... within the 48-character limit."""
    for n in range(1, 1000):
        suffix = "-copy" if n == 1 else f"-copy-{n}"
        candidate = campaign_id[: 48 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise CampaignInvalid([FieldError("id", "no free id for a copy")])
