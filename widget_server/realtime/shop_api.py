"""Server-to-server endpoints for the shop's backend, authenticated with the site's secret.

- ``POST /v1/orders?site=KEY``: the shop's order webhook. Signed: header ``X-Widget-Timestamp``
  (unix seconds) and ``X-Widget-Signature: sha256=HEX`` where HEX is the HMAC-SHA256 of
  ``"{timestamp}.{raw body}"`` with the site secret; older than 5 minutes is refused.
- ``GET /v1/codes/{code}?site=KEY`` with ``Authorization: Bearer <site secret>``: is this code one
  we issued, for which discount, still valid? For checking generated codes at checkout.
- ``POST /v1/visitors/erase?site=KEY`` with ``Authorization: Bearer <site secret>`` and a JSON
  body ``{"visitor": ID}`` or ``{"email": ADDRESS}``: erase everything stored about the visitor
  (every visitor known under the address), for privacy requests. See :mod:`.erasure`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..bodies import read_bounded
from ..errors import StoreUnavailable
from ..store.audit import AuditLog
from ..store.sites import Site
from ..wire import protocol as p
from .erasure import erase_visitor, total, visitors_for_email
from .services import Services

MAX_WEBHOOK_BYTES = 256 * 1024
MAX_CLOCK_SKEW_S = 300
MAX_ERASE_BYTES = 4 * 1024
ERASE_ACTOR = "shop backend (API)"


class OrderWebhook(Struct, frozen=True, kw_only=True):
    order_id: Annotated[str, Meta(min_length=1, max_length=128)]
    value: p.Money
    currency: p.Currency = ""
    coupon: Annotated[str, Meta(max_length=64)] | None = None
    visitor: p.VisitorId | None = None
    email: p.Email | None = None
    items: Annotated[list[p.CartItem], Meta(max_length=200)] = []


class EraseRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Whom to erase: one visitor id, or an email address (every visitor known under it)."""

    visitor: p.VisitorId | None = None
    email: p.Email | None = None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


