"""HTTP endpoints of the SMS channel.

The provider's webhooks, configured at the provider (Twilio: the number's "A message comes in"
URL, and the status callback every SMS names itself):

- ``POST /v1/sms/inbound?site=KEY``: a text to the site's number. ``STOP``, ``STOPALL``,
  ``UNSUBSCRIBE``, ``CANCEL``, ``END``, ``QUIT`` (the whole body, trimmed, any case) suppress
  the number for the site and cancel every pending SMS to it; ``START``, ``YES``, ``UNSTOP``
  lift that suppression (never an email one). Answers an empty TwiML ``<Response/>``.
- ``POST /v1/sms/status?site=KEY``: a message's status; ``delivered`` and ``failed`` /
  ``undelivered`` are counted once per message in its flow's stats (``sms_delivered:STEP``,
  ``sms_failed:STEP``); error 21610 (the recipient had sent STOP) suppresses the number.

Both must carry ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed by ``SMS_AUTH_TOKEN``, of the
full URL (``MAIL_PUBLIC_URL`` + path + query when that is set, as the provider sees this server)
followed by every POST parameter sorted by name, name and value concatenated. A wrong or
missing signature answers 403 ``{"error": {"code": "bad_signature"}}`` and records nothing.

The phone double opt-in for the shop's own form (JSON, CORS for the site's origins):

- ``POST /v1/sms/optin?site=KEY`` ``{"visitor", "phone", "consent", "locale"?}`` texts a code;
- ``POST /v1/sms/confirm?site=KEY`` ``{"visitor", "code"}`` confirms it.

Both answer ``{"status": ...}`` or ``{"status": "error", "error": CODE, "message": ...}`` (see
:class:`~widget_server.mail.sms_optin.OptinResult`).

And ``GET /v1/sms/l/TOKEN``: the short link in an SMS; counts the click, redirects to the shop.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..bodies import read_bounded
from ..sms.phone import PhoneNumberError, normalize_phone
from ..sms.store import keyword
from ..store.sites import Site, origin_allowed
from ..wire.protocol import VisitorId
from .context import MailContext
from .experiments import FlowMetric
from .routes import binder
from .sms_optin import OptinResult, confirm_code, request_code
from .sms_steps import cancel_pending_sms, link_token_valid, sms_store

MAX_FORM_BYTES = 16 * 1024
_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def twilio_signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` for a POST of ``params`` to ``url``."""
    data = url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _url(ctx: MailContext, request: Request) -> str:
    """The URL the provider posted to, as it sees this server."""
    if not ctx.settings.public_url:
        return str(request.url)
    query = request.url.query
    return f"{ctx.settings.public_url}{request.url.path}" + (f"?{query}" if query else "")


async def _site(ctx: MailContext, request: Request) -> Site | None:
    key = request.query_params.get("site", "")
    return await ctx.sites.get(key) if key and len(key) <= 64 else None


async def _signed_form(
    ctx: MailContext, request: Request
) -> tuple[Site, dict[str, str]] | Response:
    """The site and the POST parameters of a request the provider signed; or the refusal."""
    if ctx.sms is None or not ctx.sms.settings.enabled:
        return _error(404, "sms_off", "no SMS provider is set up on this server")
    site = await _site(ctx, request)
    if site is None:
        return _error(404, "unknown_site", "no site with this key")
    body = await read_bounded(request, MAX_FORM_BYTES)
    if body is None:
        return _error(413, "too_large", "the request body is too large")
    try:
        params = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return _error(400, "invalid", "the body is not a form")
    given = request.headers.get("x-twilio-signature", "")
    expected = twilio_signature(ctx.sms.settings.auth_token, _url(ctx, request), params)
    if not given or not hmac.compare_digest(given, expected):
        return _error(403, "bad_signature", "X-Twilio-Signature does not match this URL and body")
    return site, dict(params)


async def inbound(ctx: MailContext, request: Request) -> Response:
    checked = await _signed_form(ctx, request)
    if isinstance(checked, Response):
        return checked
    site, form = checked
    try:
        phone = normalize_phone(form.get("From", ""))
    except PhoneNumberError:
        return Response(_TWIML, media_type="text/xml")
    store = sms_store(ctx)
    wanted = keyword(form.get("Body", ""))
    if wanted == "stop":
        await store.suppress(site.key, phone, "stopped")
        await cancel_pending_sms(ctx, site.key, phone)
        ctx.metrics.unsubscribes.labels("sms_stopped").inc()
    elif wanted == "start":
        await store.lift(site.key, phone)
    return Response(_TWIML, media_type="text/xml")


async def status(ctx: MailContext, request: Request) -> Response:
    checked = await _signed_form(ctx, request)
    if isinstance(checked, Response):
        return checked
    site, form = checked
    state = form.get("MessageStatus", "")
    store = sms_store(ctx)
    message = await store.message(form.get("MessageSid", ""))
    if form.get("ErrorCode") == "21610":
        with contextlib.suppress(PhoneNumberError):
            await store.suppress(site.key, normalize_phone(form.get("To", "")), "stopped")
    final = {"delivered": "delivered", "failed": "failed", "undelivered": "failed"}.get(state)
    mine = message.get("site") == site.key
    if mine and final and await store.final_status(form["MessageSid"], final):
        key = ctx.keys.mail_stats(site.key, message["flow"])
        await ctx.redis.hincrby(key, f"sms_{final}:{message['step']}", 1)
        flow = (await ctx.flows.get(site.key)).flow(message["flow"])
        if flow is not None:
            metric: FlowMetric = "sms_delivered" if final == "delivered" else "sms_failed"
            await ctx.scheduler.experiments.count(site.key, flow, metric, time.time())
    return Response(status_code=204)


class OptinRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    visitor: VisitorId
    phone: Annotated[str, Meta(max_length=40)]
    consent: bool
    locale: Annotated[str, Meta(max_length=5)] = ""


class ConfirmRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    visitor: VisitorId
    code: Annotated[str, Meta(max_length=12)]


def _cors(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {}
    return {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "content-type",
        "vary": "origin",
    }


async def _form_site(
    ctx: MailContext, request: Request
) -> tuple[Site, bytes, dict[str, str]] | Response:
    origin = request.headers.get("origin")
    site = await _site(ctx, request)
    if site is None:
        return _error(404, "unknown_site", "no site with this key")
    if origin is not None and not origin_allowed(site, origin):
        return _error(403, "origin_not_allowed", "this page's origin is not allowed for the site")
    body = await read_bounded(request, MAX_FORM_BYTES)
    if body is None:
        return _error(413, "too_large", "the request body is too large", _cors(origin))
    return site, body, _cors(origin)


def _answer(result: OptinResult, headers: dict[str, str]) -> Response:
    return JSONResponse(result.as_json(), result.http_status, headers=headers)


Asked = TypeVar("Asked")


async def _asked(
    ctx: MailContext, request: Request, kind: type[Asked]
) -> tuple[Site, Asked, dict[str, str]] | Response:
    """The site, the decoded JSON body and the CORS headers of a shop's request; or the
    refusal."""
    checked = await _form_site(ctx, request)
    if isinstance(checked, Response):
        return checked
    site, body, headers = checked
    try:
        return site, msgspec.json.decode(body, type=kind), headers
    except msgspec.DecodeError as exc:
        return _error(400, "invalid", str(exc), headers)


async def optin(ctx: MailContext, request: Request) -> Response:
    checked = await _asked(ctx, request, OptinRequest)
    if isinstance(checked, Response):
        return checked
    site, asked, headers = checked
    result = await request_code(
        ctx, site, asked.visitor, asked.phone, asked.consent, now=time.time(),
        locale=asked.locale, source="shop",
    )  # fmt: skip
    return _answer(result, headers)


async def confirm(ctx: MailContext, request: Request) -> Response:
    checked = await _asked(ctx, request, ConfirmRequest)
    if isinstance(checked, Response):
        return checked
    site, asked, headers = checked
    return _answer(
        await confirm_code(ctx, site, asked.visitor, asked.code, now=time.time()), headers
    )


async def preflight(ctx: MailContext, request: Request) -> Response:
    origin = request.headers.get("origin")
    site = await _site(ctx, request)
    if site is None or origin is None or not origin_allowed(site, origin):
        return Response(status_code=403)
    return Response(status_code=204, headers=_cors(origin))


async def short_link(ctx: MailContext, request: Request) -> Response:
    token = request.path_params["token"]
    if not link_token_valid(ctx.settings.secret_key, token):
        return PlainTextResponse("this link is not valid", 404)
    raw = await ctx.redis.get(ctx.keys.sms_link(token))
    if not raw:
        return PlainTextResponse("this link has expired", 410)
    link = json.loads(raw)
    site = await ctx.sites.get(str(link.get("s", "")))
    target = str(link.get("u", ""))
    if site is None:
        return PlainTextResponse("this link is not valid", 404)
    config = await ctx.flows.get(site.key)
    parts = urlsplit(target)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    shop = urlsplit(config.shop_url)
    if parts.scheme not in ("http", "https") or not (
        origin_allowed(site, origin) or origin == f"{shop.scheme}://{shop.netloc}".lower()
    ):
        return PlainTextResponse("this link is not valid", 400)
    await ctx.redis.hincrby(
        ctx.keys.mail_stats(site.key, str(link["f"])), f"sms_clicks:{link['n']}", 1
    )
    flow = config.flow(str(link["f"]))
    if flow is not None and link.get("v"):
        await ctx.scheduler.experiments.clicked(
            site.key, str(link["v"]), flow, time.time(), channel="sms"
        )
    return RedirectResponse(target, 302, headers={"cache-control": "no-store"})


def sms_routes(ctx: MailContext | Callable[[], MailContext]) -> list[BaseRoute]:
    """The SMS endpoints, bound to ``ctx`` or to a function returning it."""
    bind = binder(ctx)
    return [
        Route("/v1/sms/inbound", bind(inbound), methods=["POST"]),
        Route("/v1/sms/status", bind(status), methods=["POST"]),
        Route("/v1/sms/optin", bind(optin), methods=["POST"]),
        Route("/v1/sms/optin", bind(preflight), methods=["OPTIONS"]),
        Route("/v1/sms/confirm", bind(confirm), methods=["POST"]),
        Route("/v1/sms/confirm", bind(preflight), methods=["OPTIONS"]),
        Route("/v1/sms/l/{token}", bind(short_link), methods=["GET"]),
    ]
