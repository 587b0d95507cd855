"""A campaign's versions (history with diffs, restore), its preview frame (of the saved version,
or of the editor's unsaved form) and its code pool."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...offers.campaigns import Campaign, CampaignInvalid, Variant, parse_campaign
from ...offers.codes import CodePoolError, code_candidates
from ...offers.decide import Candidate, VisitorState
from ...store.audit import changes
from ...store.sites import Site
from ...wire.protocol import clean_lang
from .. import campaign_form as cf
from ..form_errors import place_errors
from ..guard import Admin, Guard
from ..numbers import pool_levels, redeemed_count
from ..web import MAX_UPLOAD_BYTES, PREVIEW_CSP, redirect
from .campaigns import campaign_or_none, store, submitted_state
from .sites import not_found, site_or_none

MAX_REPORTED_ERRORS = 20


def routes(guard: Guard) -> list[BaseRoute]:
    base = "/sites/{site}/campaigns/{campaign}"
    return [
        Route(base + "/history", guard(history)),
        Route(base + "/restore", guard(restore, "editor"), methods=["POST"]),
        Route(base + "/preview", guard(preview)),
        Route(base + "/preview", guard(preview_edits), methods=["POST"]),
        Route(
            base + "/codes",
            guard(codes, form_limit=MAX_UPLOAD_BYTES),
            methods=["GET", "POST"],
        ),
    ]


def versions(campaign: Campaign, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every known version, newest first: its content, who saved it and when, and what changed
    from the version before it."""
    contents = {campaign.version: json.loads(campaign.model_dump_json())}
    saved: dict[int, dict[str, Any]] = {}
    for entry in entries:
        old = entry.get("campaign") or {}
        contents.setdefault(int(old.get("version", 0)), old)
        saved[int(entry.get("version", 0))] = entry
    out = []
    for number in sorted(contents, reverse=True):
        earlier = contents.get(number - 1)
        out.append(
            {
                "version": number,
                "campaign": contents[number],
                "at": saved.get(number, {}).get("at"),
                "author": saved.get(number, {}).get("author", ""),
                "current": number == campaign.version,
                "changes": changes(earlier, contents[number], ignore=("version",))
                if earlier is not None
                else [],
                "first": earlier is None,
            }
        )
    return out


async def history(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    entries = await store(admin).history(site.key, campaign.id)
    return admin.page(
        "history.html", site=site, campaign=campaign, versions=versions(campaign, entries)
    )


async def restore(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    wanted = admin.form.get("version")
    entries = await store(admin).history(site.key, campaign.id)
    found = next((v for v in versions(campaign, entries) if str(v["version"]) == wanted), None)
    if found is None or found["current"]:
        return admin.refuse(400, "That version cannot be restored.")
    data = dict(found["campaign"])
    data.pop("version", None)
    data["status"] = campaign.status  # the content comes back; the status stays as it is
    saved = await store(admin).save(site.key, data, author=admin.user.email)
    await admin.record(
        "campaign.restore",
        campaign.id,
        site=site.key,
        before=json.loads(campaign.model_dump_json()),
        after=json.loads(saved.model_dump_json()),
    )
    return redirect(f"/sites/{site.key}/campaigns/{campaign.id}/history", "restored")


async def preview(admin: Admin) -> Response:
    """A page with the real widget that renders the offer object the server would send."""
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    key = admin.request.query_params.get("variant", "")
    variant = campaign.variant(key) or campaign.variants[0]
    width = admin.request.query_params.get("width", "desktop")
    locale = admin.request.query_params.get("locale", "")
    return await preview_page(admin, site, campaign, variant, width, locale)


async def preview_edits(admin: Admin) -> Response:
    """The preview of the editor's unsaved form (posted into the editor's frame): the form is
    read and validated exactly as saving does, and nothing is written. Invalid content shows
    the field errors instead of an overlay. ``…/campaigns/new/preview`` previews a new one."""
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    current = None
    if not (admin.param("campaign") == "new" and "id" in admin.form.fields):
        current = await campaign_or_none(admin, site)
        if current is None:
            return not_found(admin, "campaign")
    state = cf.normalized(submitted_state(admin, current))
    try:
        campaign = parse_campaign(cf.campaign_data(state))
    except CampaignInvalid as exc:
        _, summary = place_errors(exc.errors, state)
        response = admin.page("preview_errors.html", status=422, summary=summary)
        response.headers["Content-Security-Policy"] = PREVIEW_CSP
        return response
    index = admin.form.get("preview_variant")
    chosen = int(index) if re.fullmatch(r"[0-9]{1,2}", index) else 0
    chosen = chosen if chosen < len(campaign.variants) else 0
    variant = campaign.variants[chosen]
    return await preview_page(
        admin, site, campaign, variant, admin.form.get("preview_width"),
        admin.form.get("preview_locale"),
    )  # fmt: skip


async def preview_page(
    admin: Admin, site: Site, campaign: Campaign, variant: Variant, width: str, locale: str = ""
) -> Response:
    """The preview page of one variant, as a visitor in ``locale`` sees it (a malformed or
    empty one: the site's); reads the catalog, writes nothing."""
    services = admin.services
    viewed = await services.redis.hrandfield(services.keys.catalog(site.key), 1)
    lang = clean_lang(locale)
    state = VisitorState(
        visitor="preview",
        viewed_ids=tuple(v.decode() if isinstance(v, bytes) else str(v) for v in viewed or []),
        lang=lang,
    )
    offer = await services.offers.render(site.key, Candidate(campaign, variant.key), state)
    discount = variant.discount
    if discount is not None:
        offer = msgspec.structs.replace(
            offer,
            code=sample_code(discount.code_strategy, discount.static_code, discount.code_format),
            expires_at=int((time.time() + discount.valid_minutes * 60) * 1000),
        )
    response = admin.page(
        "preview.html",
        site=site,
        campaign=campaign,
        variant=variant,
        width="mobile" if width == "mobile" else "desktop",
        lang=lang or site.locale,
        offer=msgspec.to_builtins(offer),
    )
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    return response


def sample_code(strategy: str, static_code: str | None, code_format: str) -> str:
    """A code like the ones visitors get (pool codes are not taken from the pool)."""
    if strategy == "static":
        return static_code or ""
    if strategy == "pool":
        return "POOL-CODE"
    return code_candidates(code_format, 1)[0]


async def codes(admin: Admin) -> Response:
    site = await site_or_none(admin)
    campaign = await campaign_or_none(admin, site) if site else None
    if site is None or campaign is None:
        return not_found(admin, "campaign")
    result: dict[str, Any] | None = None
    status = 200
    if admin.request.method == "POST":
        data = admin.form.files.get("file", b"")
        try:
            if not data.strip():
                raise CodePoolError("choose a CSV file with codes first")
            added = await store(admin).add_codes(site.key, campaign.id, data)
        except CodePoolError as exc:
            result, status = {"failed": str(exc)}, 422
        else:
            result = {
                "added": added["added"],
                "errors": [f"line {line}: {reason}" if line else reason
                           for line, reason in added["errors"]][:MAX_REPORTED_ERRORS],
                "error_count": len(added["errors"]),
            }  # fmt: skip
            await admin.record(
                "campaign.codes",
                campaign.id,
                site=site.key,
                after={"codes_added": added["added"], "available": added["available"]},
            )
    pool = (await pool_levels(admin.services, site.key, [campaign]))[campaign.id]
    return admin.page(
        "codes.html",
        status=status,
        site=site,
        campaign=campaign,
        pool=pool,
        redeemed=await redeemed_count(admin.services, site.key, campaign.id),
        result=result,
    )
