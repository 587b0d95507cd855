"""The email that brings the code of an email capture.

A visitor who gives their address in an ``email_capture`` offer and ticks the consent box gets
the campaign's code on screen at once, and by email: queued right away
(:meth:`~widget_server.mail.jobs.MailScheduler.reward_requested`), or, where the site asks for
double opt-in, once the address is confirmed (:func:`reward_after_confirmation`). Without consent
no email goes out. The worker hands jobs of :data:`~widget_server.mail.jobs.REWARD_FLOW` to
:func:`process_reward`: the same queue, lease, transport, rate and once-only commit as the
confirmation email; right before sending, the profile must still allow marketing email to the
same address, and the code must still be the visitor's and valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage

from ..store.replies import reply_text
from ..store.sites import Site
from .context import MailContext
from .jobs import REWARD_FLOW, MailJob, marketing_consent, reward_campaign
from .message import (
    format_time,
)
from .once import once_message, process_once
from .send import MailTransport


def reward_veto(job: MailJob, profile: Mapping[str, str], code: str, expires_ms: float,
                now: float) -> str | None:  # fmt: skip
    """Why the code's email must not go out now, or None."""
    if not profile:
        return "no_profile"
    if not marketing_consent(profile):
        return "no_consent"
    if profile.get("email", "").strip().lower() != job.email.lower():
        return "email_changed"
    if not code:
        return "no_code"
    if expires_ms and expires_ms <= now * 1000:
        return "code_expired"
    return None


async def process_reward(
    ctx: MailContext, transport: MailTransport, job: MailJob, clock: Callable[[], float] = time.time
) -> str:
    """Handle one claimed reward job (see :func:`.once.process_once`)."""
    campaign = reward_campaign(job.id)

    async def prepare(site: Site, profile: Mapping[str, str], now: float) -> EmailMessage | str:
        code, expires = await ctx.redis.hmget(
            ctx.keys.campaign_visitor(job.site, campaign, job.visitor), ["code", "code_expires"]
        )
        text, expires_ms = reply_text(code or b""), float(reply_text(expires or b"0") or 0)
        reason = reward_veto(job, profile, text, expires_ms, now)
        return reason or await compose_reward(ctx, site, job, text, expires_ms, now)

    return await process_once(ctx, transport, job, REWARD_FLOW, prepare, clock())


async def compose_reward(
    ctx: MailContext,
    site: Site,
    job: MailJob,
    code: str,
    expires_ms: float,
    now: float,
) -> EmailMessage:
    """The email with the code, its validity and a link to the shop. Raises TemplateError or
    MailAddressError."""

    def until(locale: str) -> str:
        return format_time(expires_ms / 1000, locale, site.timezone) if expires_ms else ""

    shop_url = site.origins[0] if site.origins and "*" not in site.origins[0] else ""
    page = {"code": code, "shop_url": shop_url, "valid_until": bool(expires_ms)}
    return await once_message(
        ctx, site, job, REWARD_FLOW, "reward", now, date=until, values={"code": code},
        context=page,
    )  # fmt: skip


async def reward_after_confirmation(ctx: MailContext, site: str, visitor: str, now: float) -> None:
    """The address was just confirmed: queue the code's email the capture promised."""
    k = ctx.keys
    raw = await ctx.redis.hgetall(k.profile(site, visitor))
    profile = {reply_text(a): reply_text(b) for a, b in raw.items()}
    campaign = profile.get("reward_pending", "")
    if not campaign or not marketing_consent(profile):
        return
    await ctx.scheduler.reward_requested(
        site, visitor, profile.get("email", ""), campaign, now=now,
        locale=profile.get("reward_lang") or None,
    )  # fmt: skip
    await ctx.redis.hdel(k.profile(site, visitor), "reward_pending", "reward_lang")
