"""Signing in and out: server-side sessions behind a signed cookie, CSRF tokens, login throttling.

The cookie holds a random session id and its HMAC (keyed with the settings' secret key); Redis holds
the session under a digest of the id, so ending it there (logout, idle or absolute expiry, a new
password) ends it for good. Every POST carries the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from ..store.keys import Keys
from ..store.replies import reply_text
from ..store.scripts import Scripts
from .accounts import User, digest

COOKIE = "exw_admin"
LOGIN_COOKIE = "exw_admin_login"
COOKIE_PATH = "/admin"
IDLE_S = 2 * 3600
ABSOLUTE_S = 24 * 3600
ACCOUNT_FAILURES = 5  # failed sign-ins of one account ...
IP_FAILURES = 20  # ... or from one address, within WINDOW_S, before sign-ins are refused
DEVICE_FAILURES = 5  # ... or, from a browser known to the account, of that browser alone
WINDOW_S = 15 * 60
DEVICE_COOKIE = "exw_admin_device"
DEVICE_COOKIE_S = 180 * 24 * 3600


@dataclass(frozen=True, slots=True)
class AdminSession:
    digest: str
    email: str
    csrf: str
    created: float
    seen: float
    generation: int


def session_digest(session_id: str) -> str:
    """The name a session id is stored under (the id itself never reaches Redis)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Signer:
    """HMAC-SHA256 with the settings' secret key, one purpose per label."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("the admin needs a secret key")
        self._key = secret_key.encode()

    def mac(self, purpose: str, value: str) -> str:
        message = f"{purpose}:{value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self.mac(purpose, value)}"

    def unsign(self, purpose: str, signed: str) -> str | None:
        value, _, mac = signed.rpartition(".")
        if not value or not hmac.compare_digest(mac, self.mac(purpose, value)):
            return None
        return value


class AdminSessions:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        signer: Signer,
        *,
        idle_s: int = IDLE_S,
        absolute_s: int = ABSOLUTE_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._signer = signer
        self.idle_s = idle_s
        self.absolute_s = absolute_s

    async def start(self, user: User, now: float | None = None) -> str:
        """Create a session for ``user``; returns the cookie value."""
        now = now or time.time()
        session_id = secrets.token_urlsafe(32)
        key = self._keys.admin_session(session_digest(session_id))
        fields = {
            "email": user.email,
            "csrf": secrets.token_urlsafe(32),
            "created": repr(now),
            "seen": repr(now),
            "generation": str(user.generation),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(key, self.idle_s)
            await pipe.execute()
        return self._signer.sign("session", session_id)

    async def load(self, cookie: str, now: float | None = None) -> AdminSession | None:
        """The live session behind a cookie, its idle clock restarted; None when it has ended."""
        session_id = self._signer.unsign("session", cookie) if cookie else None
        if session_id is None:
            return None
        now = now or time.time()
        name = session_digest(session_id)
        key = self._keys.admin_session(name)
        raw = {reply_text(k): reply_text(v) for k, v in (await self._redis.hgetall(key)).items()}
        if not raw.get("email"):
            return None
        created, seen = float(raw.get("created", 0)), float(raw.get("seen", 0))
        if now - seen > self.idle_s or now - created > self.absolute_s:
            await self._redis.delete(key)
            return None
        left = int(min(self.idle_s, self.absolute_s - (now - created))) + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, "seen", repr(now))
            pipe.expire(key, left)
            await pipe.execute()
        return AdminSession(
            digest=name,
            email=raw["email"],
            csrf=raw.get("csrf", ""),
            created=created,
            seen=now,
            generation=int(raw.get("generation", 0)),
        )

    async def end(self, session: AdminSession) -> None:
        await self._redis.delete(self._keys.admin_session(session.digest))


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """One sign-in attempt, reserved against its counters before the password is checked."""

    counters: tuple[tuple[str, str], ...]  # (scope, Redis key) of every reservation held
    wait_s: int = 0  # > 0: refused, try again in that many seconds


class LoginThrottle:
    """Failed sign-ins, counted in expiring Redis counters before the password hash runs.

    Each attempt first reserves a place in its counters in one atomic step per counter (Lua on
    one key), so parallel guesses cannot all slip under the limit while the hashes run. A wrong
    password keeps the reservation as a failure; a correct one releases it.

    Which counters: from a browser that signed in to the account before (a signed device cookie),
    only that device's own counter, so that other people's failures (the same office network, an
    attacker guessing the account) never lock the account's owner out of a known device.
    Otherwise the account's counter and the address's counter, both.
    """

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._reserve = Scripts.of(redis).throttle_reserve

    def _counters(self, email: str, ip: str, device: str | None) -> list[tuple[str, str, int]]:
        account = digest(email.strip().lower())
        if device is not None:
            key = self._keys.admin_login_failures("device", digest(f"{account}:{device}"))
            return [("device", key, DEVICE_FAILURES)]
        return [
            ("account", self._keys.admin_login_failures("account", account), ACCOUNT_FAILURES),
            ("ip", self._keys.admin_login_failures("ip", digest(ip)), IP_FAILURES),
        ]

    async def begin(self, email: str, ip: str, device: str | None = None) -> LoginAttempt:
        """Reserve the attempt; ``wait_s`` > 0 when it is refused (nothing is then held)."""
        held: list[tuple[str, str]] = []
        for scope, key, limit in self._counters(email, ip, device):
            answer = int(await self._reserve(keys=[key], args=[limit, WINDOW_S]))
            if answer < 0:
                await self._release(held)
                return LoginAttempt(counters=(), wait_s=-answer)
            held.append((scope, key))
        return LoginAttempt(counters=tuple(held))

    async def succeeded(self, attempt: LoginAttempt) -> None:
        """A correct password: the account's (or device's) failures are forgiven; the address
        keeps its other failures but not this attempt."""
        for scope, key in attempt.counters:
            if scope == "ip":
                await self._redis.decr(key)
            else:
                await self._redis.delete(key)

    async def _release(self, held: list[tuple[str, str]]) -> None:
        for _, key in held:
            await self._redis.decr(key)


def device_cookie(signer: Signer, email: str) -> str:
    """A new device cookie for ``email``: this browser signed in to that account."""
    device = secrets.token_urlsafe(16)
    account = digest(email.strip().lower())
    return f"{device}.{signer.mac('device', f'{account}:{device}')}"


def trusted_device(signer: Signer, cookie: str | None, email: str) -> str | None:
    """The device id of a genuine device cookie for ``email``, else None."""
    device, _, mac = (cookie or "").partition(".")
    if not device or not mac:
        return None
    account = digest(email.strip().lower())
    expected = signer.mac("device", f"{account}:{device}")
    return device if hmac.compare_digest(mac, expected) else None


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def login_location(request: Request, *, expired: bool = False) -> str:
    """The sign-in page, coming back to the page asked for afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{COOKIE_PATH}/login?next={quote(target, safe='')}"
    return location + ("&expired=1" if expired else "")


def safe_next(target: str) -> str:
    """Where to go after signing in: only an admin path of this server."""
    if target.startswith(COOKIE_PATH + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return COOKIE_PATH + "/sites"
