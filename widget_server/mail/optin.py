"""Double opt-in: the confirmation email, and the confirmation its link records.

On a site whose :class:`~widget_server.mail.flows.MailConfig` has ``double_opt_in``, a new
email consent is recorded as needing confirmation (profile ``email_confirm_required``) and
:func:`~widget_server.mail.jobs.marketing_consent` refuses it until the profile has
``email_confirmed_at``. The identify handling queues a confirmation job
(:meth:`~widget_server.mail.jobs.MailScheduler.confirmation_requested`: due at once, at most one
per address, visitor and UTC day). The mail worker hands jobs of the flow
:data:`~widget_server.mail.jobs.CONFIRM_FLOW` to :func:`process_confirmation`: same queue, lease,
transport and per-domain rate as the flow emails. Right before sending, one Lua step checks the
lease and the suppression list and marks the job sent, so two workers, or a worker replaced
after dying mid-send, never send it twice.

The link's page asks before anything changes (link scanners only GET); its ``POST`` calls
:func:`confirm_address`, which records the confirmation only while the profile still holds the
same address and the same consent, once. A visitor who already left with a cart then gets the
abandonment flow they would have got. Suppressions (unsubscribed, bounced, complained) are
never lifted by a confirmation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from typing import Literal

from ..store.replies import reply_text
from ..store.scripts import Scripts
from ..store.sites import Site
from ..visitors.session_view import SessionView
from .context import MailContext
from .jobs import CONFIRM_FLOW, MailJob, banner_refused, confirmation_job_id
from .message import (
    format_time,
)
from .once import count, once_message, process_once
from .reward import reward_after_confirmation
from .send import MailTransport
from .tokens import CONFIRM_TTL_S, confirm_link

log = logging.getLogger("widget_server.mail")

ConfirmOutcome = Literal["confirmed", "already", "stale", "gone"]


def awaiting_confirmation(profile: Mapping[str, str]) -> bool:
    """Whether the profile's current consent still waits for its double opt-in confirmation."""
    return (
        profile.get("email_consent") == "1"
        and profile.get("email_confirm_required") == "1"
        and not profile.get("email_confirmed_at")
    )


def confirmation_veto(job: MailJob, profile: Mapping[str, str]) -> str | None:
    """Why the confirmation email must not go out now, or None."""
    if not profile:
        return "no_profile"
    if profile.get("email_consent") != "1" or banner_refused(profile):
        return "no_consent"
    if profile.get("email", "").strip().lower() != job.email.lower():
        return "email_changed"
    if not awaiting_confirmation(profile):
        return "already_confirmed"
    return None


# --- the worker's side -------------------------------------------------------------------------


async def process_confirmation(
    ctx: MailContext, transport: MailTransport, job: MailJob, clock: Callable[[], float] = time.time
) -> str:
    """Handle one claimed confirmation job (see :func:`.once.process_once`)."""

    async def prepare(site: Site, profile: Mapping[str, str], now: float) -> EmailMessage | str:
        reason = confirmation_veto(job, profile)
        return reason or await compose_confirmation(ctx, site, job, profile, now)

    return await process_once(ctx, transport, job, CONFIRM_FLOW, prepare, clock())


async def compose_confirmation(
    ctx: MailContext, site: Site, job: MailJob, profile: Mapping[str, str], now: float
) -> EmailMessage:
    """The confirmation email: a signed link for the profile's current consent, an unsubscribe
    link for whoever did not ask for it. Raises TemplateError or MailAddressError."""
    link = confirm_link(
        ctx.signer,
        ctx.settings.public_url,
        site=site.key,
        visitor=job.visitor,
        email=job.email,
        consent_at=profile.get("email_consent_at", ""),
        now=now,
    )
    return await once_message(
        ctx, site, job, CONFIRM_FLOW, "confirm", now,
        date=lambda locale: format_time(now + CONFIRM_TTL_S, locale, site.timezone),
        context={"confirm_url": link},
    )  # fmt: skip


# --- the link's side ---------------------------------------------------------------------------


async def confirm_address(
    ctx: MailContext, site: str, visitor: str, email: str, consent_at: str, *, now: float
) -> ConfirmOutcome:
    """Record the confirmation of the consent a link names (idempotent: ``already`` the second
    time). On the first confirmation, a visitor who is not on the site right now gets the
    abandonment flow for their last session, as if they had left this moment."""
    outcome = reply_text(
        await Scripts.of(ctx.redis).optin_confirm(
            keys=[ctx.keys.profile(site, visitor)],
            args=[email.strip().lower(), consent_at, repr(now)],
        )
    )
    if outcome == "confirmed":
        await count(ctx, site, CONFIRM_FLOW, "confirmed")
        await _resume_abandonment(ctx, site, visitor, now)
        await reward_after_confirmation(ctx, site, visitor, now)
        await ctx.scheduler.welcome(site, visitor, now=now)
    return outcome  # type: ignore[return-value]


async def _resume_abandonment(ctx: MailContext, site: str, visitor: str, now: float) -> None:
    """Schedule the flow the visitor's last session calls for, unless they are on the site
    (then leaving schedules it, as for everyone)."""
    k, redis = ctx.keys, ctx.redis
    if await redis.hlen(k.connections(site, visitor)):
        return
    session_ids = [reply_text(sid) for sid in await redis.smembers(k.sessions(site, visitor))]
    async with redis.pipeline(transaction=False) as pipe:
        for session_id in session_ids:
            pipe.hgetall(k.session(site, visitor, session_id))
        pipe.hgetall(k.profile(site, visitor))
        *sessions, profile = await pipe.execute()
    live = [{reply_text(a): reply_text(b) for a, b in raw.items()} for raw in sessions if raw]
    if not live or not profile:
        return
    latest = max(live, key=lambda session: float(session.get("last") or 0))
    view = SessionView(
        session=latest, profile={reply_text(a): reply_text(b) for a, b in profile.items()}
    )
    await ctx.scheduler.visitor_left_from_view(site, visitor, view, now=now)


async def forget_confirmation(ctx: MailContext, site: str, visitor: str) -> None:
    """Erase the visitor's confirmation job and daily marks (the visitor asked to be forgotten)."""
    k = ctx.keys
    job_id = confirmation_job_id(site, visitor)
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.zrem(k.mail_due(), job_id)
        pipe.zrem(k.mail_leases(), job_id)
        pipe.delete(
            k.mail_job(job_id), k.mail_confirmations(site, visitor), k.mail_rewards(site, visitor)
        )
        await pipe.execute()
