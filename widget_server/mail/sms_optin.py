"""Phone capture with its own consent, confirmed by a code sent by SMS (double opt-in).

:func:`request_code` takes a number and the visitor's SMS consent (separate from the email one),
normalises the number (E.164), and texts a 6-digit code to it: at most
:data:`SENDS_PER_NUMBER` per number and :data:`SENDS_PER_VISITOR` per visitor in
:data:`SEND_WINDOW_S`. Only a keyed hash of the code is stored, for :data:`CODE_TTL_S`, with
:data:`MAX_ATTEMPTS` tries. :func:`confirm_code` checks the code; only then does the profile get
``phone``, ``sms_consent`` 1, ``sms_consent_at``, ``sms_consent_source`` and
``sms_confirmed_at`` (the consent record), and SMS steps of the flows reach the visitor. The code
SMS is outside the marketing budget and quiet hours: the visitor just asked for it.
A capture without consent withdraws the SMS consent and cancels the pending SMS steps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from ..sms.phone import PhoneNumberError, normalize_phone, phone_digest
from ..sms.provider import SmsRefused, SmsSendError, SmsTransientError, SmsUncertainError
from ..store.replies import reply_text
from ..store.sites import Site
from .context import MailContext
from .sms_steps import cancel_pending_sms, sms_store

CODE_TTL_S = 10 * 60
MAX_ATTEMPTS = 5
SEND_WINDOW_S = 3600
SENDS_PER_NUMBER = 3
SENDS_PER_VISITOR = 5
_CODE_TEXT = {
    "en": "{code} is your code to get texts from {shop}. It is valid for 10 minutes.",
    "de": "{code} ist Ihr Code für SMS von {shop}. Er gilt 10 Minuten.",
}


@dataclass(frozen=True, slots=True)
class OptinResult:
    """``status``: ``code_sent``, ``confirmed``, ``withdrawn`` or ``error`` (then ``error`` is
    a stable code and ``message`` says what to do)."""

    status: str
    error: str = ""
    message: str = ""
    phone: str = ""

    @property
    def http_status(self) -> int:
        return {
            "": 200,
            "sms_off": 404,
            "unknown_visitor": 404,
            "rate_limited": 429,
            "unavailable": 503,
            "too_many_attempts": 429,
            "expired": 410,
        }.get(self.error, 400)

    def as_json(self) -> dict[str, str]:
        out = {"status": self.status}
        if self.phone:
            out["phone"] = self.phone
        if self.error:
            out["error"] = self.error
            out["message"] = self.message
        return out


def _error(code: str, message: str) -> OptinResult:
    return OptinResult("error", code, message[:1].upper() + message[1:])


def _code_hash(secret: str, site: str, visitor: str, phone: str, code: str) -> str:
    message = f"{site}\x00{visitor}\x00{phone}\x00{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


async def _over_limit(ctx: MailContext, key: str, limit: int) -> bool:
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, SEND_WINDOW_S, nx=True)
        count, _ = await pipe.execute()
    return int(count) > limit


async def request_code(
    ctx: MailContext,
    site: Site,
    visitor: str,
    raw_phone: str,
    consent: bool,
    *,
    now: float,
    locale: str = "",
    source: str = "widget",
) -> OptinResult:
    """Text a confirmation code to the number (see the module docstring)."""
    if ctx.sms is None:
        return _error("sms_off", "SMS is not set up on this server")
    profile_key = ctx.keys.profile(site.key, visitor)
    if not consent:
        return await withdraw(ctx, site.key, visitor, now=now)
    try:
        phone = normalize_phone(raw_phone)
    except PhoneNumberError as exc:
        return _error("invalid_phone", str(exc))
    if not await ctx.redis.exists(profile_key):
        return _error("unknown_visitor", "this visitor is not known on the site")
    store = sms_store(ctx)
    if await store.suppression(site.key, phone) == "stopped":
        return _error("phone_stopped", "this number asked for no texts; text START to us first")
    if await _over_limit(
        ctx, ctx.keys.sms_sends(site.key, "p" + phone_digest(phone)), SENDS_PER_NUMBER
    ):
        return _error("rate_limited", "too many codes for this number; try again in an hour")
    if await _over_limit(ctx, ctx.keys.sms_sends(site.key, "v" + visitor), SENDS_PER_VISITOR):
        return _error("rate_limited", "too many codes; try again in an hour")
    code = f"{secrets.randbelow(10**6):06d}"
    key = ctx.keys.sms_code(site.key, visitor)
    fields = {
        "phone": phone,
        "hash": _code_hash(ctx.settings.secret_key, site.key, visitor, phone, code),
        "attempts": "0",
        "consent_at": repr(now),
        "source": source,
    }
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, items=[part for pair in fields.items() for part in pair])
        pipe.expire(key, CODE_TTL_S)
        await pipe.execute()
    words = _CODE_TEXT.get((locale or site.locale).split("-")[0], _CODE_TEXT["en"])
    try:
        await ctx.sms.send(phone, words.format(code=code, shop=site.name))
    except (SmsTransientError, SmsUncertainError):
        await ctx.redis.delete(key)
        return _error("unavailable", "the code could not be sent just now; try again")
    except SmsRefused as exc:
        await ctx.redis.delete(key)
        if exc.suppress == "stopped":
            await store.suppress(site.key, phone, "stopped", now=now)
            return _error("phone_stopped", "this number asked for no texts")
        return _error("invalid_phone", "this number cannot get texts")
    except SmsSendError:
        await ctx.redis.delete(key)
        return _error("unavailable", "the code could not be sent just now; try again")
    return OptinResult("code_sent", phone=phone)


async def confirm_code(
    ctx: MailContext, site: Site, visitor: str, code: str, *, now: float
) -> OptinResult:
    """Check the code the visitor typed; on a match record the confirmed SMS consent."""
    if ctx.sms is None:
        return _error("sms_off", "SMS is not set up on this server")
    code = code.strip()
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return _error("invalid_code", "the code is 6 digits")
    key = ctx.keys.sms_code(site.key, visitor)
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(key, "attempts", 1)
        pipe.hgetall(key)
        attempts, raw = await pipe.execute()
    pending = {reply_text(k): reply_text(v) for k, v in raw.items()}
    if "hash" not in pending:
        await ctx.redis.delete(key)  # the increment alone made a key: drop it
        return _error("expired", "no code is pending, or it expired; ask for a new one")
    if int(attempts) > MAX_ATTEMPTS:
        await ctx.redis.delete(key)
        return _error("too_many_attempts", "too many wrong codes; ask for a new one")
    phone = pending["phone"]
    expected = _code_hash(ctx.settings.secret_key, site.key, visitor, phone, code)
    if not hmac.compare_digest(expected, pending["hash"]):
        left = MAX_ATTEMPTS - int(attempts)
        return _error("wrong_code", f"that code is not right; {left} tries left")
    if not await ctx.redis.delete(key):
        return _error("expired", "no code is pending, or it expired; ask for a new one")
    profile_key = ctx.keys.profile(site.key, visitor)
    previous = reply_text(await ctx.redis.hget(profile_key, "phone") or b"")
    record = {
        "phone": phone,
        "sms_consent": "1",
        "sms_consent_at": pending.get("consent_at", repr(now)),
        "sms_consent_source": pending.get("source", "widget"),
        "sms_confirmed_at": repr(now),
    }
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hset(profile_key, items=[part for pair in record.items() for part in pair])
        pipe.hdel(profile_key, "sms_consent_withdrawn_at")
        pipe.ttl(profile_key)
        *_, ttl = await pipe.execute()
    if int(ttl) < 0:
        await ctx.redis.expire(profile_key, ctx.settings.retention_s)
    store = sms_store(ctx)
    if previous and previous != phone:
        await store.forget_phone(site.key, visitor, previous)
    await store.remember_phone(site.key, visitor, phone)
    return OptinResult("confirmed", phone=phone)


async def withdraw(ctx: MailContext, site: str, visitor: str, *, now: float) -> OptinResult:
    """The visitor took back their SMS consent: no SMS steps from now on."""
    profile_key = ctx.keys.profile(site, visitor)
    if reply_text(await ctx.redis.hget(profile_key, "sms_consent") or b"") == "1":
        await ctx.redis.hset(
            profile_key, items=["sms_consent", "0", "sms_consent_withdrawn_at", repr(now)]
        )
    phone = reply_text(await ctx.redis.hget(profile_key, "phone") or b"")
    await ctx.redis.delete(ctx.keys.sms_code(site, visitor))
    if phone:
        await cancel_pending_sms(ctx, site, phone, visitor=visitor)
    return OptinResult("withdrawn")
