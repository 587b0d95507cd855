"""Email consent on the way in: what the server adds to an ``identify`` before it is recorded,
and what follows once it is (shared by the WebSocket and the HTTP batch endpoint).

The consent record itself (time, source, wording version, country, withdrawal, confirmation) is
written to the profile by ``lua/session_event.lua`` in the same atomic step as the address. The
country comes only from a proxy header the operator names (``WIDGET_CONSENT_COUNTRY_HEADER``,
off by default) and is reduced to an ISO 3166 alpha-2 code; the visitor's IP is never stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec
from redis.exceptions import RedisError

from ..errors import StoreUnavailable
from ..mail.context import MailContext
from ..mail.jobs import marketing_consent
from ..mail.optin import awaiting_confirmation, forget_confirmation
from ..offers.engine import Visit
from ..offers.texts import pick
from ..visitors.session_view import SessionView
from ..visitors.sessions import SessionStore
from ..wire import protocol as p
from .services import Services

_COUNTRY = re.compile(r"[A-Z]{2}")
# Codes proxies use for "no country" (Cloudflare: XX unknown, T1 Tor).
_NO_COUNTRY = frozenset({"XX", "T1"})


def trusted_country(headers: Mapping[str, str], header: str) -> str:
    """The two-letter country from the trusted proxy header ``header``, or ``""`` when the
    setting is off, the header is missing, or it holds anything but a country code."""
    if not header:
        return ""
    value = headers.get(header, "").strip().upper()
    return value if _COUNTRY.fullmatch(value) and value not in _NO_COUNTRY else ""


async def recorded_identify(
    mail: MailContext, site: str, message: p.Identify, country: str
) -> p.RecordedIdentify:
    """``message`` with the server's part of the consent record: the country (only with
    consent) and whether the site asks for double opt-in. Raises StoreUnavailable."""
    try:
        config = await mail.flows.get(site)
    except RedisError as exc:
        raise StoreUnavailable(f"could not read the email settings: {exc}") from exc
    fields = msgspec.structs.asdict(message)
    return p.RecordedIdentify(
        **fields, country=country if message.consent else "", confirm=config.double_opt_in
    )


async def after_identify(
    sessions: SessionStore,
    mail: MailContext,
    site: str,
    visitor: str,
    message: p.Identify,
    view: SessionView,
    *,
    now: float,
) -> None:
    """Index the address for the order webhook; then either record a withdrawal (jobs already
    scheduled never send) or, for a consent still waiting for confirmation, queue the
    confirmation email (at most one per address and day, so repeated identifies are harmless),
    or start the welcome series (once: repeated identifies do not start it again).
    Raises RedisError or StoreUnavailable; the identify itself is recorded by then."""
    await sessions.remember_email(site, visitor, message.email)
    if not message.consent:
        await mail.scheduler.consent_withdrawn(site, visitor, now=now)
    elif awaiting_confirmation(view.profile):
        await mail.scheduler.confirmation_requested(
            site, visitor, view.profile.get("email") or message.email, now=now
        )
    else:  # consent that counts now: the welcome series, once
        await mail.scheduler.welcome(site, visitor, now=now, profile=view.profile)


async def forget(mail: MailContext, site: str, visitor: str) -> int:
    """Erase the visitor's email data, the pending confirmation email included. Returns the
    scheduled emails cancelled."""
    cancelled = await mail.scheduler.forget(site, visitor)
    await forget_confirmation(mail, site, visitor)
    return cancelled


async def capture_identify(
    services: Services, site: str, message: p.OfferCapture, lang: str, country: str, now: float
) -> p.RecordedIdentify:
    """The ``identify`` an email capture records: the address and consent, from the widget, with
    the version of the consent sentence the offer showed. Raises StoreUnavailable."""
    try:
        wording = await services.offers.consent_wording(site, message.offer, lang, now)
    except RedisError as exc:
        raise StoreUnavailable(f"could not record the consent wording: {exc}") from exc
    identify = p.Identify(
        id=message.id, email=message.email, consent=message.consent, source="widget",
        wording=wording,
    )  # fmt: skip
    return await recorded_identify(services.mail, site, identify, country)


async def reward_capture(
    services: Services,
    sock: Visit,
    message: p.OfferCapture,
    view: SessionView,
    lang: str,
    now: float,
) -> p.Reward | None:
    """After an email capture's address is recorded: count it, give its code, and return the
    ``reward`` to answer with. With consent the code is emailed too: now, or once the address is
    confirmed where the site asks for double opt-in (the profile keeps ``reward_pending`` until
    then). Raises RedisError or StoreUnavailable."""
    result = await services.offers.on_capture(sock, message, view, now)
    if result is None:
        return None
    locale = await services.offers.site_locale(sock.site)
    thanks = pick(result.variant.offer.thanks, lang, locale, "thanks")
    note = ""
    if result.code:
        if not any(result.variant.offer.thanks.values()):
            thanks = pick(None, lang, locale, "thanks_with_code")
        if message.consent and marketing_consent(view.profile):
            await services.mail.scheduler.reward_requested(
                sock.site, sock.visitor, message.email, result.campaign.id, now=now, locale=lang
            )
            note = pick(None, lang, locale, "code_emailed")
        elif message.consent and awaiting_confirmation(view.profile):
            await services.redis.hset(
                services.keys.profile(sock.site, sock.visitor),
                mapping={"reward_pending": result.campaign.id, "reward_lang": lang},
            )
            note = pick(None, lang, locale, "code_after_confirmation")
    return p.Reward(
        offer=message.offer,
        code=result.code or None,
        expires_at=result.expires_at_ms or None,
        text=thanks,
        note=note.replace("{email}", message.email),
    )
