"""HTTP endpoints behind the links in emails, and the relay's bounce/complaint webhook.

- ``GET /v1/mail/unsubscribe?t=TOKEN``: a page with a confirm button (a form, no JavaScript):
  link scanners that prefetch GET never unsubscribe anyone.
- ``POST /v1/mail/unsubscribe?t=TOKEN``: RFC 8058 one-click unsubscribe (body
  ``List-Unsubscribe=One-Click``) and the page's form. An authentic token always works, even
  past its expiry: unsubscribing must never fail.
- ``GET /v1/mail/confirm?t=TOKEN``: the double opt-in page, with a confirm button (a form, no
  JavaScript): a prefetching link scanner confirms nothing.
- ``POST /v1/mail/confirm?t=TOKEN``: records the confirmation (idempotent). Tampered tokens
  answer 400, expired ones 410, links whose address or consent changed since 409; an
  unsubscribed address stays unsubscribed.
- ``GET /v1/mail/click?t=TOKEN``: counts the click and redirects to the signed target, only if
  that target is on one of the site's origins or its configured shop URL (no open redirect).
- ``GET /v1/mail/restore?t=TOKEN``: redirects to the shop's cart-restore URL.
- ``POST /v1/mail/events?site=KEY``: ``{"events": [{"type": "bounce" | "complaint" |
  "unsubscribe", "email": "...", "permanent": true}]}``, signed like the orders webhook
  (``X-Widget-Timestamp``, ``X-Widget-Signature: sha256=HMAC(site secret, ts "." body)``).
  Hard bounces, complaints and unsubscribes suppress the address; soft bounces are ignored.

Bad, tampered or foreign tokens answer 400 with a short page; unknown sites 404.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

import msgspec
from msgspec import Meta, Struct
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route

from ..bodies import read_bounded
from ..errors import StoreUnavailable
from ..store.sites import Site, origin_allowed
from .context import MailContext
from .experiments import FlowMetric
from .flows import MailConfigError
from .jobs import SuppressionReason
from .message import MailAddressError
from .optin import confirm_address
from .send import webhook_signature
from .tokens import BadToken, ExpiredToken, restore_target, with_utm
from .worker import default_shop_url

MAX_EVENTS_BYTES = 256 * 1024
# The unsubscribe and confirm forms carry one field, if any.
MAX_FORM_BYTES = 4096
MAX_CLOCK_SKEW_S = 300
_PAGE_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-robots-tag": "noindex",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_REASONS: dict[str, SuppressionReason] = {
    "bounce": "bounced",
    "complaint": "complained",
    "unsubscribe": "unsubscribed",
}


class ProviderEvent(Struct, frozen=True, kw_only=True):
    type: Literal["bounce", "complaint", "unsubscribe"]
    email: Annotated[str, Meta(max_length=254)]
    permanent: bool = True


class ProviderEvents(Struct, frozen=True, kw_only=True):
    events: Annotated[list[ProviderEvent], Meta(max_length=500)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


async def _page(
    ctx: MailContext,
    state: str,
    site: Site | None,
    *,
    status: int = 200,
    template: str = "unsubscribe_page.html",
    **values: str,
) -> Response:
    """A page of ``template`` in the site's language, in ``state`` (``ask``, ``done``...)."""
    locale = site.locale if site else "en"
    words = await _site_words(ctx, site, locale)
    texts = ctx.renderer.texts(locale, words, shop=site.name if site else "", **values)
    html = ctx.renderer.render_page(
        template, t=texts, state=state, lang=locale.split("-")[0], **values
    )
    return HTMLResponse(html, status, headers=_PAGE_HEADERS)


async def _site_words(ctx: MailContext, site: Site | None, locale: str) -> dict[str, str]:
    """The site's own words for its pages; none when its flow configuration cannot be read
    (an unsubscribe page must work whatever the configuration says)."""
    if site is None:
        return {}
    try:
        return (await ctx.flows.get(site.key)).words_for(locale)
    except MailConfigError:
        return {}


async def _confirm_view(
    ctx: MailContext, state: str, site: Site | None, *, status: int = 200, **values: str
) -> Response:
    return await _page(ctx, state, site, status=status, template="confirm_page.html", **values)


async def _unsubscribe_token(
    ctx: MailContext, request: Request
) -> tuple[dict[str, Any], Site | None]:
    token = request.query_params.get("t", "")
    try:
        payload = ctx.signer.verify("unsub", token, now=ctx.clock())
    except ExpiredToken as exc:
        payload = exc.payload
    return payload, await ctx.sites.get(str(payload.get("s", "")))


async def unsubscribe_page(ctx: MailContext, request: Request) -> Response:
    try:
        payload, site = await _unsubscribe_token(ctx, request)
    except BadToken:
        return await _page(ctx, "invalid", None, status=400)
    if site is None:
        return await _page(ctx, "invalid", None, status=404)
    action = "/v1/mail/unsubscribe?" + urlencode({"t": request.query_params["t"]})
    return await _page(ctx, "ask", site, email=str(payload["m"]), action=action)


