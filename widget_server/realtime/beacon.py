"""``POST /v1/events``: the same client messages in one batch, for ``navigator.sendBeacon`` on
``pagehide`` and for browsers where WebSockets are blocked.

The body is read as JSON whatever its content type (a beacon sends ``text/plain`` to avoid a CORS
preflight). CORS answers only the site's allowed origins. Valid messages are applied in one
pipelined round trip; invalid ones are reported per message and lose nothing else.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..bodies import read_bounded
from ..errors import ProtocolError, StoreUnavailable
from ..offers.engine import VisitRef
from ..store.sites import Site, origin_allowed
from ..visitors.session_view import SessionView
from ..visitors.sessions import SessionExpired
from ..wire import protocol as p
from .consent import (
    after_identify,
    capture_identify,
    forget,
    recorded_identify,
    reward_capture,
    trusted_country,
)
from .erasure import forget_interest
from .services import Services

MAX_BATCH_MESSAGES = 100
log = logging.getLogger("widget_server.beacon")


class Batch(Struct, frozen=True, kw_only=True):
    site: p.SiteKey
    visitor: p.VisitorId
    session: p.SessionId | None = None
    page: p.PageContext | None = None
    consent: p.Consent | None = None
    device: p.Device | None = None
    messages: Annotated[list[Any], Meta(max_length=MAX_BATCH_MESSAGES)]


def _cors_headers(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _error(status: int, code: str, message: str, origin: str | None = None) -> JSONResponse:
    headers = {"Vary": "Origin"}
    headers.update(_cors_headers(origin))
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def _site_for(services: Services, request: Request) -> Site | None:
    key = request.query_params.get("site", "")
    if not key or len(key) > 64:
        return None
    return await services.sites.get(key)


async def events_preflight(request: Request) -> Response:
    services: Services = request.app.state.services
    origin = request.headers.get("origin")
    try:
        site = await _site_for(services, request)
    except RedisError:
        return Response(status_code=503, headers={"Vary": "Origin"})
    if site is None or origin is None or not origin_allowed(site, origin):
        return Response(status_code=403, headers={"Vary": "Origin"})
    return Response(status_code=204, headers=_cors_headers(origin))


async def events_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    origin = request.headers.get("origin")
    limit = services.settings.max_batch_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _error(413, p.FRAME_TOO_LARGE, f"batches are limited to {limit} bytes")
    body = await read_bounded(request, limit)
    if body is None:
        return _error(413, p.FRAME_TOO_LARGE, f"batches are limited to {limit} bytes")
    try:
        batch = msgspec.json.decode(body, type=Batch)
    except msgspec.ValidationError as exc:
        return _error(400, p.INVALID_FIELD, str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _error(400, p.BAD_JSON, "the body is not valid JSON")
    url_site = request.query_params.get("site")
    if url_site is not None and url_site != batch.site:
        return _error(400, p.UNKNOWN_SITE, "the site in the URL and in the body differ")
    try:
        site = await services.sites.get(batch.site)
    except RedisError:
        services.metrics.redis_errors.inc()
        return _error(503, p.UNAVAILABLE, "the server could not check the site; send it again")
    if site is None:
        return _error(404, p.UNKNOWN_SITE, "unknown site key")
    if not origin_allowed(site, origin):
        return _error(403, p.ORIGIN_NOT_ALLOWED, "this page's origin is not allowed for the site")
    try:
        country = trusted_country(request.headers, services.settings.consent_country_header)
        result = await _apply_batch(services, batch, country)
    except StoreUnavailable:
        services.metrics.redis_errors.inc()
        return _error(
            503, p.UNAVAILABLE, "the server could not record the batch; send it again", origin
        )
    return JSONResponse(result, headers=_cors_headers(origin))


async def _apply_batch(services: Services, batch: Batch, country: str) -> dict[str, Any]:
    acks: list[str] = []
    errors: list[dict[str, Any]] = []
    to_apply: list[p.ClientMessage] = []
    captures: dict[str, p.OfferCapture] = {}  # recorded as identify, then counted and rewarded
    erase = False
    for raw in batch.messages:
        try:
            message = p.message_from_object(raw)
        except ProtocolError as exc:
            errors.append({"id": exc.message_id, "code": exc.code, "message": exc.message})
            continue
        services.metrics.messages.labels(p.WIRE_NAME[type(message)]).inc()
        if isinstance(message, p.Hello | p.Ping):
            acks.append(message.id)
        elif isinstance(message, p.ConsentUpdate) and not message.analytics:
            erase = True
            acks.append(message.id)
        elif isinstance(message, p.Identify):
            to_apply.append(await recorded_identify(services.mail, batch.site, message, country))
        elif isinstance(message, p.PhoneCapture | p.PhoneConfirm):
            errors.append({
                "id": message.id, "code": p.UNKNOWN_TYPE,
                "message": "phone messages need the WebSocket (or POST /v1/sms/optin)",
            })  # fmt: skip
        elif isinstance(message, p.OfferCapture):
            captures[message.id] = message
            to_apply.append(
                await capture_identify(services, batch.site, message, "", country, time.time())
            )
        else:
            to_apply.append(message)
    sessions = services.sessions
    if erase:
        await sessions.forget(batch.site, batch.visitor)
        await forget(services.mail, batch.site, batch.visitor)
        await forget_interest(services, batch.site, batch.visitor)
        acks += [m.id for m in to_apply]  # recorded, then erased with everything else
        return {"session": None, "acks": acks, "errors": errors}
    now = time.time()
    opened = await sessions.open(
        batch.site,
        batch.visitor,
        now=now,
        resume=batch.session,
        page=batch.page,
        consent=batch.consent,
        device=batch.device,
        channel="http",  # a hello racing this beacon joins the same visit
    )
    results = await sessions.apply_batch(
        batch.site, batch.visitor, opened.session_id, to_apply, now=now
    )
    for message, result in zip(to_apply, results, strict=True):
        if isinstance(result, SessionExpired):
            errors.append({"id": message.id, "code": p.UNAVAILABLE, "message": "session expired"})
        else:
            acks.append(message.id)
            signal = isinstance(message, p.SIGNALS)
            services.hub.count(batch.site, "signals" if signal else "events")
            if isinstance(message, p.Identify) and not result.duplicate:
                await _after_identify(services, batch, message, result, now)
            if services.interest is not None:
                services.interest.observe(batch.site, batch.visitor, message, result)
            visit = VisitRef(batch.site, batch.visitor, opened.session_id)
            await _offer_report(services, visit, captures.get(message.id, message), result, now)
    return {"session": opened.session_id, "acks": acks, "errors": errors}


async def _offer_report(
    services: Services, visit: VisitRef, message: p.ClientMessage, view: SessionView, now: float
) -> None:
    """What the offer engine does with a report that came in a batch (a tab closing right after
    painting an offer, a capture sent as the page went away): the same as on a socket, but no
    answer can reach the page. Follow-up failures are logged: the message itself is recorded."""
    offers = services.offers
    try:
        if isinstance(message, p.OfferShown):
            await offers.on_shown(visit, message, view)
        elif isinstance(message, p.OfferClicked | p.OfferDismissed) and not view.duplicate:
            await offers.count_interaction(visit.site, message, now)
        elif isinstance(message, p.OfferCapture):
            lang = view.session.get("lang", "")
            await reward_capture(services, visit, message, view, lang, now)
    except (RedisError, StoreUnavailable) as exc:
        services.metrics.redis_errors.inc()
        log.warning("offer follow-up failed", extra={"error": str(exc), "site": visit.site})


async def _after_identify(
    services: Services, batch: Batch, message: p.Identify, view: SessionView, now: float
) -> None:
    """The steps that follow a recorded identify. The identify is recorded (and acked) even if
    they fail: a replay would be a duplicate and change nothing, so a 503 would not help."""
    try:
        await after_identify(
            services.sessions, services.mail, batch.site, batch.visitor, message, view, now=now
        )
    except (RedisError, StoreUnavailable) as exc:
        services.metrics.redis_errors.inc()
        log.warning("identify follow-up failed", extra={"error": str(exc), "site": batch.site})
