"""Test emails: one flow step rendered with sample products and sent to one address.

A marketer checks how a step looks in a real mailbox before visitors get it. The message is
built like the worker's (same renderer, :func:`~widget_server.mail.build_message` headers, a
working unsubscribe link) and goes out through the configured transport, with ``[Test]`` in
front of the subject. It is not an abandonment email: no job is created or claimed, and no
sent mark, daily cap, rate bucket or flow statistic is read or written. Shop links in it point
straight at the shop (untracked), so clicking them counts nothing either.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..store.sites import Site
from .context import MailContext
from .flows import Flow, MailConfig
from .message import (
    SAMPLE_LINES,
    SAMPLE_SIMILAR,
    MailView,
    RenderedEmail,
    build_message,
    normalize_address,
)
from .send import MailTransport, OutboxTransport, SmtpTransport, WebhookTransport
from .tokens import MailLinks
from .worker import default_shop_url

TEST_SUBJECT_PREFIX = "[Test] "
_LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")


async def send_test(
    ctx: MailContext,
    site: str,
    flow: str,
    step: int,
    to: str,
    locale: str = "",
    *,
    now: float | None = None,
) -> str:
    """Send step ``step`` (1 = the flow's first email) of ``flow`` to ``to`` as a test email, in
    ``locale`` (default: the site's). Returns a one-line report of what was sent and how.

    Raises MailAddressError for an unusable address, ConfigurationError for missing sending
    settings, an unknown site, flow, step or locale, or an address the site must not email
    (unsubscribed, bounced, complained), and the transport's SendError when sending fails.
    """
    recipient = normalize_address(to)
    if locale and not _LOCALE.match(locale):
        raise ConfigurationError(f"the locale must look like en or de-CH, got {locale[:20]!r}")
    transport = ctx.require_sending()
    known = await ctx.sites.get(site)
    if known is None:
        raise ConfigurationError(f"no site named {site[:64]!r}")
    config = await ctx.flows.get(known.key)
    chosen = config.flow(flow)
    if chosen is None or not 1 <= step <= len(chosen.steps):
        raise ConfigurationError(f"no step {step} in a flow named {flow[:40]!r}")
    reason = await ctx.scheduler.suppression(known.key, recipient)
    if reason is not None:
        raise ConfigurationError(
            f"{recipient} is on the suppression list of {known.key} ({reason}); "
            "test emails are not sent to it"
        )
    when = time.time() if now is None else now
    message = build_test_message(ctx, known, config, chosen, step - 1, recipient, locale, when)
    await transport.send(message, sender=ctx.settings.from_address, recipient=recipient)
    return (
        f"sent a test of {chosen.name} step {step} ({locale or known.locale}) of {known.key} "
        f"to {recipient} via {describe_transport(transport)}; subject: {message['Subject']}"
    )


def build_test_message(
    ctx: MailContext,
    site: Site,
    config: MailConfig,
    flow: Flow,
    step: int,
    recipient: str,
    locale: str,
    now: float,
) -> EmailMessage:
    """The finished test message for ``step`` (0-based) with sample products. Raises
    TemplateError or MailAddressError (e.g. MAIL_FROM unusable)."""
    shop_url = config.shop_url or default_shop_url(site) or ctx.settings.public_url
    links = MailLinks(
        signer=ctx.signer,
        public_url=ctx.settings.public_url,
        site=site.key,
        flow=flow.name,
        step=step,
        now=now,
        utm_source=config.utm_source,
        utm_medium=config.utm_medium,
    )
    spec = flow.steps[step]
    code_hours = spec.code_valid_hours
    view = MailView(
        shop_name=config.sender_name or site.name,
        locale=locale or site.locale,
        currency=site.currency,
        action_url=shop_url,
        unsubscribe_url=links.unsubscribe(recipient),
        shop_url=shop_url,
        lines=SAMPLE_LINES,
        similar=SAMPLE_SIMILAR,
        code=spec.code or "",
        code_expires=now + code_hours * 3600 if spec.code and code_hours else 0.0,
        timezone=site.timezone,
        words=config.words_for(locale or site.locale),
    )
    rendered = ctx.renderer.render(flow, step, view)
    subject = TEST_SUBJECT_PREFIX + rendered.subject
    return build_message(
        from_address=ctx.settings.from_address,
        from_name=config.sender_name or site.name,
        to=recipient,
        rendered=RenderedEmail(subject, rendered.html, rendered.text),
        unsubscribe_url=view.unsubscribe_url,
        unsubscribe_mailto=ctx.settings.unsubscribe_mailto,
        now=now,
    )


def describe_transport(transport: MailTransport) -> str:
    """Where a transport delivers, for humans; never credentials or a webhook's query."""
    if isinstance(transport, SmtpTransport):
        c = transport.config
        security = {"plain": "no TLS", "starttls": "STARTTLS", "implicit": "TLS"}[c.tls]
        return f"SMTP {c.host}:{c.port} ({security})"
    if isinstance(transport, WebhookTransport):
        parts = urlsplit(transport.url)
        return f"the webhook at {parts.scheme}://{parts.hostname}{parts.path}"
    if isinstance(transport, OutboxTransport):
        return f"the outbox folder {transport.directory}"
    return type(transport).__name__
