"""Sites: the list, creating and editing one, its install snippets and check, its secret."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...store.frequency import Frequency
from ...store.sites import (
    MAX_TEXT_LOCALES,
    SITE_KEY_PATTERN,
    CodeApply,
    Site,
    SiteError,
    new_site,
    normalize_origin,
)
from ..guard import Admin, Guard
from ..web import redirect

SEEN_WINDOW_S = 24 * 3600
MAX_ORIGINS = 50
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
SITE_FIELDS = ("key", "name", "origins", "currency", "locale", "timezone")
_TEXT_LOCALE = re.compile(r"^[a-z]{2}$")
# The site-wide frequency policy: form field -> (largest value, what the error names).
FREQUENCY_FIELDS = {
    "per_session": 100,
    "per_day": 100,
    "discount_days": 365,
    "live_per_session": 100,
    "live_per_day": 100,
}


def routes(guard: Guard) -> list[BaseRoute]:
    return [
        Route("/sites", guard(site_list)),
        Route("/sites/new", guard(create_site, "owner"), methods=["GET", "POST"]),
        Route("/sites/{site}", guard(site_detail)),
        Route("/sites/{site}/edit", guard(edit_site, "owner"), methods=["GET", "POST"]),
        Route("/sites/{site}/secret", guard(rotate_secret, "owner"), methods=["POST"]),
    ]


async def site_or_none(admin: Admin) -> Site | None:
    key = admin.param("site")
    if not re.match(SITE_KEY_PATTERN, key):
        return None
    return await admin.services.sites.get(key)


def not_found(admin: Admin, what: str = "site") -> Response:
    return admin.refuse(404, f"There is no such {what}. It may have been removed or renamed.")


async def site_list(admin: Admin) -> Response:
    sites = await admin.services.sites.list()
    redis, keys = admin.services.redis, admin.services.keys
    seen: list[Any] = []
    counts: list[Any] = []
    if sites:
        async with redis.pipeline(transaction=False) as pipe:
            for site in sites:
                pipe.get(keys.site_seen(site.key))
                pipe.hlen(keys.campaigns(site.key))
            rows = await pipe.execute()
        seen, counts = rows[0::2], rows[1::2]
    items = [
        {"site": site, "seen": _seconds(seen[i]), "campaigns": int(counts[i] or 0)}
        for i, site in enumerate(sites)
    ]
    return admin.page("sites.html", items=items, now=time.time(), seen_window=SEEN_WINDOW_S)


async def site_detail(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    services = admin.services
    seen = _seconds(await services.redis.get(services.keys.site_seen(site.key)))
    server = f"{admin.request.url.scheme}://{admin.request.url.netloc}"
    return admin.page(
        "site.html",
        site=site,
        snippets=snippets(server, site.key),
        seen=seen,
        seen_recently=bool(seen and time.time() - seen < SEEN_WINDOW_S),
        live=await services.hub.live_count(site.key),
        campaign_count=int(await services.redis.hlen(services.keys.campaigns(site.key))),
    )


def snippets(server: str, key: str) -> list[tuple[str, str, str]]:
    """(id, title, code) of the install snippet for each kind of shop."""
    tag = f'<script async src="{server}/widget.js" data-site="{key}"></script>'
    shopify = (
        f"{tag}\n{{% if customer %}}\n<script>\n"
        "  window.exitwidget = window.exitwidget || [];\n"
        '  exitwidget.push(["identify", {email: {{ customer.email | json }}, '
        "consent: {{ customer.accepts_marketing | json }}}]);\n"
        "</script>\n{% endif %}"
    )
    woo = f"add_action('wp_head', function () {{\n  echo '{tag}';\n}});"
    return [
        ("html", "Plain HTML: in <head> of every page", tag),
        ("gtm", "Google Tag Manager: a Custom HTML tag on All Pages", tag),
        ("shopify", "Shopify: layout/theme.liquid, before </head>", shopify),
        ("woocommerce", "WooCommerce: the theme's functions.php or a small plugin", woo),
    ]


async def create_site(admin: Admin) -> Response:
    if admin.request.method == "GET":
        values = {"key": "", "name": "", "origins": "", "currency": "EUR", "locale": "en",
                  "text_locales": "", "timezone": "UTC", **frequency_values(Frequency()),
                  **apply_values(CodeApply()), "holdout": "0"}  # fmt: skip
        return _form(admin, values, {}, None)
    values = form_values(admin, Frequency(), CodeApply())
    errors = site_errors(values)
    if not errors and await admin.services.sites.get(values["key"]) is not None:
        errors["key"] = "A site with this key exists already."
    site = None if errors else _build(values, errors)
    if site is None:
        return _form(admin, values, errors, None, status=422)
    await admin.services.sites.save(site)
    await admin.record("site.create", site.key, site=site.key, after=public_fields(site))
    return redirect(f"/sites/{site.key}", "created")


async def edit_site(admin: Admin) -> Response:
    current = await site_or_none(admin)
    if current is None:
        return not_found(admin)
    if admin.request.method == "GET":
        values = {
            "key": current.key,
            "name": current.name,
            "origins": "\n".join(current.origins),
            "currency": current.currency,
            "locale": current.locale,
            "text_locales": ", ".join(current.text_locales),
            "timezone": current.timezone,
            **frequency_values(current.frequency),
            **apply_values(current.apply_code),
            "holdout": percent(current.holdout),
        }
        return _form(admin, values, {}, current)
    values = form_values(
        admin, current.frequency, current.apply_code, current.holdout, current.text_locales
    )
    values["key"] = current.key
    errors = site_errors(values)
    built = None if errors else _build(values, errors)
    if built is None:
        return _form(admin, values, errors, current, status=422)
    site = msgspec.structs.replace(built, secret=current.secret, created=current.created)
    await admin.services.sites.save(site)
    await admin.record(
        "site.update",
        site.key,
        site=site.key,
        before=public_fields(current),
        after=public_fields(site),
    )
    return redirect(f"/sites/{site.key}", "saved")


def _form(
    admin: Admin,
    values: dict[str, str],
    errors: dict[str, str],
    site: Site | None,
    *,
    status: int = 200,
) -> Response:
    """The site form (new when ``site`` is None), with the values typed and their errors."""
    return admin.page(
        "site_form.html",
        status=status,
        apply_modes=APPLY_MODES,
        values=values,
        errors=errors,
        site=site,
    )


async def rotate_secret(admin: Admin) -> Response:
    current = await site_or_none(admin)
    if current is None:
        return not_found(admin)
    if admin.form.get("confirm") != "yes":
        return admin.refuse(400, "Tick the box to confirm that the shop's backend will be updated.")
    site = msgspec.structs.replace(current, secret=secrets.token_urlsafe(32))
    await admin.services.sites.save(site)
    await admin.record(
        "site.rotate_secret",
        site.key,
        site=site.key,
        before={"secret": "(previous secret)"},
        after={"secret": "(new secret)"},
    )
    return redirect(f"/sites/{site.key}", "rotated")


APPLY_MODES = {
    "none": "The visitor copies the code",
    "shopify": "Shopify: a /discount/CODE link applies it",
    "url": "A URL parameter (WooCommerce coupon plugins and others)",
    "callback": 'The shop\'s own script (exitwidget.push(["on", "code", fn]))',
}
_PARAM = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def frequency_values(policy: Frequency) -> dict[str, str]:
    return {name: str(getattr(policy, name)) for name in FREQUENCY_FIELDS}


def apply_values(apply: CodeApply) -> dict[str, str]:
    return {"apply_mode": apply.mode, "apply_param": apply.param}


def percent(share: float) -> str:
    """A share as the form's percentage: ``0.05`` -> ``5``."""
    return f"{share * 100:.2f}".rstrip("0").rstrip(".")