async def unsubscribe(ctx: MailContext, request: Request) -> Response:
    try:
        payload, site = await _unsubscribe_token(ctx, request)
    except BadToken:
        return await _page(ctx, "invalid", None, status=400)
    if site is None:
        return await _page(ctx, "invalid", None, status=404)
    if await read_bounded(request, MAX_FORM_BYTES) is None:
        return await _page(ctx, "invalid", site, status=413)
    address = str(payload["m"])
    try:
        already = await ctx.scheduler.suppression(site.key, address) is not None
        await ctx.scheduler.unsubscribed(site.key, address)
    except MailAddressError:
        return await _page(ctx, "invalid", site, status=400)
    ctx.metrics.unsubscribes.labels("unsubscribed").inc()
    flow = (await ctx.flows.get(site.key)).flow(str(payload.get("f", "")))
    if not already and flow is not None:
        await ctx.scheduler.experiments.count(site.key, flow, "unsubscribes", ctx.clock())
    return await _page(ctx, "done", site, email=str(payload["m"]))


async def _confirm_link(
    ctx: MailContext, request: Request
) -> tuple[dict[str, str], Site] | Response:
    """The fields of an authentic, unexpired confirmation link and its site; or the error page.
    Unlike unsubscribe links, an expired one does nothing: a confirmation must be recent."""
    try:
        payload = ctx.signer.verify("confirm", request.query_params.get("t", ""), now=ctx.clock())
    except ExpiredToken as exc:
        key = exc.payload.get("s")
        site = await ctx.sites.get(key) if isinstance(key, str) and 0 < len(key) <= 64 else None
        return await _confirm_view(ctx, "expired", site, status=410)
    except BadToken:
        return await _confirm_view(ctx, "invalid", None, status=400)
    fields = {name: payload.get(name) for name in ("s", "v", "m", "c")}
    link = {name: value for name, value in fields.items() if isinstance(value, str) and value}
    if len(link) != len(fields) or len(link["s"]) > 64:
        return await _confirm_view(ctx, "invalid", None, status=400)
    site = await ctx.sites.get(link["s"])
    if site is None:
        return await _confirm_view(ctx, "invalid", None, status=404)
    return link, site


async def confirm_page(ctx: MailContext, request: Request) -> Response:
    checked = await _confirm_link(ctx, request)
    if isinstance(checked, Response):
        return checked
    link, site = checked
    action = "/v1/mail/confirm?" + urlencode({"t": request.query_params["t"]})
    return await _confirm_view(ctx, "ask", site, email=link["m"], action=action)


async def confirm(ctx: MailContext, request: Request) -> Response:
    checked = await _confirm_link(ctx, request)
    if isinstance(checked, Response):
        return checked
    link, site = checked
    if await read_bounded(request, MAX_FORM_BYTES) is None:
        return await _confirm_view(ctx, "invalid", site, status=413)
    outcome = await confirm_address(ctx, site.key, link["v"], link["m"], link["c"], now=ctx.clock())
    if outcome in ("stale", "gone"):
        return await _confirm_view(ctx, "stale", site, status=409)
    if await ctx.scheduler.suppression(site.key, link["m"]) is not None:
        return await _confirm_view(ctx, "suppressed", site, email=link["m"])
    return await _confirm_view(ctx, "done", site, email=link["m"])


async def _allowed_target(ctx: MailContext, site: Site, url: str) -> bool:
    origin = _origin(url)
    if not origin.startswith(("https://", "http://")):
        return False
    config = await ctx.flows.get(site.key)
    return origin_allowed(site, origin) or origin == _origin(config.shop_url)


async def _count(ctx: MailContext, payload: dict[str, Any], event: str) -> None:
    """Count a click or a cart restore for the step, and the visitor as a clicker of the flow."""
    site, flow, step = str(payload["s"]), str(payload.get("f", "")), payload.get("n", 0)
    await ctx.redis.hincrby(ctx.keys.mail_stats(site, flow), f"{event}:{step}", 1)
    if event == "clicks":
        ctx.metrics.clicks.labels(flow).inc()
    visitor = str(payload.get("v", ""))
    config = await ctx.flows.get(site)
    if visitor and (found := config.flow(flow)) is not None:
        await ctx.scheduler.experiments.clicked(site, visitor, found, ctx.clock())


async def _link(
    ctx: MailContext, request: Request, purpose: str
) -> tuple[dict[str, Any], bool, Site] | Response:
    """The signed link's payload, whether it is still fresh, and its site; or the error page.
    An expired link still works (a reader opening an old email) but is not counted again."""
    fresh = True
    try:
        payload = ctx.signer.verify(purpose, request.query_params.get("t", ""), now=ctx.clock())
    except ExpiredToken as exc:
        payload, fresh = exc.payload, False
    except BadToken:
        return await _page(ctx, "invalid", None, status=400)
    site = await ctx.sites.get(str(payload.get("s", "")))
    if site is None:
        return await _page(ctx, "invalid", None, status=404)
    return payload, fresh, site


