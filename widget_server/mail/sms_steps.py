"""SMS steps of the flows: the worker's checks and send for a step with ``channel`` ``sms``.

An SMS step goes through the same queue, lease and at-most-once commit as an email (see
:mod:`widget_server.mail.jobs`), and the commit spends the same per-visitor budget: the daily
cap, the budget and the quiet hours count messages over both channels. At send time, in this
order: SMS is configured; the visitor is not in the flow's SMS holdout (``sms_holdout``); the
profile still exists; no purchase since the job was scheduled; a confirmed SMS consent
(:func:`~widget_server.sms.store.sms_consent`), else the visitor is email-only
(``sms_no_phone``); the number is not suppressed (STOP, invalid). Reasons to skip and
counts carry an ``sms`` prefix in the flow's stats (``sms_sent:0``, ``skipped:sms_no_phone``,
``sms_delivered:0``).

A texted STOP cancels every pending SMS step of the number's visitors
(:func:`cancel_pending_sms`); a job cancelled while a worker holds it is refused at the commit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from redis.exceptions import RedisError

from ..sms.provider import SmsRefused, SmsTransientError, SmsUncertainError
from ..sms.store import SmsStore, sms_consent
from ..store.replies import reply_text
from ..store.sites import Site
from .context import MailContext
from .flows import AFTER_ORDER, Flow, FlowStep, MailConfig, in_sms_holdout
from .jobs import BudgetCheck, MailJob
from .tokens import CLICK_TTL_S, restore_target, with_utm

log = logging.getLogger("widget_server.sms")

MAX_RETRY_DELAY_S = 6 * 3600
Hold = Callable[[float, str], Awaitable[str]]
Skip = Callable[[str], Awaitable[str]]


def sms_store(ctx: MailContext) -> SmsStore:
    return SmsStore(ctx.redis, ctx.keys, retention_s=ctx.settings.retention_s)


def is_sms_step(flow: Flow, step: int) -> bool:
    return 0 <= step < len(flow.steps) and flow.steps[step].channel == "sms"


async def sms_veto(
    ctx: MailContext, job: MailJob, flow: Flow, profile: Mapping[str, str]
) -> str | None:
    """Why this SMS step must not go out now, or None."""
    if ctx.sms is None:
        return "sms_off"
    if in_sms_holdout(job.site, job.visitor, flow):
        return "sms_holdout"
    if not profile:
        return "sms_no_profile"
    last_purchase = float(profile.get("last_purchase") or 0)
    if last_purchase and last_purchase >= job.scheduled and job.kind not in AFTER_ORDER:
        return "sms_purchased"
    if not sms_consent(profile):
        return "sms_no_phone"
    if await sms_store(ctx).suppression(job.site, profile["phone"]) is not None:
        return "sms_suppressed"
    return None


async def send_sms_step(
    ctx: MailContext,
    job: MailJob,
    site: Site,
    config: MailConfig,
    flow: Flow,
    profile: Mapping[str, str],
    zone: ZoneInfo,
    now: float,
    *,
    hold: Hold,
    skip: Skip,
) -> str:
    """Commit (budget, daily cap, once), text and send one SMS step whose checks passed
    (:func:`sms_veto`, quiet hours). ``hold(until, reason)`` keeps the job for later,
    ``skip(reason)`` ends it. Returns what :func:`~widget_server.mail.worker.process_job`
    returns."""
    assert ctx.sms is not None
    check = BudgetCheck.of(config.budget, now, zone)
    # The SMS is committed without the email address: an unsubscribed address does not stop it.
    committed = await ctx.scheduler.commit(
        replace(job, email=""), now=now, daily_cap=flow.daily_cap, budget=check
    )
    if committed == "lost":
        return "lost"
    if committed == "budget":
        frees = await ctx.scheduler.budget_frees(job.site, job.visitor, check)
        return await hold(frees, "sms_budget")
    if committed != "ok":
        return await skip(f"sms_{committed}")
    phone = profile["phone"]
    text = await sms_body(ctx, site, config, flow, job, flow.steps[job.step], now)
    callback = ""
    if ctx.settings.public_url:
        callback = f"{ctx.settings.public_url}/v1/sms/status?{urlencode({'site': site.key})}"
    store = sms_store(ctx)
    try:
        receipt = await ctx.sms.send(phone, text, status_callback=callback)
    except SmsTransientError as exc:
        ctx.metrics.failures.labels("transient").inc()
        if job.attempts + 1 >= ctx.settings.max_attempts:
            await ctx.scheduler.fail(job, retry_at=None, error=str(exc), uncommit=True)
            return "failed"
        delay = min(ctx.settings.retry_base_s * 2**job.attempts, MAX_RETRY_DELAY_S)
        await ctx.scheduler.fail(job, retry_at=now + delay, error=str(exc), uncommit=True)
        ctx.metrics.retries.inc()
        return "retry"
    except SmsRefused as exc:
        ctx.metrics.failures.labels("permanent").inc()
        log.warning("sms job %s refused: %s", job.id, exc)
        if exc.suppress == "stopped":
            await store.suppress(job.site, phone, "stopped", now=now)
        elif exc.suppress:
            await store.suppress(job.site, phone, "invalid", now=now)
        await ctx.scheduler.fail(job, retry_at=None, error=str(exc), uncommit=False)
        await _count(ctx, job, f"sms_failed:{job.step}")
        return "failed"
    except SmsUncertainError as exc:
        ctx.metrics.failures.labels("uncertain").inc()
        log.warning("sms job %s may not have been sent: %s", job.id, exc)
        await ctx.scheduler.complete(job)
        return "uncertain"
    await ctx.scheduler.complete(job)
    ctx.metrics.sent.labels(job.flow).inc()
    await _count(ctx, job, f"sms_sent:{job.step}")
    with contextlib.suppress(RedisError):
        if receipt.sid:
            await store.message_sent(
                receipt.sid, site=job.site, flow=job.flow, step=job.step, now=now
            )
        await ctx.scheduler.experiments.sent(job.site, job.visitor, flow, "sms", now)
    return "sent"


async def _count(ctx: MailContext, job: MailJob, field: str) -> None:
    with contextlib.suppress(RedisError):
        await ctx.redis.hincrby(ctx.keys.mail_stats(job.site, job.flow), field, 1)


async def sms_body(
    ctx: MailContext,
    site: Site,
    config: MailConfig,
    flow: Flow,
    job: MailJob,
    step: FlowStep,
    now: float,
) -> str:
    """The step's text in the visitor's locale with ``{shop}`` and ``{link}`` filled in."""
    text = step.sms_text_for(job.locale or site.locale)
    text = text.replace("{shop}", config.sender_name or site.name)
    if "{link}" in text:
        text = text.replace("{link}", await short_link(ctx, site, config, flow, job, now))
    return text


def _shop_url(ctx: MailContext, site: Site, config: MailConfig) -> str:
    origin = next((o for o in site.origins if "*" not in o), "")
    return config.shop_url or origin or ctx.settings.public_url


async def short_link(
    ctx: MailContext, site: Site, config: MailConfig, flow: Flow, job: MailJob, now: float
) -> str:
    """A short tracked link for an SMS (``/v1/sms/l/TOKEN``, 22 characters of token): to the
    restored cart for a cart flow, else to the shop, UTM-tagged with medium ``sms``. The target
    is kept server-side (for :data:`~widget_server.mail.tokens.CLICK_TTL_S`); the token is random
    and signed, so it can be neither guessed nor made up. The visitor's list of link tokens
    (:meth:`~widget_server.store.keys.Keys.sms_links`) names it too, for erasure
    (:func:`forget_links`)."""
    shop_url = _shop_url(ctx, site, config)
    if flow.kind != "browse" and job.cart:
        target = restore_target(
            shop_url,
            config.restore_path,
            [[line.id, line.quantity] for line in job.cart[:20]],
            job.code or flow.steps[job.step].code or "",
        )
    else:
        target = shop_url
    target = with_utm(
        target,
        source=config.utm_source,
        medium="sms",
        campaign=flow.name,
        content=f"step{job.step + 1}",
    )
    token = new_link_token(ctx.settings.secret_key)
    record = {"s": site.key, "f": flow.name, "n": job.step, "v": job.visitor, "u": target}
    listed = ctx.keys.sms_links(site.key, job.visitor)
    # Two slots, so no transaction: the token is listed before the record is written, and a
    # record is never out of erasure's reach.
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.sadd(listed, token)
        pipe.expire(listed, CLICK_TTL_S)
        pipe.set(ctx.keys.sms_link(token), json.dumps(record), ex=CLICK_TTL_S)
        await pipe.execute()
    return f"{ctx.settings.public_url}/v1/sms/l/{token}"


async def forget_links(ctx: MailContext, site: str, visitor: str) -> int:
    """Delete the short links made for the visitor's SMS (they name the visitor and lead to
    their cart), then their list: a link opened afterwards answers like an unknown one.
    Returns the links deleted."""
    listed = ctx.keys.sms_links(site, visitor)
    tokens = sorted(reply_text(t) for t in await ctx.redis.smembers(listed))
    deleted = 0
    if tokens:  # each link on a slot of its own: the client splits the delete by slot
        deleted = int(await ctx.redis.delete(*(ctx.keys.sms_link(t) for t in tokens)))
    await ctx.redis.delete(listed)
    return deleted


def _link_mac(secret: str, nonce: bytes) -> bytes:
    key = hmac.new(secret.encode(), b"widget-server sms links v1", hashlib.sha256).digest()
    return hmac.new(key, nonce, hashlib.sha256).digest()[:7]


def new_link_token(secret: str) -> str:
    nonce = secrets.token_bytes(9)
    return base64.urlsafe_b64encode(nonce + _link_mac(secret, nonce)).decode().rstrip("=")


def link_token_valid(secret: str, token: str) -> bool:
    if len(token) != 22:
        return False
    try:
        raw = base64.urlsafe_b64decode(token + "==")
    except ValueError:
        return False
    return len(raw) == 16 and hmac.compare_digest(raw[9:], _link_mac(secret, raw[:9]))


async def cancel_pending_sms(
    ctx: MailContext, site: str, phone: str, *, visitor: str | None = None
) -> int:
    """Cancel the pending SMS steps of every visitor who confirmed ``phone`` on ``site`` (or of
    ``visitor`` only), claimed ones included: their commit then finds the job gone. Emails stay
    scheduled."""
    config = await ctx.flows.get(site)
    cancelled = 0
    k = ctx.keys
    visitors = [visitor] if visitor else await sms_store(ctx).visitors(site, phone)
    for who in visitors:
        for job in await ctx.scheduler.pending(site, who):
            flow = config.flow(job.get("flow", ""))
            if flow is None or not is_sms_step(flow, int(job.get("step") or 0)):
                continue
            async with ctx.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(k.mail_due(), job["id"])
                pipe.zrem(k.mail_leases(), job["id"])
                pipe.delete(k.mail_job(job["id"]))
                pipe.srem(k.mail_visitor_jobs(site, who), job["id"])
                removed = await pipe.execute()
            cancelled += 1 if removed[2] else 0
    return cancelled
