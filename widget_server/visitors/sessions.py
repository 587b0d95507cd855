"""Live visitor sessions and profiles in Redis: one Lua call (one round trip) per event.

A session is a hash with a sliding TTL; the visitor profile is a hash with a retention TTL. All keys
of a visitor share one hash tag (see :mod:`widget_server.store.keys`). Message ids make every apply
idempotent: replaying a message after a reconnect returns the current view and changes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from ..errors import StoreUnavailable, WidgetServerError
from ..store.keys import Keys
from ..store.replies import reply_text
from ..store.scripts import Scripts, pipelined
from ..wire import protocol as p
from .session_view import SessionView

# A hello and a beacon of one visitor without a session id this close together are one visit:
# the page was left before the hello's welcome arrived, and the widget sent its queue by beacon.
OPENING_WINDOW_MS = 5000
# Reading the session ids and erasing them is retried when a session opens in between.
FORGET_ATTEMPTS = 5


class SessionExpired(WidgetServerError):
    """The session a message refers to no longer exists (TTL ran out or it was erased)."""


_json = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Places:
    """What an exit signal's script reserved (:meth:`SessionStore.apply_signal`): the number of
    the offer a place was reserved for, counting from 1 (0: none), and the offers refused
    before it as ``[number, reason, limit]``."""

    chosen: int
    refused: list[list[Any]]


@dataclass(frozen=True, slots=True)
class OpenedSession:
    session_id: str
    resumed: bool
    view: SessionView


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


def landing_context(page: p.PageContext | None) -> dict[str, str]:
    """Landing URL, referrer and UTM parameters of the first page of a session."""
    if page is None:
        return {}
    query = parse_qs(urlparse(page.url).query)
    context = {"url": page.url, "referrer": page.referrer}
    for name in ("utm_source", "utm_medium", "utm_campaign"):
        if query.get(name):
            context[name] = query[name][0][:200]
    return context


class SessionStore:
    """The Redis adapter for sessions, profiles and visitor erasure."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        *,
        session_ttl_s: int,
        profile_ttl_s: int,
        presence_ttl_s: int,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._session_ttl = session_ttl_s
        self._profile_ttl = profile_ttl_s
        self._presence_ttl = presence_ttl_s
        self._batcher = _ApplyBatcher(redis, scripts.session_event)

    async def open(
        self,
        site: str,
        visitor: str,
        *,
        now: float,
        resume: str | None = None,
        page: p.PageContext | None = None,
        consent: p.Consent | None = None,
        device: str | None = None,
        lang: str = "",
        tz: str = "",
        connection_id: str = "",
        node_id: str = "",
        channel: str = "ws",
    ) -> OpenedSession:
        """Resume ``resume`` if it still exists, else start a new session; register the socket.

        An open without a usable session id joins the session that an open through the other
        ``channel`` (``ws`` a hello, ``http`` a beacon) started in the last
        :data:`OPENING_WINDOW_MS`: the two raced, and are one visit."""
        new_id = new_session_id()
        context: dict[str, Any] = {
            "page": msgspec.to_builtins(page) if page else None,
            "device": device or "",
            "lang": lang,
            "tz": tz,
            "consent": msgspec.to_builtins(consent) if consent else None,
            "landing": landing_context(page),
        }
        args: list[Any] = [
            repr(now),
            self._session_ttl,
            self._profile_ttl,
            resume or "",
            new_id,
            msgspec.json.encode(context),
            connection_id,
            node_id,
            self._presence_ttl,
            OPENING_WINDOW_MS,
            "",
            channel,
        ]
        try:
            sid, resumed, raw = await self._open(site, visitor, resume or new_id, new_id, args)
            if resumed == -1:  # raced an open through the other channel: join its session
                joined = reply_text(raw)
                args[3], args[10] = joined, "1"
                sid, resumed, raw = await self._open(site, visitor, joined, new_id, args)
        except RedisError as exc:
            raise StoreUnavailable(f"could not open the session: {exc}") from exc
        session_id = sid.decode() if isinstance(sid, bytes) else str(sid)
        return OpenedSession(session_id, bool(resumed), SessionView.from_json(raw))

    async def _open(
        self, site: str, visitor: str, resume: str, new_id: str, args: list[Any]
    ) -> tuple[Any, int, Any]:
        k = self._keys
        sid, resumed, raw = await self._scripts.session_open(
            keys=[
                k.session(site, visitor, resume),
                k.session(site, visitor, new_id),
                k.profile(site, visitor),
                k.sessions(site, visitor),
                k.connections(site, visitor),
                k.opening(site, visitor),
            ],
            args=args,
        )
        return sid, int(resumed), raw

    def _apply_call(
        self, site: str, visitor: str, session_id: str, message: p.ClientMessage, now: float
    ) -> tuple[list[str], list[Any]]:
        k = self._keys
        keys = [
            k.session(site, visitor, session_id),
            k.seen(site, visitor, session_id),
            k.profile(site, visitor),
            k.orders(site, visitor),
            k.held(site, visitor),
        ]
        args: list[Any] = [
            repr(now),
            self._session_ttl,
            self._profile_ttl,
            message.id,
            p.WIRE_NAME[type(message)],
            msgspec.json.encode(message),
        ]
        return keys, args

    async def apply(
        self, site: str, visitor: str, session_id: str, message: p.ClientMessage, *, now: float
    ) -> SessionView:
        """Apply one message at most once; raise SessionExpired or StoreUnavailable.

        Messages applied by many connections in the same event-loop turn share one pipelined
        round trip (see :class:`_ApplyBatcher`); each still runs as its own atomic script.
        """
        keys, args = self._apply_call(site, visitor, session_id, message, now)
        return SessionView.from_json(await self._run(keys, args, session_id, message))

    async def apply_signal(
        self,
        site: str,
        visitor: str,
        session_id: str,
        message: p.SignalMessage,
        places: bytes,
        *,
        now: float,
    ) -> tuple[SessionView, Places | None]:
        """:meth:`apply` for an exit signal, reserving in the same script call a place under the
        site's frequency policy for the first of the offers it may show that the policy
        allows (``places``: the request, see ``lua/session_event.lua``). The reservations
        made, or None when the message was applied before (nothing is reserved then)."""
        keys, args = self._apply_call(site, visitor, session_id, message, now)
        args.append(places)
        result = await self._run(keys, args, session_id, message)
        if not isinstance(result, list):
            return SessionView.from_json(result), None
        raw, chosen, refused = result
        return SessionView.from_json(raw), Places(int(chosen), _json.decode(refused))

    async def _run(
        self, keys: list[str], args: list[Any], session_id: str, message: p.ClientMessage
    ) -> Any:
        result = await self._batcher.run(keys, args)
        if isinstance(result, ResponseError) and "expired" in str(result):
            raise SessionExpired(session_id)
        if isinstance(result, Exception):
            raise StoreUnavailable(f"could not apply {message.id}: {result}")
        return result

    async def apply_batch(
        self,
        site: str,
        visitor: str,
        session_id: str,
        messages: list[p.ClientMessage],
        *,
        now: float,
    ) -> list[SessionView | SessionExpired]:
        """Apply several messages in one pipelined round trip, in order."""
        if not messages:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for message in messages:
                    keys, args = self._apply_call(site, visitor, session_id, message, now)
                    await self._scripts.session_event(keys=keys, args=args, client=pipe)
                results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise StoreUnavailable(f"could not apply the batch: {exc}") from exc
        out: list[SessionView | SessionExpired] = []
        for result in results:
            if isinstance(result, ResponseError) and "expired" in str(result):
                out.append(SessionExpired(session_id))
            elif isinstance(result, Exception):
                raise StoreUnavailable(f"could not apply the batch: {result}")
            else:
                out.append(SessionView.from_json(result))
        return out

    async def snapshot(self, site: str, visitor: str, session_id: str) -> SessionView | None:
        """Read a session and its profile (admin and tests; not on the hot path)."""
        k = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.session(site, visitor, session_id))
            pipe.hgetall(k.profile(site, visitor))
            session, profile = await pipe.execute()
        if not session:
            return None
        return SessionView(
            session={reply_text(a): reply_text(b) for a, b in session.items()},
            profile={reply_text(a): reply_text(b) for a, b in profile.items()},
        )

    async def forget(self, site: str, visitor: str) -> int:
        """Erase every session, the profile and the orders of a visitor. Returns keys deleted."""
        k = self._keys
        try:
            for _ in range(FORGET_ATTEMPTS):
                sids = sorted(
                    reply_text(s) for s in await self._redis.smembers(k.sessions(site, visitor))
                )
                keys = [
                    k.profile(site, visitor),
                    k.sessions(site, visitor),
                    k.orders(site, visitor),
                    k.opening(site, visitor),
                ]
                for sid in sids:
                    keys += [k.session(site, visitor, sid), k.seen(site, visitor, sid)]
                deleted, email = await self._scripts.session_forget(keys=keys, args=sids)
                if int(deleted) >= 0:
                    break
            else:
                raise StoreUnavailable("the visitor's sessions kept changing while erasing them")
            if email:
                await self._redis.hdel(k.email_index(site), reply_text(email))
        except RedisError as exc:
            raise StoreUnavailable(f"could not erase the visitor: {exc}") from exc
        return int(deleted)

    async def remember_email(self, site: str, visitor: str, email: str) -> None:
        """Index an identified visitor by email, so the shop's order webhook can find them."""
        try:
            await self._redis.hset(self._keys.email_index(site), email.lower(), visitor)
        except RedisError as exc:
            raise StoreUnavailable(f"could not index the email: {exc}") from exc

    async def record_order(
        self, site: str, visitor: str, purchase: p.Purchase, *, now: float
    ) -> bool:
        """Record an order on the profile once per order id; True when it is new."""
        k = self._keys
        new = await self._scripts.session_order(
            keys=[k.profile(site, visitor), k.orders(site, visitor)],
            args=[repr(now), purchase.order_id, repr(purchase.value), self._profile_ttl],
        )
        return bool(new)


class _ApplyBatcher:
    """Sends every ``apply_event`` call made in one event-loop turn as one pipeline, the calls
    on one slot as one call of the script's batch form (``store/scripts.pipelined``).

    A busy node applies messages from many sockets at once; one pipeline instead of one
    connection checkout and write per message cuts the client-side cost per message. A caller
    gets its own result or its own error; a failed round trip fails every caller in it.
    """

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def run(self, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute(batch)
        except (RedisError, OSError) as exc:
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _execute(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        # One call of the script's batch form per slot (on one server: per batch), the
        # script loaded again after a restart or a flush.
        return await pipelined(self._redis, [(self._script, keys, args) for keys, args, _ in batch])
