"""The wired-up parts of the email feature, shared by its routes and its worker.

:func:`build_mail_context` is the one place they are assembled; the server and the worker call it
with the settings read at the edge (:func:`mail_settings_from_env`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from ..catalog.store import CatalogStore
from ..errors import ConfigurationError
from ..settings import Settings, env_float
from ..sms.provider import SmsChannel, SmsOutbox, SmsSender, SmsSettings, sms_settings_from_env
from ..store.keys import Keys
from ..store.sites import SiteRegistry
from .flows import MailFlowStore
from .jobs import DEFAULT_RETENTION_S, MailScheduler
from .message import (
    DEFAULT_TEMPLATES,
    MailAddressError,
    MailProduct,
    MailRenderer,
    normalize_address,
)
from .send import (
    DomainRateLimiter,
    MailTransport,
    OutboxTransport,
    SmtpTransport,
    WebhookTransport,
    parse_smtp_url,
)
from .tokens import LinkSigner

SimilarSource = Callable[[str, Sequence[str]], Awaitable[Sequence[MailProduct]]]


@dataclass(frozen=True, slots=True)
class MailSettings:
    """Email settings. ``public_url`` is this server as emails' recipients reach it (links point
    there); ``from_address`` the envelope and header sender (display name: the flow config's
    ``sender_name`` or the site's name). ``lease_s`` must exceed the longest send (the SMTP
    timeout applies per step): a lease that runs out mid-send loses that email."""

    secret_key: str
    public_url: str = ""
    from_address: str = ""
    smtp_url: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    unsubscribe_mailto: str = ""
    rate_per_minute: float = 60.0
    rate_burst: int = 20
    lease_s: float = 300.0
    max_attempts: int = 6
    retry_base_s: float = 60.0
    batch: int = 10
    retention_s: int = DEFAULT_RETENTION_S
    outbox_dir: str = ""
    sms: SmsSettings = field(default_factory=SmsSettings)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return env_float(env, name, default, low=low, high=high)


def mail_settings_from_env(env: Mapping[str, str], settings: Settings) -> MailSettings:
    """Read ``SMTP_URL``, ``MAIL_WEBHOOK_URL``, ``MAIL_WEBHOOK_SECRET``, ``MAIL_FROM``,
    ``MAIL_PUBLIC_URL``, ``MAIL_UNSUBSCRIBE_MAILTO``, ``MAIL_RATE_PER_DOMAIN`` (per minute),
    ``MAIL_RATE_BURST``, ``MAIL_LEASE`` (s), ``MAIL_MAX_ATTEMPTS``, ``MAIL_RETRY_BASE`` (s), and
    the SMS settings (:func:`~widget_server.sms.provider.sms_settings_from_env`).
    Raises ConfigurationError on malformed values; missing ones are checked by the worker."""
    public_url = (env.get("MAIL_PUBLIC_URL") or "").rstrip("/")
    if public_url and urlsplit(public_url).scheme not in ("http", "https"):
        raise ConfigurationError(f"MAIL_PUBLIC_URL must be an http(s) URL, got {public_url!r}")
    smtp_url = env.get("SMTP_URL") or ""
    if smtp_url:
        parse_smtp_url(smtp_url)
    try:
        from_address = normalize_address(env["MAIL_FROM"]) if env.get("MAIL_FROM") else ""
        mailto = env.get("MAIL_UNSUBSCRIBE_MAILTO") or ""
        mailto = normalize_address(mailto) if mailto else ""
    except MailAddressError as exc:
        raise ConfigurationError(f"MAIL_FROM / MAIL_UNSUBSCRIBE_MAILTO: {exc}") from None
    return MailSettings(
        secret_key=settings.secret_key,
        public_url=public_url,
        from_address=from_address,
        smtp_url=smtp_url,
        webhook_url=env.get("MAIL_WEBHOOK_URL") or "",
        webhook_secret=env.get("MAIL_WEBHOOK_SECRET") or settings.secret_key,
        unsubscribe_mailto=mailto,
        rate_per_minute=_number(env, "MAIL_RATE_PER_DOMAIN", 60.0, 0.1, 100_000),
        rate_burst=int(_number(env, "MAIL_RATE_BURST", 20, 1, 100_000)),
        lease_s=_number(env, "MAIL_LEASE", 300.0, 5, 3600),
        max_attempts=int(_number(env, "MAIL_MAX_ATTEMPTS", 6, 1, 20)),
        retry_base_s=_number(env, "MAIL_RETRY_BASE", 60.0, 0.01, 3600),
        retention_s=settings.profile_ttl_s,
        outbox_dir=env.get("MAIL_OUTBOX_DIR") or "",
        sms=sms_settings_from_env(env),
    )


class MailMetrics:
    """Counters of the email feature, registered on ``registry`` (the server's, or a new one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.sent = Counter("widget_mail_sent", "Emails handed to the relay.", ["flow"], registry=r)
        self.skipped = Counter(
            "widget_mail_skipped", "Due emails not sent, by reason.", ["reason"], registry=r
        )
        self.held = Counter(
            "widget_mail_held",
            "Due emails held back for later, by reason (quiet_hours, budget).",
            ["reason"],
            registry=r,
        )
        self.failures = Counter(
            "widget_mail_failures",
            "Send failures by kind (transient, permanent, uncertain).",
            ["kind"],
            registry=r,
        )
        self.retries = Counter("widget_mail_retries", "Emails queued again.", registry=r)
        self.clicks = Counter("widget_mail_clicks", "Tracked email clicks.", ["flow"], registry=r)
        self.unsubscribes = Counter(
            "widget_mail_unsubscribes", "Addresses suppressed, by reason.", ["reason"], registry=r
        )


@dataclass(slots=True)
class MailContext:
    """What the mail routes and the mail worker need; ``transport`` is None where nothing is
    sent (a web node that only serves the unsubscribe and click links)."""

    redis: Redis
    keys: Keys
    settings: MailSettings
    sites: SiteRegistry
    scheduler: MailScheduler
    flows: MailFlowStore
    signer: LinkSigner
    renderer: MailRenderer
    metrics: MailMetrics
    rate: DomainRateLimiter
    transport: MailTransport | None = None
    catalog: CatalogStore | None = None
    similar: SimilarSource | None = None
    # None: SMS is off (not configured); SMS steps are then skipped.
    sms: SmsChannel | None = None
    # The time the routes take (link expiry, confirmations, counters); the worker takes its own.
    clock: Callable[[], float] = time.time

    def require_sending(self) -> MailTransport:
        """The transport, or ConfigurationError naming every setting sending still needs."""
        missing = [
            name
            for name, value in (
                ("SMTP_URL, MAIL_WEBHOOK_URL or MAIL_OUTBOX_DIR", self.transport),
                ("MAIL_FROM", self.settings.from_address),
                ("MAIL_PUBLIC_URL", self.settings.public_url),
            )
            if not value
        ]
        if missing or self.transport is None:
            raise ConfigurationError(f"sending email needs {', '.join(missing)}")
        return self.transport


def build_mail_context(
    settings: MailSettings,
    redis: Redis,
    keys: Keys,
    *,
    sites: SiteRegistry | None = None,
    templates_dir: Path = DEFAULT_TEMPLATES,
    registry: CollectorRegistry | None = None,
    transport: MailTransport | None = None,
    http_client: httpx.AsyncClient | None = None,
    catalog: CatalogStore | None = None,
    similar: SimilarSource | None = None,
) -> MailContext:
    """Assemble the email feature. The transport is ``transport`` if given, else SMTP when
    ``smtp_url`` is set, else the webhook when ``webhook_url`` is set (using ``http_client``)."""
    if transport is None and settings.smtp_url:
        transport = SmtpTransport(parse_smtp_url(settings.smtp_url))
    elif transport is None and settings.webhook_url:
        client = http_client or httpx.AsyncClient(timeout=30)
        transport = WebhookTransport(settings.webhook_url, settings.webhook_secret, client)
    elif transport is None and settings.outbox_dir:
        transport = OutboxTransport(Path(settings.outbox_dir))
    sms: SmsChannel | None = None
    if settings.sms.enabled:
        sms = SmsSender(settings.sms, http_client or httpx.AsyncClient(timeout=30))
    elif settings.sms.outbox_dir:
        sms = SmsOutbox(settings.sms)
    flows = MailFlowStore(redis, keys)
    sites = sites or SiteRegistry(redis, keys)
    return MailContext(
        redis=redis,
        keys=keys,
        settings=settings,
        sites=sites,
        scheduler=MailScheduler(redis, keys, flows, retention_s=settings.retention_s, sites=sites),
        flows=flows,
        signer=LinkSigner(settings.secret_key),
        renderer=MailRenderer(templates_dir),
        metrics=MailMetrics(registry),
        rate=DomainRateLimiter(
            redis, keys, per_minute=settings.rate_per_minute, burst=settings.rate_burst
        ),
        transport=transport,
        catalog=catalog or CatalogStore(redis, keys),
        similar=similar,
        sms=sms,
    )