def signature_for(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


async def _site(request: Request) -> Site | JSONResponse:
    """The site named by ``?site=``, or the error response to send instead."""
    services: Services = request.app.state.services
    key = request.query_params.get("site", "")
    try:
        site = await services.sites.get(key) if key and len(key) <= 64 else None
    except RedisError:
        return _error(503, p.UNAVAILABLE, "try again")
    return site if site is not None else _error(404, p.UNKNOWN_SITE, "unknown site key")


async def orders_webhook(request: Request) -> Response:
    services: Services = request.app.state.services
    site = await _site(request)
    if not isinstance(site, Site):
        return site
    body = await read_bounded(request, MAX_WEBHOOK_BYTES)
    if body is None:
        return _error(413, p.FRAME_TOO_LARGE, f"bodies are limited to {MAX_WEBHOOK_BYTES} bytes")
    timestamp = request.headers.get("x-widget-timestamp", "")
    given = request.headers.get("x-widget-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_S:
        return _error(401, "bad_signature", "X-Widget-Timestamp missing or too old")
    if not hmac.compare_digest(given, signature_for(site.secret, timestamp, body)):
        return _error(401, "bad_signature", "X-Widget-Signature does not match the body")
    try:
        order = msgspec.json.decode(body, type=OrderWebhook)
    except msgspec.ValidationError as exc:
        return _error(400, p.INVALID_FIELD, str(exc))
    except msgspec.DecodeError:
        return _error(400, p.BAD_JSON, "the body is not valid JSON")
    try:
        result = await _record(services, site.key, order)
    except RedisError:
        services.metrics.redis_errors.inc()
        return _error(503, p.UNAVAILABLE, "the order could not be recorded; send it again")
    return JSONResponse(result)


async def _record(services: Services, site: str, order: OrderWebhook) -> dict[str, Any]:
    visitor = order.visitor
    if visitor is None and order.email:
        found = await services.redis.hget(services.keys.email_index(site), order.email.lower())
        visitor = found.decode() if isinstance(found, bytes) else found
    now = time.time()
    purchase = p.Purchase(
        id=f"order-{order.order_id}"[:64].replace(" ", "-"),
        order_id=order.order_id,
        value=order.value,
        currency=order.currency,
        items=order.items,
        coupon=order.coupon,
    )
    new_order = False
    if visitor is not None:
        new_order = await services.sessions.record_order(site, visitor, purchase, now=now)
        if new_order:
            await services.hub.send_to_visitor(site, visitor, p.Withdraw(offer=p.ALL_OFFERS))
        if new_order:
            await services.mail.scheduler.after_purchase(site, visitor, purchase, now=now)
        else:
            await services.mail.scheduler.order_reported_again(site, visitor, purchase.order_id)
    await services.offers.on_purchase(
        site, visitor or "", purchase, new_order=new_order or visitor is None, now=now
    )
    return {"order_id": order.order_id, "visitor": visitor, "new_order": new_order}


def _bearer_refused(request: Request, site: Site) -> JSONResponse | None:
    """The 401 to send unless the request carries ``Authorization: Bearer <site secret>``."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(token, site.secret):
        return _error(401, "bad_token", "send Authorization: Bearer <site secret>")
    return None


async def code_lookup(request: Request) -> Response:
    services: Services = request.app.state.services
    site = await _site(request)
    if not isinstance(site, Site):
        return site
    refused = _bearer_refused(request, site)
    if refused is not None:
        return refused
    code = request.path_params["code"]
    if len(code) > 64:
        return JSONResponse({"code": code[:64], "valid": False, "reason": "unknown"})
    return JSONResponse(await describe_code(services, site.key, code, time.time()))


async def describe_code(services: Services, site: str, code: str, now: float) -> dict[str, Any]:
    """Whether ``code`` was issued on ``site`` and may still be redeemed."""
    campaigns = await services.offers.campaigns.for_site(site)
    async with services.redis.pipeline(transaction=False) as pipe:
        for campaign in campaigns:
            pipe.hget(services.keys.issued_codes(site, campaign.id), code)
        records = await pipe.execute() if campaigns else []
    for campaign, raw in zip(campaigns, records, strict=True):
        if raw:
            record = json.loads(raw)
            variant = campaign.variant(record.get("variant", ""))
            discount = variant.discount if variant is not None else None
            reason = (
                "redeemed"
                if record.get("redeemed")
                else ("expired" if record.get("expires", 0) < now else "")
            )
            return {
                "code": code,
                "valid": not reason,
                "reason": reason or None,
                "campaign": campaign.id,
                "variant": record.get("variant"),
                "expires_at": int(record.get("expires", 0) * 1000),
                "discount": discount.model_dump(include={"type", "amount", "min_cart_value"})
                if discount
                else None,
            }
        for v in campaign.variants:
            if (
                v.discount
                and v.discount.code_strategy == "static"
                and v.discount.static_code == code
            ):
                return {"code": code, "valid": campaign.status == "active", "reason": None,
                        "campaign": campaign.id, "variant": v.key, "expires_at": None,
                        "discount": v.discount.model_dump(include={"type", "amount",
                                                                   "min_cart_value"})}  # fmt: skip
    return {"code": code, "valid": False, "reason": "unknown"}


async def erase_request(request: Request) -> Response:
    """Erase a visitor on the shop's request; answer the counts of what was deleted."""
    services: Services = request.app.state.services
    site = await _site(request)
    if not isinstance(site, Site):
        return site
    refused = _bearer_refused(request, site)
    if refused is not None:
        return refused
    body = await read_bounded(request, MAX_ERASE_BYTES)
    if body is None:
        return _error(413, p.FRAME_TOO_LARGE, f"bodies are limited to {MAX_ERASE_BYTES} bytes")
    try:
        wanted = msgspec.json.decode(body, type=EraseRequest)
    except msgspec.ValidationError as exc:
        return _error(400, p.INVALID_FIELD, str(exc))
    except msgspec.DecodeError:
        return _error(400, p.BAD_JSON, "the body is not valid JSON")
    if (wanted.visitor is None) == (wanted.email is None):
        return _error(400, p.INVALID_FIELD, 'send exactly one of "visitor" and "email"')
    try:
        if wanted.visitor is not None:
            visitors = [wanted.visitor]
        else:
            visitors = await visitors_for_email(services, site.key, wanted.email or "")
        reports = [await erase_visitor(services, site.key, v) for v in visitors]
        audit = AuditLog(services.redis, services.keys)
        for report in reports:
            await audit.record(ERASE_ACTOR, "visitor.erase", report.visitor, site=site.key,
                               after=report.counts())  # fmt: skip
    except (RedisError, StoreUnavailable):
        services.metrics.redis_errors.inc()
        return _error(503, p.UNAVAILABLE, "the erasure did not finish; send it again")
    return JSONResponse(
        {
            "site": site.key,
            "visitors": [{"visitor": r.visitor, **r.counts()} for r in reports],
            "deleted": total(reports),
        }
    )
