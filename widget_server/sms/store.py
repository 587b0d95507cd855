"""What the SMS channel keeps in Redis: suppressed numbers, the visitors of a number, the
messages flows sent (for the provider's status callbacks), and the profile's SMS consent.

A profile reaches by SMS once the visitor confirmed their number with the code sent to it
(``phone``, ``sms_consent`` 1, ``sms_consent_at``, ``sms_confirmed_at``), while the consent
banner has not refused marketing since, and while the number is not suppressed for the site
(the visitor texted STOP, or the provider called the number invalid).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Literal

from redis.asyncio import Redis

from ..store.keys import Keys
from ..store.replies import reply_text
from .phone import phone_digest

SmsSuppression = Literal["stopped", "invalid"]
MESSAGE_TTL_S = 14 * 24 * 3600
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})


def sms_consent(profile: Mapping[str, str]) -> bool:
    """Whether the profile has a confirmed SMS consent the consent banner did not refuse since."""
    if profile.get("sms_consent") != "1" or not profile.get("sms_confirmed_at"):
        return False
    if not profile.get("phone"):
        return False
    if profile.get("consent_marketing") != "0":
        return True
    try:
        return float(profile.get("consent_changed") or 0) <= float(
            profile.get("sms_consent_at") or 0
        )
    except ValueError:
        return False


def keyword(body: str) -> Literal["stop", "start", ""]:
    """What an inbound text asks for: its trimmed, case-insensitive body as a whole word."""
    word = body.strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return ""


class SmsStore:
    def __init__(self, redis: Redis, keys: Keys, *, retention_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._retention_s = retention_s

    async def suppression(self, site: str, phone: str) -> str | None:
        raw = await self._redis.hget(self._keys.sms_suppressed(site), phone)
        return str(json.loads(raw)["reason"]) if raw else None

    async def suppress(
        self, site: str, phone: str, reason: SmsSuppression, *, now: float | None = None
    ) -> None:
        record = json.dumps({"reason": reason, "at": time.time() if now is None else now})
        await self._redis.hset(self._keys.sms_suppressed(site), phone, record)

    async def lift(self, site: str, phone: str) -> bool:
        """Lift the number's SMS suppression (never an email one). True if there was one."""
        return bool(await self._redis.hdel(self._keys.sms_suppressed(site), phone))

    async def remember_phone(self, site: str, visitor: str, phone: str) -> None:
        key = self._keys.sms_phone_visitors(site, phone_digest(phone))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, visitor)
            pipe.expire(key, self._retention_s)
            await pipe.execute()

    async def visitors(self, site: str, phone: str) -> list[str]:
        members = await self._redis.smembers(
            self._keys.sms_phone_visitors(site, phone_digest(phone))
        )
        return sorted(reply_text(m) for m in members)

    async def forget_phone(self, site: str, visitor: str, phone: str) -> None:
        await self._redis.srem(self._keys.sms_phone_visitors(site, phone_digest(phone)), visitor)

    async def message_sent(self, sid: str, *, site: str, flow: str, step: int, now: float) -> None:
        """Keep what a status callback for ``sid`` needs (no one's id: a count is all it is)."""
        key = self._keys.sms_message(sid)
        fields: dict[str, str] = {
            "site": site, "flow": flow, "step": str(step), "sent_at": repr(now)
        }  # fmt: skip
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, items=[part for pair in fields.items() for part in pair])
            pipe.expire(key, MESSAGE_TTL_S)
            await pipe.execute()

    async def message(self, sid: str) -> dict[str, str]:
        raw = await self._redis.hgetall(self._keys.sms_message(sid))
        return {reply_text(k): reply_text(v) for k, v in raw.items()}

    async def final_status(self, sid: str, status: str) -> bool:
        """Record the message's final status (delivered, failed); True the first time only."""
        key = self._keys.sms_message(sid)
        return bool(await self._redis.hsetnx(key, "final", status))
