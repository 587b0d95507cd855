"""The visitor WebSocket at ``/v1/ws``: handshake checks, hello, the message loop, pushes.

A connection that misbehaves gets a documented ``error`` frame (and, when fatal, a close code);
nothing it sent before ``hello`` is ever written, and every other connection keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SLOW_READER,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    ProtocolError,
    StoreUnavailable,
)
from ..mail.sms_optin import confirm_code, request_code
from ..offers.decide import LiveSignal
from ..offers.engine import PreparedSignal, signal_for
from ..store.sites import Site, origin_allowed
from ..visitors.session_view import SessionView
from ..visitors.sessions import Places, SessionExpired
from ..wire import protocol as p
from .consent import (
    after_identify,
    capture_identify,
    recorded_identify,
    reward_capture,
    trusted_country,
)
from .erasure import erase_visitor
from .ratelimit import TokenBucket
from .services import Services

log = logging.getLogger("widget_server.realtime")
T = TypeVar("T")
# What sending or closing raises once the visitor has gone (Starlette turns the server's
# ClientDisconnected into WebSocketDisconnect): the connection has ended, nothing more.
_GONE = (RuntimeError, OSError, WebSocketDisconnect)


class _Closed(Exception):
    """The connection has ended (closed by the client or by us)."""


class _NotRecorded(Exception):
    """A message could not be recorded; the client was told to send it again."""


class VisitorConnection:
    """One visitor socket. Implements :class:`widget_server.realtime.hub.LiveSocket`.

    Slotted: a node holds tens of thousands of these, mostly idle."""

    __slots__ = (
        "_attached", "_bucket", "_counted_site", "_forgotten", "_hello", "_last_view",
        "_max_frame", "address", "armed", "connection_id", "consent_country", "country",
        "services", "session_id", "shown", "site", "visitor", "ws",
    )  # fmt: skip

    def __init__(self, ws: WebSocket, services: Services) -> None:
        self.ws = ws
        self.services = services
        self.connection_id = secrets.token_urlsafe(9)
        self.site = ""
        self.visitor = ""
        self.session_id = ""
        self.country = ws.headers.get(services.settings.country_header, "")[:2].upper()
        self.consent_country = trusted_country(ws.headers, services.settings.consent_country_header)
        self.armed: str | None = None
        self.shown: str | None = None
        self._last_view: bytes | None = None
        self._hello: p.Hello | None = None
        self._forgotten = False
        self._attached = False
        self._counted_site: str | None = None
        # The peer, or the client a trusted proxy names (uvicorn's forwarded-allow-ips).
        self.address = ws.client.host if ws.client else "unknown"
        settings = services.settings
        self._bucket = TokenBucket(rate=settings.rate_per_second, burst=settings.rate_burst)
        self._max_frame = settings.max_frame_bytes

    @property
    def last_view(self) -> SessionView | None:
        """The visitor's state after this socket's last message. Kept as the JSON it came in:
        an idle socket holds it for minutes, and as dictionaries it cost about 3 KiB more per
        socket (measured with 2,000 idle sockets)."""
        raw = self._last_view
        return None if raw is None else SessionView.from_json(raw)

    @last_view.setter
    def last_view(self, view: SessionView | None) -> None:
        self._last_view = None if view is None else view.to_json()

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        metrics = self.services.metrics
        try:
            if not await self._handshake_allowed():
                return
        except _Closed:
            return
        await self.ws.accept()
        limits = self.services.limits
        refused = limits.admit(self.address)
        if refused is not None:
            with contextlib.suppress(_Closed):
                await self._refuse(refused)
            return
        try:
            await self._receive_hello()
            while True:
                await self._handle_frame(await self._receive_text())
        except _Closed:
            pass
        finally:
            limits.leave(self.address, self._counted_site)
            if self._attached:
                try:
                    await self.services.hub.detach(self)
                    await self._left()
                finally:  # counted open until its closing work (the email clock) is done
                    metrics.connections.dec()

    async def _refuse(self, limit: str) -> NoReturn:
        """Over a connection limit: say which, and close with 1013 (try again later)."""
        self.services.metrics.refused.labels(limit).inc()
        await self._fail(
            ProtocolError(
                p.OVER_CAPACITY,
                f"too many connections ({limit}); reconnect later",
                close_code=CLOSE_TRY_AGAIN_LATER,
            )
        )

    def _attach(self) -> None:
        """Join the hub: messages for this visitor and site reach the socket from now on. Done
        before the hello is acknowledged, so whatever a widget does once it has its ack (and
        whatever the shop or the admin does then) finds the socket reachable."""
        self.services.hub.attach(self)
        self._attached = True
        self.services.metrics.connections.inc()
        self.services.metrics.connections_total.inc()

    async def _left(self) -> None:
        """The socket closed: start the abandoned-cart clock (the next hello cancels it)."""
        view = self.last_view
        reachable = view is not None and (view.profile.get("email") or view.profile.get("phone"))
        if view is None or not reachable or self._forgotten:
            return
        try:
            await self.services.mail.scheduler.visitor_left_from_view(
                self.site, self.visitor, view, now=time.time()
            )
        except (RedisError, OSError) as exc:
            self.services.metrics.redis_errors.inc()
            log.warning("could not schedule emails", extra={"error": str(exc), "site": self.site})

    async def _handshake_allowed(self) -> bool:
        """With ``?site=KEY`` in the URL, refuse unknown sites and foreign origins before accept."""
        site_key = self.ws.query_params.get("site")
        if site_key is None:
            return True
        site = await self._lookup_site(site_key)
        if site is not None and origin_allowed(site, self.ws.headers.get("origin")):
            return True
        self.services.metrics.closes.labels(str(CLOSE_POLICY_VIOLATION)).inc()
        await self.ws.close(CLOSE_POLICY_VIOLATION)
        return False

    async def _lookup_site(self, key: str) -> Site | None:
        if not key or len(key) > 64:
            return None
        try:
            return await self.services.sites.get(key)
        except RedisError as exc:
            self.services.metrics.redis_errors.inc()
            if self.ws.application_state != WebSocketState.CONNECTED:
                await self.ws.close(CLOSE_INTERNAL_ERROR)
                raise _Closed from exc
            await self._fail(
                ProtocolError(
                    p.UNAVAILABLE,
                    "the server cannot check the site right now; reconnect later",
                    close_code=CLOSE_INTERNAL_ERROR,
                )
            )

    async def _receive_text(self) -> str:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            if message.get("code") == CLOSE_SLOW_READER:  # closed by the transport, not the peer
                self.services.metrics.closes.labels(str(CLOSE_SLOW_READER)).inc()
            raise _Closed
        text = message.get("text")
        if text is None:
            await self._fail(
                ProtocolError(
                    p.BINARY_NOT_SUPPORTED,
                    "frames must be UTF-8 JSON text",
                    close_code=CLOSE_UNSUPPORTED_DATA,
                )
            )
        assert isinstance(text, str)
        if len(text) * 4 > self._max_frame and len(text.encode()) > self._max_frame:
            await self._fail(
                ProtocolError(
                    p.FRAME_TOO_LARGE,
                    f"frames are limited to {self._max_frame} bytes",
                    close_code=CLOSE_MESSAGE_TOO_BIG,
                )
            )
        return text

    async def _receive_hello(self) -> None:
        timeout = self.services.settings.hello_timeout_s
        try:
            text = await asyncio.wait_for(self._receive_text(), timeout)
        except TimeoutError:
            await self._fail(
                ProtocolError(
                    p.HELLO_REQUIRED,
                    f"no hello within {timeout:g} s",
                    close_code=CLOSE_POLICY_VIOLATION,
                )
            )
        try:
            message = p.parse_client_message(text)
        except ProtocolError as exc:
            exc.close_code = CLOSE_POLICY_VIOLATION
            await self._fail(exc)
        if not isinstance(message, p.Hello):
            await self._fail(
                ProtocolError(
                    p.HELLO_REQUIRED,
                    "the first message must be a hello",
                    close_code=CLOSE_POLICY_VIOLATION,
                    message_id=message.id,
                )
            )
        await self._open(message)

    async def _open(self, hello: p.Hello) -> None:
        site = await self._lookup_site(hello.site)
        url_site = self.ws.query_params.get("site")
        if site is None or (url_site is not None and url_site != hello.site):
            await self._fail(
                ProtocolError(
                    p.UNKNOWN_SITE,
                    "unknown site key",
                    close_code=CLOSE_POLICY_VIOLATION,
                    message_id=hello.id,
                )
            )
        assert site is not None
        if not origin_allowed(site, self.ws.headers.get("origin")):
            await self._fail(
                ProtocolError(
                    p.ORIGIN_NOT_ALLOWED,
                    "this page's origin is not allowed for the site",
                    close_code=CLOSE_POLICY_VIOLATION,
                    message_id=hello.id,
                )
            )
        if self.services.limits.join_site(hello.site) is not None:
            await self._refuse("site")
        self._counted_site = hello.site
        self.site, self.visitor, self._hello = hello.site, hello.visitor, hello
        view = await self._start_session(resume=hello.session)
        self._attach()
        self.services.metrics.messages.labels("hello").inc()
        await self.send(p.Ack(ids=[hello.id]))
        try:
            await self._after_hello(view)
        except (RedisError, StoreUnavailable) as exc:  # the session is open: keep serving it
            self.services.metrics.redis_errors.inc()
            log.warning("after-hello step failed", extra={"error": str(exc), "site": self.site})

    async def _after_hello(self, view: SessionView) -> None:
        await self.services.hub.mark_live(self)  # the admin's live view: no need to delay the ack
        if view.profile.get("email") or view.profile.get("phone"):
            await self.services.mail.scheduler.visitor_returned(
                self.site, self.visitor, now=time.time()
            )
        await self.services.hub.mark_site_seen(self.site)
        offers = self.services.offers
        await offers.count_visit(self.site, self.visitor, time.time())
        await offers.rearm(self, view)
        for campaign_id in await offers.active_live(self.site, time.time()):
            await self.offer_live(campaign_id)

    async def refresh_offers(self) -> None:
        """Campaigns changed: withdraw a shown offer whose campaign stopped, re-arm."""
        if self.last_view is None:
            return
        if self.shown is not None:
            campaign_id = self.shown.split(".", 1)[0]
            active = {c.id for c in await self.services.offers.campaigns.for_site(self.site)
                      if c.status == "active"}  # fmt: skip
            if campaign_id not in active:
                await self.send(p.Withdraw(offer=self.shown))
                self.shown = None
        await self.services.offers.rearm(self, self.last_view)

    async def offer_live(self, campaign_id: str) -> None:
        """Offer a running live broadcast to this connection, which may have had it already
        (a new page, a node catching up): once per session, replays are not sent again. A
        broadcast that has just started goes to many connections at once
        (:meth:`~widget_server.offers.engine.OfferEngine.offer_live_many`)."""
        await self.services.offers.on_signal(
            self,
            LiveSignal(campaign_id),
            f"live:{campaign_id}:{self.session_id}",
            resend=False,
            again=True,
        )

    async def _start_session(self, resume: str | None) -> SessionView:
        hello = self._hello
        assert hello is not None
        opened = await self._store_call(
            self.services.sessions.open(
                self.site,
                self.visitor,
                now=time.time(),
                resume=resume,
                page=hello.page,
                consent=hello.consent,
                device=hello.device,
                lang=hello.lang,
                tz=hello.tz,
                connection_id=self.connection_id,
                node_id=self.services.hub.node_id,
            ),
            hello.id,
        )
        self.session_id = opened.session_id
        config = self.services.widget_config
        try:  # the thresholds the site's campaigns trigger at
            config = await self.services.offers.widget_config(self.site, config)
        except RedisError as exc:  # the widget reports none this time; the session goes on
            self.services.metrics.redis_errors.inc()
            log.warning("no campaign thresholds", extra={"error": str(exc), "site": self.site})
        await self.send(
            p.Welcome(
                v=p.PROTOCOL_VERSION,
                session=opened.session_id,
                visitor=self.visitor,
                resumed=opened.resumed,
                config=config,
            )
        )
        return opened.view

    # --- messages ----------------------------------------------------------------------------
    async def _handle_frame(self, text: str) -> None:
        started = time.perf_counter()
        if not self._bucket.take(time.monotonic()):
            if self._bucket.flooding:
                await self._fail(
                    ProtocolError(
                        p.FLOOD,
                        "too many messages; reconnect later",
                        close_code=CLOSE_POLICY_VIOLATION,
                    )
                )
            await self._report(ProtocolError(p.RATE_LIMITED, "message refused: slow down"))
            return
        try:
            message = p.parse_client_message(text)
        except ProtocolError as exc:
            if exc.close_code is not None:
                await self._fail(exc)
            await self._report(exc)
            return
        metrics = self.services.metrics
        metrics.messages.labels(p.WIRE_NAME[type(message)]).inc()
        if isinstance(message, p.Ping):
            await self.send(p.Pong(id=message.id))
            return
        if isinstance(message, p.Hello):
            await self._report(
                ProtocolError(p.HELLO_REPEATED, "hello was already received", message_id=message.id)
            )
            return
        signal = isinstance(message, p.SIGNALS)
        self.services.hub.count(self.site, "signals" if signal else "events")
        try:
            if isinstance(message, p.ConsentUpdate) and not message.analytics:
                await self._forget(message)
                return
            if isinstance(message, p.OfferCapture):
                await self._capture(message)
                return
            if isinstance(message, p.PhoneCapture | p.PhoneConfirm):
                await self._phone(message)
                return
            if isinstance(message, p.Identify):
                message = await self._store_call(
                    recorded_identify(self.services.mail, self.site, message, self.consent_country),
                    message.id,
                )
            await self._apply(message)
        except _NotRecorded:
            return
        metrics.message_seconds.observe(time.perf_counter() - started)

    async def _apply(self, message: p.ClientMessage) -> SessionView | None:
        sessions = self.services.sessions
        prepared: PreparedSignal | None = None
        places: Places | None = None
        try:
            if isinstance(message, p.SIGNALS):
                view, prepared, places = await self._store_call(
                    self.services.offers.record_signal(self, message, now=time.time()),
                    message.id,
                )
            else:
                view = await self._store_call(
                    sessions.apply(self.site, self.visitor, self.session_id, message,
                                   now=time.time()),
                    message.id,
                )  # fmt: skip
        except SessionExpired:  # nothing was recorded or reserved
            await self._start_session(resume=None)
            prepared = None
            view = await self._store_call(
                sessions.apply(self.site, self.visitor, self.session_id, message, now=time.time()),
                message.id,
            )
        await self.send(p.Ack(ids=[message.id]))
        try:
            await self._after_change(message, view, prepared, places)
        except (RedisError, StoreUnavailable) as exc:  # the state change itself is recorded
            self.services.metrics.redis_errors.inc()
            log.warning("offer step failed", extra={"error": str(exc), "site": self.site})
        return view

    async def _after_change(
        self,
        message: p.ClientMessage,
        view: SessionView,
        prepared: PreparedSignal | None = None,
        places: Places | None = None,
    ) -> None:
        offers = self.services.offers
        self.last_view = view
        if isinstance(message, p.OfferShown):
            await offers.on_shown(self, message, view)  # a copy sent again may finish its count
        if view.duplicate and not isinstance(message, p.SIGNALS):
            return
        signal = signal_for(message)
        if signal is not None:
            await offers.on_signal(
                self, signal, message.id, again=view.duplicate, prepared=prepared, places=places
            )
            return
        if isinstance(message, p.ProductView | p.CartAdd):
            self.services.similar.observe(self.site, message, view)
            if self.services.interest is not None:
                self.services.interest.observe(self.site, self.visitor, message, view)
        if isinstance(message, p.OfferClicked | p.OfferDismissed):
            await offers.count_interaction(self.site, message, time.time())
        if isinstance(message, p.Identify):
            await after_identify(
                self.services.sessions,
                self.services.mail,
                self.site,
                self.visitor,
                message,
                view,
                now=time.time(),
            )
        if isinstance(message, p.Purchase):
            self.armed = None
            if view.session.get("order_new") == "1":
                await self.services.hub.send_to_visitor(
                    self.site, self.visitor, p.Withdraw(offer=p.ALL_OFFERS)
                )
                now = time.time()
                await offers.on_purchase(self.site, self.visitor, message, new_order=True, now=now)
                await self.services.mail.scheduler.after_purchase(
                    self.site, self.visitor, message, now=now
                )
        await offers.rearm(self, view)

    async def _capture(self, message: p.OfferCapture) -> None:
        """An address from an email capture: recorded as an ``identify`` with the consent
        sentence shown (its version), then counted and rewarded by the offer engine."""
        now = time.time()
        lang = self.last_view.session.get("lang", "") if self.last_view else ""
        recorded = await self._store_call(
            capture_identify(self.services, self.site, message, lang, self.consent_country, now),
            message.id,
        )
        view = await self._apply(recorded)
        if view is None:
            return
        try:
            reward = await reward_capture(self.services, self, message, view, lang, now)
            if reward is not None:
                await self.send(reward)
        except (RedisError, StoreUnavailable) as exc:  # the address itself is recorded
            self.services.metrics.redis_errors.inc()
            log.warning("capture step failed", extra={"error": str(exc), "site": self.site})

    async def _phone(self, message: p.PhoneCapture | p.PhoneConfirm) -> None:
        """A phone number with its SMS consent, or the code texted to it (double opt-in)."""
        now, mail = time.time(), self.services.mail
        try:
            site = await self.services.sites.get(self.site)
        except RedisError:
            site = None
        if site is None:
            await self._report(
                ProtocolError(p.UNAVAILABLE, "the server could not do this; send it again",
                              message_id=message.id)
            )  # fmt: skip
            return
        if isinstance(message, p.PhoneCapture):
            lang = self.last_view.session.get("lang", "") if self.last_view else ""
            call = request_code(
                mail, site, self.visitor, message.phone, message.consent, now=now, locale=lang
            )
        else:
            call = confirm_code(mail, site, self.visitor, message.code, now=now)
        try:
            result = await self._store_call(call, message.id)
        except RedisError:
            self.services.metrics.redis_errors.inc()
            await self._report(
                ProtocolError(p.UNAVAILABLE, "the server could not do this; send it again",
                              message_id=message.id)
            )  # fmt: skip
            return
        await self.send(
            p.PhoneResult(
                id=message.id, status=result.status, phone=result.phone, error=result.error,
                message=result.message,
            )
        )  # fmt: skip

    async def _forget(self, message: p.ConsentUpdate) -> None:
        """Consent withdrawn: erase everything stored about the visitor (sessions, profile,
        traces, campaign states, emails), acknowledge, close."""
        await self._store_call(self._erase(), message.id)
        self._forgotten = True
        await self.send(p.Ack(ids=[message.id]))
        await self._close(CLOSE_NORMAL, "consent withdrawn")

    async def _erase(self) -> None:
        try:
            await erase_visitor(self.services, self.site, self.visitor, close_sockets=False)
        except RedisError as exc:
            raise StoreUnavailable(f"could not erase the visitor: {exc}") from exc

    async def _store_call(self, call: Awaitable[T], message_id: str) -> T:
        """Await a store call. On a Redis failure the message is not acked: the client is told to
        send it again; before the session exists the connection closes with 1011."""
        try:
            return await call
        except StoreUnavailable as exc:
            self.services.metrics.redis_errors.inc()
            log.warning("store unavailable", extra={"error": str(exc), "site": self.site})
            error = ProtocolError(
                p.UNAVAILABLE,
                "the server could not record this message; send it again",
                message_id=message_id,
            )
            if not self.session_id:
                error.close_code = CLOSE_INTERNAL_ERROR
                await self._fail(error)
            await self._report(error)
            raise _NotRecorded from exc

    # --- sending -----------------------------------------------------------------------------
    async def send(self, message: p.ServerMessage) -> None:
        if isinstance(message, p.Offer):
            self.services.hub.count(self.site, "offers")
        await self.push(p.encode(message))

    async def end(self, reason: str) -> None:
        """The visitor was erased (on any node): forget the in-memory view, so that closing
        schedules nothing, withdraw the offers on screen and close the socket."""
        if self._forgotten:
            return  # this connection withdrew consent itself and closes after its ack
        self._forgotten = True
        self.last_view = None
        with contextlib.suppress(_Closed):
            await self.send(p.Withdraw(offer=p.ALL_OFFERS))
        self.services.metrics.closes.labels(str(CLOSE_NORMAL)).inc()
        with contextlib.suppress(*_GONE):
            await self.ws.close(CLOSE_NORMAL, reason[:120])

    async def push(self, text: str) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        # No lock: a send never suspends half-way (the transport writes a whole frame or, when
        # the socket's buffer is full, closes it: realtime/transport.py), so frames from the
        # hub and from the message loop cannot interleave.
        try:
            await self.ws.send_text(text)
        except _GONE as exc:
            raise _Closed from exc

    async def _report(self, exc: ProtocolError) -> None:
        self.services.metrics.errors.labels(exc.code).inc()
        await self.send(p.error_for(exc))

    async def _fail(self, exc: ProtocolError) -> NoReturn:
        """Send the error, close with its close code, and end the connection."""
        await self._report(exc)
        await self._close(exc.close_code or CLOSE_POLICY_VIOLATION, exc.code)
        raise _Closed

    async def _close(self, code: int, reason: str) -> NoReturn:
        self.services.metrics.closes.labels(str(code)).inc()
        with contextlib.suppress(*_GONE):
            await self.ws.close(code, reason[:120])
        raise _Closed


async def websocket_endpoint(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    await VisitorConnection(ws, services).run()
