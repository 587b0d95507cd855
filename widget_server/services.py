"""The wired-up parts of one server process, built by :func:`widget_server.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from .admission import ConnectionLimits
from .hub import Hub
from .keys import Keys
from .mail_context import MailContext
from .metrics import Metrics
from .offers import OfferEngine
from .protocol import WidgetConfig
from .sessions import SessionStore
from .settings import Settings
from .similar import SimilarProducts
from .sites import SiteRegistry


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: Redis
    keys: Keys
    sites: SiteRegistry
    sessions: SessionStore
    hub: Hub
    metrics: Metrics
    widget_config: WidgetConfig
    offers: OfferEngine
    similar: SimilarProducts
    mail: MailContext
    limits: ConnectionLimits
