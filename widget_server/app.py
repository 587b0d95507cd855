"""Composition: :func:`create_app` is the only place that wires the parts together."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .admin.routes import admin_routes
from .catalog.interest import InterestIndex
from .catalog.similar import SimilarProducts
from .catalog.store import CatalogStore
from .errors import ConfigurationError
from .mail.context import MailSettings, build_mail_context, mail_settings_from_env
from .mail.flows import MailFlowStore
from .mail.routes import mail_routes
from .mail.similar import MailSimilarProducts
from .mail.sms_routes import sms_routes
from .metrics import Metrics
from .offers.campaign_store import CampaignStore
from .offers.engine import OfferEngine
from .realtime.admission import ConnectionLimits
from .realtime.beacon import events_endpoint, events_preflight
from .realtime.connection import websocket_endpoint
from .realtime.hub import Hub
from .realtime.notices import Notices
from .realtime.services import Services
from .realtime.shop_api import code_lookup, erase_request, orders_webhook
from .realtime.transport import SEND_BUFFER_STATE
from .realtime.widget_asset import widget_routes
from .settings import Settings, settings_from_env
from .store.client import open_store
from .store.embedded import embedded_status
from .store.keys import Keys
from .store.scripts import Scripts
from .store.sites import SiteRegistry
from .visitors.sessions import SessionStore
from .wire.protocol import WidgetConfig

log = logging.getLogger("widget_server.app")
VISITOR_SOCKET_PATH = "/v1/ws"


async def healthz(request: Request) -> Response:
    """Alive, unless the embedded Valkey died and could not be started again: then a process
    supervisor should restart the server (which starts the store afresh)."""
    services: Services = request.app.state.services
    status = _embedded_status(services)
    if status is not None and status.get("state") == "down":
        return PlainTextResponse(
            f"the embedded Valkey is down: {status.get('reason')}", status_code=503
        )
    return PlainTextResponse("ok")


def _embedded_status(services: Services) -> dict[str, Any] | None:
    url = services.settings.redis_url
    return embedded_status(services.settings.data_dir, url) if url else None


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        await services.redis.ping()
    except (RedisError, OSError) as exc:
        services.metrics.redis_errors.inc()
        return PlainTextResponse(f"redis unreachable: {exc}", status_code=503)
    return PlainTextResponse("ready")


async def metrics_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    services.metrics.connections.set(services.hub.local_count())
    status = _embedded_status(services)
    if status is not None:
        services.metrics.store_restarts.set(float(status.get("restarts") or 0))
        services.metrics.store_up.set(1.0 if status.get("state") == "running" else 0.0)
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


def settle_garbage_collector() -> None:
    """Move everything alive after startup (imported modules, the app, its services: about a
    million objects) out of the collector's sight. Without it every full collection walks them
    all, and the event loop stops for 40-80 ms each time (measured: the p99 of acks at 1,000
    messages/s went with it); the collector then walks only what connections create."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, mail_settings: MailSettings | None = None) -> Starlette:
    """Build the ASGI app for ``settings``. Needs ``settings.redis_url``: the CLI starts the
    embedded Valkey and fills it in when the operator did not set ``REDIS_URL``. Without
    ``mail_settings`` abandoned-cart emails are still scheduled and their links served, with
    the settings' secret key; sending is the worker's job."""
    if not settings.redis_url:
        raise ConfigurationError("create_app needs settings.redis_url")
    redis_url = settings.redis_url
    mail_config = mail_settings or MailSettings(secret_key=settings.secret_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        redis = open_store(redis_url, settings.redis_mode)
        keys = Keys(settings.redis_prefix)
        metrics = Metrics()
        scripts = Scripts.of(redis)
        sites = SiteRegistry(redis, keys)
        sessions = SessionStore(
            redis,
            scripts,
            keys,
            session_ttl_s=settings.session_ttl_s,
            profile_ttl_s=settings.profile_ttl_s,
            presence_ttl_s=settings.presence_ttl_s,
        )
        campaigns = CampaignStore(redis, keys)
        similar = SimilarProducts(CatalogStore(redis, keys))
        interest = InterestIndex(redis, keys, similar.store)
        offers = OfferEngine(
            redis,
            scripts,
            keys,
            campaigns,
            sessions,
            metrics,
            sites=sites,
            seen_timeout_s=settings.offer_seen_timeout_s,
            products_for=similar.products_for,
        )
        notices = Notices()
        hub = Hub(
            redis,
            keys,
            metrics,
            presence_ttl_s=settings.presence_ttl_s,
            on_site_changed=sites.invalidate,
            on_notice=notices.handle,
            on_resubscribed=notices.catch_up,
        )
        services = Services(
            settings=settings,
            redis=redis,
            keys=keys,
            sites=sites,
            sessions=sessions,
            hub=hub,
            metrics=metrics,
            widget_config=WidgetConfig(
                heartbeat_s=settings.heartbeat_s, max_frame_bytes=settings.max_frame_bytes
            ),
            offers=offers,
            similar=similar,
            mail=build_mail_context(
                mail_config,
                redis,
                keys,
                sites=sites,
                templates_dir=settings.email_templates_dir,
                registry=metrics.registry,
                catalog=similar.store,
                similar=MailSimilarProducts(similar, sites, MailFlowStore(redis, keys)),
            ),
            limits=ConnectionLimits(
                per_address=settings.max_connections_per_ip,
                per_site=settings.max_connections_per_site,
                per_node=settings.max_connections,
            ),
            interest=interest,
        )
        notices.services = services
        app.state.services = services
        app.state.mail = services.mail
        try:
            await campaigns.upgrade()  # before any page reads the site's campaign keys
        except RedisError as exc:  # tried again on first use
            log.warning("could not check the key layout", extra={"error": str(exc)})
        await hub.start()
        settle_garbage_collector()
        log.info("node started", extra={"node": hub.node_id})
        try:
            # The visitor sockets' transport reads its send buffer bound here (uvicorn hands
            # every connection the lifespan state).
            yield {SEND_BUFFER_STATE: settings.send_buffer_bytes}
        finally:
            await hub.stop()
            await redis.aclose()
            log.info("node stopped", extra={"node": hub.node_id})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        WebSocketRoute(VISITOR_SOCKET_PATH, websocket_endpoint),
        Route("/v1/events", events_endpoint, methods=["POST"]),
        Route("/v1/events", events_preflight, methods=["OPTIONS"]),
        Route("/v1/orders", orders_webhook, methods=["POST"]),
        Route("/v1/codes/{code}", code_lookup, methods=["GET"]),
        Route("/v1/visitors/erase", erase_request, methods=["POST"]),
        *widget_routes(settings.static_dir),
        *mail_routes(lambda: app.state.mail),
        *sms_routes(lambda: app.state.mail),
        *admin_routes(),
    ]
    if settings.demo:
        from .demo.catalog import generate_catalog
        from .demo.routes import demo_routes

        routes += demo_routes("demo", generate_catalog())
    app = _App(routes=routes, lifespan=lifespan)
    return app


class _App(Starlette):
    """Starlette, with the visitor socket served before its middleware and router: each of the
    thousands of idle sockets a node holds then keeps a shorter chain of awaiting coroutines
    (fewer objects for every garbage collection to walk), and each message skips the layers'
    wrappers. The route stays listed for everything else that reads the routes."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == VISITOR_SOCKET_PATH:
            scope["app"] = self
            await websocket_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def app_from_env() -> Starlette:
    """Factory used by uvicorn worker processes: settings come from the environment."""
    settings = settings_from_env()
    return create_app(settings, mail_settings_from_env(os.environ, settings))
