"""Emails sent once, outside the flows: the double opt-in confirmation (:mod:`.optin`) and the
code of an email capture (:mod:`.reward`).

They share the flows' queue, lease, transport and per-domain rate, and one send discipline:
right before sending, one Lua step checks the lease and the suppression list and marks the job
sent (:func:`mark`), so two workers, or a worker replaced after dying mid-send, never send it
twice. What differs, whether to send and what, is the ``prepare`` step each kind passes to
:func:`process_once`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from email.message import EmailMessage
from typing import Any

from jinja2 import TemplateNotFound
from redis.exceptions import RedisError

from ..store.replies import reply_text
from ..store.scripts import Scripts
from ..store.sites import Site
from .context import MailContext
from .delivery import deliver
from .jobs import MailJob
from .message import MailAddressError, RenderedEmail, TemplateError, build_message, one_line
from .send import MailTransport
from .tokens import MailLinks

log = logging.getLogger("widget_server.mail")

MAX_CLAIMS = 10  # a job claimed this often without an outcome is dropped as poison
# Given the site and the profile at send time: the email, or the reason not to send it.
Prepare = Callable[[Site, Mapping[str, str], float], Awaitable[EmailMessage | str]]


async def process_once(
    ctx: MailContext,
    transport: MailTransport,
    job: MailJob,
    flow: str,
    prepare: Prepare,
    now: float,
) -> str:
    """Handle one claimed once-only job; returns ``sent``, ``deferred``, ``retry``, ``lost``,
    ``failed``, ``uncertain`` or the reason it was dropped."""
    site = await ctx.sites.get(job.site)
    if site is None:
        return await drop(ctx, job, flow, "no_site")
    if job.claims > MAX_CLAIMS:
        return await drop(ctx, job, flow, "poison")
    raw = await ctx.redis.hgetall(ctx.keys.profile(job.site, job.visitor))
    profile = {reply_text(k): reply_text(v) for k, v in raw.items()}
    try:
        message = await prepare(site, profile, now)
    except (TemplateError, MailAddressError) as exc:
        log.error("%s job %s cannot be rendered: %s", flow, job.id, exc)
        return await drop(ctx, job, flow, "unrenderable")
    if isinstance(message, str):
        return await drop(ctx, job, flow, message)
    wait = await ctx.rate.acquire(job.email.rpartition("@")[2], now)
    if wait > 0:
        await ctx.scheduler.defer(job, until=now + wait)
        return "deferred"
    committed = await mark(ctx, job, "commit", now)
    if committed == "lost":
        return "lost"
    if committed != "ok":
        return await drop(ctx, job, flow, committed)
    outcome = await deliver(
        ctx, transport, job, message, now, release=lambda: mark(ctx, job, "undo", now)
    )
    if outcome == "sent":
        ctx.metrics.sent.labels(flow).inc()
        await count(ctx, job.site, flow, "sent")
    return outcome


async def once_message(
    ctx: MailContext,
    site: Site,
    job: MailJob,
    flow: str,
    template: str,
    now: float,
    *,
    date: Callable[[str], str] = lambda locale: "",
    values: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> EmailMessage:
    """A once-only email from ``template``.html/.txt in the job's language: its texts are the
    ``<template>_*`` messages (subject, footer), filled with the shop, the address, ``date(locale)``
    and ``values``; it carries the one-click unsubscribe. Raises TemplateError or
    MailAddressError."""
    config = await ctx.flows.get(site.key)
    shop = one_line(config.sender_name or site.name, 100)
    locale = job.locale or site.locale
    unsubscribe = MailLinks(
        signer=ctx.signer,
        public_url=ctx.settings.public_url,
        site=site.key,
        flow=flow,
        step=0,
        now=now,
        utm_source="",
        utm_medium="",
    ).unsubscribe(job.email)
    texts = ctx.renderer.texts(
        locale, config.words_for(locale), shop=shop, email=job.email, date=date(locale),
        **(values or {}),
    )  # fmt: skip
    texts["footer"] = texts[f"{template}_footer"]
    page: dict[str, Any] = {
        "t": texts,
        "shop": shop,
        "shop_url": "",
        "similar": [],
        "lang": locale.split("-")[0],
        "email": job.email,
        "unsubscribe_url": unsubscribe,
        **(context or {}),
    }
    html, text = render_pair(ctx, template, page)
    return build_message(
        from_address=ctx.settings.from_address,
        from_name=shop,
        to=job.email,
        rendered=RenderedEmail(one_line(texts[f"{template}_subject"], 200) or shop, html, text),
        unsubscribe_url=unsubscribe,
        unsubscribe_mailto=ctx.settings.unsubscribe_mailto,
        now=now,
    )


def render_pair(ctx: MailContext, name: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """The HTML and text parts of template ``name``; raises TemplateError."""
    try:
        html = ctx.renderer.render_page(f"{name}.html", **context)
        text = ctx.renderer.render_page(f"{name}.txt", **context)
    except TemplateNotFound as exc:
        raise TemplateError(f"email template {exc.name} not found") from None
    except Exception as exc:  # a template bug must not stop the worker
        raise TemplateError(f"{name} template failed: {exc}") from exc
    return html, text


async def mark(ctx: MailContext, job: MailJob, mode: str, now: float) -> str:
    """Commit (or undo) a once-only email job: lease held, address not suppressed."""
    k = ctx.keys
    outcome = await Scripts.of(ctx.redis).optin_commit(
        keys=[k.mail_job(job.id), k.mail_leases(), k.mail_suppressed(job.site)],
        args=[job.id, job.token, mode, job.email.lower(), repr(now)],
    )
    return reply_text(outcome)


async def drop(ctx: MailContext, job: MailJob, flow: str, reason: str) -> str:
    await ctx.scheduler.complete(job)
    ctx.metrics.skipped.labels(reason).inc()
    await count(ctx, job.site, flow, f"skipped:{reason}")
    return reason


async def count(ctx: MailContext, site: str, flow: str, field: str) -> None:
    with contextlib.suppress(RedisError):
        await ctx.redis.hincrby(ctx.keys.mail_stats(site, flow), field, 1)
