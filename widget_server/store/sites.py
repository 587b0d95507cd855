"""Sites (one per shop): key, allowed origins, currency, locale; stored in Redis, cached in-process.

The cache is invalidated on every node through the broadcast channel when a site changes, so the
hot path never reads a site from Redis after the first connection.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, Struct
from redis.asyncio import Redis

from ..errors import WidgetServerError
from .bus import Bus
from .frequency import Frequency
from .keys import Keys
from .replies import reply_text

SITE_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TEXT_LOCALES = 20
TextLocale = Annotated[str, Meta(pattern=r"^[a-z]{2}$")]
_ORIGIN = re.compile(r"^(https?)://([a-z0-9.*-]+)(:(\d{1,5}|\*))?$")


class SiteError(WidgetServerError):
    """A site definition that cannot be saved; the message says which field and why."""


ApplyMode = Literal["none", "shopify", "url", "callback"]


class CodeApply(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the shop applies a code the widget shows, so the visitor need not copy it:
    ``shopify`` (the shop's ``/discount/CODE?redirect=PATH`` link), ``url`` (a query parameter
    named ``param`` on the call to action's page, as WooCommerce coupon plugins read it),
    ``callback`` (the shop's own script: ``exitwidget.push(["on", "code", fn])``) or ``none``."""

    mode: ApplyMode = "none"
    param: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,40}$")] = "coupon"


class Site(Struct, frozen=True, kw_only=True):
    key: Annotated[str, Meta(pattern=SITE_KEY_PATTERN)]
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    origins: Annotated[list[str], Meta(max_length=50)]
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] = "EUR"
    locale: Annotated[str, Meta(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    # The other languages the shop sells in (``de``, ``fr``): the campaign editor offers the
    # offers' texts in each of them, next to the texts in ``locale``.
    text_locales: Annotated[list[TextLocale], Meta(max_length=MAX_TEXT_LOCALES)] = msgspec.field(
        default_factory=list
    )
    timezone: Annotated[str, Meta(max_length=64)] = "UTC"
    frequency: Frequency = Frequency()
    apply_code: CodeApply = CodeApply()
    # The site-wide holdout: this share of visitors never sees an overlay or a message, so the
    # dashboard can tell what the tool added. A new share starts a new version (and comparison).
    holdout: Annotated[float, Meta(ge=0, le=0.5)] = 0.0
    holdout_version: Annotated[int, Meta(ge=1)] = 1
    holdout_started: float = 0.0
    secret: str = ""
    created: float = 0.0


def normalize_origin(origin: str) -> str:
    """Lower-case an origin pattern and check its shape; raise SiteError if it is not one."""
    value = origin.strip().lower().rstrip("/")
    if value == "*":
        return value
    if not _ORIGIN.match(value):
        raise SiteError(
            f"origin {origin!r} must look like https://shop.example.com, "
            "https://*.example.com, http://localhost:8000 or *"
        )
    return value


def origin_allowed(site: Site, origin: str | None) -> bool:
    """Whether a browser ``Origin`` header may talk to ``site``.

    A missing origin (a server-side client) is allowed: only browsers send one, and the check
    exists to keep other web pages from using a shop's site key. Patterns: exact origins,
    ``*`` (any), ``https://*.example.com`` (subdomains), ``http://localhost:*`` (any port).
    """
    if origin is None:
        return True
    origin = origin.lower()
    for pattern in site.origins:
        if pattern in ("*", origin):
            return True
        if "*" in pattern and _wildcard_match(pattern, origin):
            return True
    return False


def _wildcard_match(pattern: str, origin: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\.", r"(?:[a-z0-9-]+\.)+").replace(r":\*", r":\d{1,5}")
    return re.fullmatch(regex, origin) is not None


def new_site(
    key: str,
    *,
    name: str | None = None,
    origins: list[str],
    currency: str = "EUR",
    locale: str = "en",
    timezone: str = "UTC",
    frequency: Frequency | None = None,
    text_locales: list[str] | None = None,
    apply_code: CodeApply | None = None,
    holdout: float = 0.0,
) -> Site:
    """Validate and build a site; raise SiteError naming the field that is wrong."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SiteError(f"timezone: unknown time zone {timezone!r} (like Europe/Berlin)") from None
    try:
        return msgspec.convert(
            {
                "key": key,
                "name": name or key,
                "origins": [normalize_origin(o) for o in origins],
                "currency": currency.upper(),
                "locale": locale,
                "text_locales": [
                    code for code in dict.fromkeys(text_locales or []) if code != locale[:2]
                ],
                "timezone": timezone,
                "frequency": msgspec.to_builtins(frequency or Frequency()),
                "apply_code": msgspec.to_builtins(apply_code or CodeApply()),
                "holdout": holdout,
                "secret": secrets.token_urlsafe(32),
                "created": time.time(),
            },
            Site,
        )
    except msgspec.ValidationError as exc:
        raise SiteError(str(exc)) from None


def with_holdout_version(previous: Site | None, site: Site, now: float) -> Site:
    """``site`` with its holdout's version and start: the previous ones while the share is
    the same, the next version from ``now`` when it changed."""
    replace = msgspec.structs.replace
    if previous is None:
        return replace(site, holdout_version=1, holdout_started=now)
    if previous.holdout == site.holdout:
        return replace(site, holdout_version=previous.holdout_version,
                       holdout_started=previous.holdout_started)  # fmt: skip
    return replace(site, holdout_version=previous.holdout_version + 1, holdout_started=now)


class SiteRegistry:
    """Read-through cache of sites; call :meth:`invalidate` when a site changes anywhere."""

    _NEGATIVE_TTL_S = 5.0

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._cache: dict[str, tuple[Site | None, float]] = {}

    async def get(self, key: str) -> Site | None:
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and (cached[0] is not None or now - cached[1] < self._NEGATIVE_TTL_S):
            return cached[0]
        raw = await self._redis.get(self._keys.site(key))
        site = msgspec.json.decode(raw, type=Site) if raw else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (site, now)
        return site

    def invalidate(self, key: str) -> None:
        self._cache.pop(key, None)

    async def save(self, site: Site) -> None:
        """Store the site, then list it, then tell every node. The record comes first: a save
        cut short leaves at worst a working site that :meth:`list` misses until saved again.

        The site-wide holdout's version and start are the store's: kept while the share stays,
        a new version from now when it changes."""
        raw = await self._redis.get(self._keys.site(site.key))
        previous = msgspec.json.decode(raw, type=Site) if raw else None
        site = with_holdout_version(previous, site, time.time())
        await self._redis.set(self._keys.site(site.key), msgspec.json.encode(site))
        await self._redis.sadd(self._keys.site_index(), site.key)
        await Bus(self._redis).publish(
            self._keys.broadcast_channel(),
            msgspec.json.encode({"kind": "site_changed", "site": site.key}),
        )
        self.invalidate(site.key)

    async def list(self) -> list[Site]:
        keys = sorted(reply_text(k) for k in await self._redis.smembers(self._keys.site_index()))
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:  # one slot per site
            for key in keys:
                pipe.get(self._keys.site(key))
            raws = await pipe.execute()
        return [msgspec.json.decode(raw, type=Site) for raw in raws if raw]