async def click(ctx: MailContext, request: Request) -> Response:
    link = await _link(ctx, request, "click")
    if isinstance(link, Response):
        return link
    payload, fresh, site = link
    target = str(payload.get("u", ""))
    if not await _allowed_target(ctx, site, target):
        return await _page(ctx, "invalid", site, status=400)
    if fresh:
        await _count(ctx, payload, "clicks")
    return RedirectResponse(target, 302, headers={"cache-control": "no-store"})


async def restore(ctx: MailContext, request: Request) -> Response:
    link = await _link(ctx, request, "restore")
    if isinstance(link, Response):
        return link
    payload, fresh, site = link
    config = await ctx.flows.get(site.key)
    shop_url = config.shop_url or default_shop_url(site)
    tags = {
        "source": config.utm_source,
        "medium": config.utm_medium,
        "campaign": str(payload.get("f", "")),
        "content": f"step{int(payload.get('n', 0)) + 1}",
    }
    if fresh:
        items = [item for item in payload.get("i", []) if isinstance(item, list) and len(item) == 2]
        target = restore_target(shop_url, config.restore_path, items, str(payload.get("c", "")))
        await _count(ctx, payload, "restores")
    else:
        target = shop_url  # the cart is stale by now; the shop itself is still a fine landing
    target = with_utm(target, **tags)
    if not await _allowed_target(ctx, site, target):
        return await _page(ctx, "invalid", site, status=400)
    return RedirectResponse(target, 302, headers={"cache-control": "no-store"})


async def provider_events(ctx: MailContext, request: Request) -> Response:
    key = request.query_params.get("site", "")
    site = await ctx.sites.get(key) if key and len(key) <= 64 else None
    if site is None:
        return JSONResponse({"error": {"code": "unknown_site"}}, 404)
    body = await read_bounded(request, MAX_EVENTS_BYTES)
    if body is None:
        return JSONResponse({"error": {"code": "too_large"}}, 413)
    timestamp = request.headers.get("x-widget-timestamp", "")
    given = request.headers.get("x-widget-signature", "")
    if not timestamp.isdigit() or abs(ctx.clock() - int(timestamp)) > MAX_CLOCK_SKEW_S:
        return JSONResponse({"error": {"code": "bad_signature"}}, 401)
    if not hmac.compare_digest(given, webhook_signature(site.secret, timestamp, body)):
        return JSONResponse({"error": {"code": "bad_signature"}}, 401)
    try:
        events = msgspec.json.decode(body, type=ProviderEvents).events
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        return JSONResponse({"error": {"code": "invalid", "message": str(exc)}}, 400)
    suppressed = ignored = 0
    for event in events:
        if event.type == "bounce" and not event.permanent:
            ignored += 1
            continue
        try:
            already = await ctx.scheduler.suppression(site.key, event.email.strip().lower())
            await ctx.scheduler.suppress(site.key, event.email, _REASONS[event.type])
        except MailAddressError:
            ignored += 1
            continue
        ctx.metrics.unsubscribes.labels(_REASONS[event.type]).inc()
        suppressed += 1
        if already is None:
            await _count_provider_event(ctx, site.key, event)
    return JSONResponse({"suppressed": suppressed, "ignored": ignored})


_FLOW_METRICS: dict[str, FlowMetric] = {
    "bounce": "bounces",
    "complaint": "complaints",
    "unsubscribe": "unsubscribes",
}


async def _count_provider_event(ctx: MailContext, site: str, event: ProviderEvent) -> None:
    """Count a hard bounce, complaint or unsubscribe for the flow whose email went last to the
    address (the relay does not say which email it was about)."""
    name = await ctx.scheduler.last_sent_flow(site, event.email)
    flow = (await ctx.flows.get(site)).flow(name) if name else None
    if flow is not None:
        await ctx.scheduler.experiments.count(site, flow, _FLOW_METRICS[event.type], ctx.clock())


Handler = Callable[[MailContext, Request], Awaitable[Response]]


def binder(
    ctx: MailContext | Callable[[], MailContext],
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Turns a handler into an endpoint bound to ``ctx`` (or to a function returning it, for an
    app that builds its context at startup, e.g. ``lambda: app.state.mail``); a store that
    cannot answer is a 503."""
    resolve: Callable[[], MailContext] = ctx if callable(ctx) else (lambda: ctx)

    def bind(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(resolve(), request)
            except (RedisError, StoreUnavailable):
                return PlainTextResponse("temporarily unavailable, try again", 503)

        return endpoint

    return bind


def mail_routes(ctx: MailContext | Callable[[], MailContext]) -> list[BaseRoute]:
    """The email endpoints, bound to ``ctx`` or to a function returning it."""
    bind = binder(ctx)
    return [
        Route("/v1/mail/unsubscribe", bind(unsubscribe_page), methods=["GET"]),
        Route("/v1/mail/unsubscribe", bind(unsubscribe), methods=["POST"]),
        Route("/v1/mail/confirm", bind(confirm_page), methods=["GET"]),
        Route("/v1/mail/confirm", bind(confirm), methods=["POST"]),
        Route("/v1/mail/click", bind(click), methods=["GET"]),
        Route("/v1/mail/restore", bind(restore), methods=["GET"]),
        Route("/v1/mail/events", bind(provider_events), methods=["POST"]),
    ]
