"""The wired-up parts of one server process, built by :func:`widget_server.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from ..catalog.interest import InterestIndex
from ..catalog.similar import SimilarProducts
from ..mail.context import MailContext
from ..metrics import Metrics
from ..offers.engine import OfferEngine
from ..settings import Settings
from ..store.keys import Keys
from ..store.sites import SiteRegistry
from ..visitors.sessions import SessionStore
from ..wire.protocol import WidgetConfig
from .admission import ConnectionLimits
from .hub import Hub


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
    interest: InterestIndex | None = None  # who viewed or carted what (catalog emails)