def form_values(
    admin: Admin,
    policy: Frequency,
    apply: CodeApply,
    holdout: float = 0.0,
    text_locales: Sequence[str] = (),
) -> dict[str, str]:
    """The submitted fields; a setting left out of the post (not blanked) keeps its value."""
    values = {name: admin.form.get(name).strip() for name in SITE_FIELDS}
    kept = frequency_values(policy) | apply_values(apply) | {"holdout": percent(holdout)}
    kept["text_locales"] = ", ".join(text_locales)
    names = (*FREQUENCY_FIELDS, "apply_mode", "apply_param", "holdout", "text_locales")
    return values | {name: admin.form.get(name, kept[name]).strip() for name in names}


def site_errors(values: dict[str, str]) -> dict[str, str]:
    """Field errors of a site form, one message per field."""
    errors: dict[str, str] = {}
    if not re.match(SITE_KEY_PATTERN, values["key"]):
        errors["key"] = "Use 1 to 64 letters, digits, - or _ (it goes into the script tag)."
    if len(values["name"]) > 200:
        errors["name"] = "Use at most 200 characters."
    origins = origin_lines(values["origins"])
    if not origins:
        errors["origins"] = "Add the shop's origin, like https://www.myshop.com."
    if len(origins) > MAX_ORIGINS:
        errors["origins"] = f"Use at most {MAX_ORIGINS} origins."
    for line in origins:
        try:
            normalize_origin(line)
        except SiteError as exc:
            errors["origins"] = str(exc)
            break
    values["currency"] = values["currency"].upper()
    if not _CURRENCY.match(values["currency"]):
        errors["currency"] = "Use a three-letter ISO 4217 code such as EUR or USD."
    if not _LOCALE.match(values["locale"]):
        errors["locale"] = "Use a language code such as en, de or fr-FR."
    languages = language_list(values["text_locales"])
    if any(not _TEXT_LOCALE.match(code) for code in languages):
        errors["text_locales"] = "Use two-letter language codes separated by commas, like de, fr."
    elif len(languages) > MAX_TEXT_LOCALES:
        errors["text_locales"] = f"Use at most {MAX_TEXT_LOCALES} languages."
    try:
        ZoneInfo(values["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = "Use an IANA time zone such as Europe/Berlin."
    for name, largest in FREQUENCY_FIELDS.items():
        if not values[name].isdigit() or int(values[name]) > largest:
            errors[name] = f"Use a whole number from 0 (no limit) to {largest}."
    if values["apply_mode"] not in APPLY_MODES:
        errors["apply_mode"] = "Choose one of the ways listed."
    if not _PARAM.match(values["apply_param"]):
        errors["apply_param"] = "Use 1 to 40 letters, digits, - or _, like coupon."
    try:
        holdout = float(values["holdout"] or "0")
    except ValueError:
        holdout = -1.0
    if not 0 <= holdout <= 50:
        errors["holdout"] = "Use a percentage from 0 (no site-wide holdout) to 50, like 5."
    return errors


def language_list(text: str) -> list[str]:
    """``"de, fr it"`` -> ``["de", "fr", "it"]``."""
    return [code.lower() for code in re.split(r"[\s,;]+", text.strip()) if code]


def origin_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _build(values: dict[str, str], errors: dict[str, str]) -> Site | None:
    try:
        return new_site(
            values["key"],
            name=values["name"] or None,
            origins=origin_lines(values["origins"]),
            currency=values["currency"],
            locale=values["locale"],
            text_locales=language_list(values["text_locales"]),
            timezone=values["timezone"],
            frequency=Frequency(**{name: int(values[name]) for name in FREQUENCY_FIELDS}),
            apply_code=CodeApply(
                mode=values["apply_mode"],  # type: ignore[arg-type]
                param=values["apply_param"],
            ),
            holdout=round(float(values["holdout"] or "0") / 100, 4),
        )
    except SiteError as exc:
        field = next((f for f in SITE_FIELDS if f"$.{f}" in str(exc)), "key")
        errors[field] = str(exc)
        return None


def public_fields(site: Site) -> dict[str, Any]:
    """The site as the audit log keeps it: everything but the secret."""
    data = msgspec.to_builtins(site)
    data.pop("secret", None)
    return dict(data)


def _seconds(raw: Any) -> float | None:
    try:
        return float(raw) if raw else None
    except (TypeError, ValueError):
        return None
