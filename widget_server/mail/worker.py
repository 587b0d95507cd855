"""The email worker: claims due jobs, checks the visitor again, renders, sends, records.

Every due email is checked at send time, in this order: the flow still exists and is enabled;
the visitor's profile still exists (erasure deletes it); no purchase since the job was scheduled
(profile ``last_purchase``); marketing consent still given; the address still the profile's;
not in the site's quiet hours in the visitor's time zone (the email waits for their end).
Then, atomically in :meth:`~widget_server.mail.jobs.MailScheduler.commit`: the lease is still
ours, the address is not unsubscribed/bounced/complained, consent was not withdrawn since
scheduling, the step was never sent, the visitor's daily cap is not reached and their budget
over every flow allows one more (else the email waits until it does). Sending and
retries are :func:`~widget_server.mail.delivery.deliver`; see :mod:`widget_server.mail.jobs`
for the guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import RedisError

from ..catalog.feeds import Product
from ..store.replies import reply_text
from ..store.sites import Site
from .context import MailContext
from .delivery import deliver
from .flows import AFTER_ORDER, MAX_HOLD_S, Budget, Flow, MailConfig
from .jobs import CONFIRM_FLOW, REWARD_FLOW, BudgetCheck, MailJob, marketing_consent
from .message import MailAddressError, MailProduct, MailView, TemplateError, build_message
from .once import MAX_CLAIMS
from .optin import process_confirmation
from .reward import process_reward
from .send import MailTransport
from .sms_steps import is_sms_step, send_sms_step, sms_veto
from .tokens import MailLinks, absolute

log = logging.getLogger("widget_server.mail")

Clock = Callable[[], float]
# How long an email waits for one of the visitor's emails of a higher priority, due at the same
# time, to go first (then the budget decides whether it goes at all).
PRIORITY_WAIT_S = 60.0
# The flows whose emails show the products they are about even when those are sold out.
ANY_STOCK = frozenset({"review"})
# The flows whose emails may have no product at all.
NO_PRODUCTS_NEEDED = frozenset({"welcome", "winback"})


class NothingToShow(Exception):
    """The email would have no products in it (the catalog no longer knows them)."""


async def run_worker(
    ctx: MailContext, *, stop: asyncio.Event, poll_s: float = 1.0, clock: Clock = time.time
) -> None:
    """Send due emails until ``stop`` is set. Raises ConfigurationError at once when sending is
    not configured; Redis outages are logged and waited out."""
    transport = ctx.require_sending()
    log.info("mail worker started")
    while not stop.is_set():
        try:
            jobs = await ctx.scheduler.claim(
                clock(), limit=ctx.settings.batch, lease_s=ctx.settings.lease_s
            )
        except (RedisError, OSError) as exc:
            log.warning("mail worker cannot reach Redis: %s", exc)
            jobs = []
        if jobs:
            await asyncio.gather(*(_guarded(ctx, transport, job, clock) for job in jobs))
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
    log.info("mail worker stopped")


async def _guarded(ctx: MailContext, transport: MailTransport, job: MailJob, clock: Clock) -> None:
    try:
        await process_job(ctx, transport, job, clock)
    except Exception:  # one bad job must not stop the others; its lease runs out and it retries
        ctx.metrics.failures.labels("error").inc()
        log.exception("mail job %s failed", job.id)


def send_time_veto(job: MailJob, profile: Mapping[str, str]) -> str | None:
    """Why the visitor's profile forbids this email now, or None. A purchase since the email
    was scheduled stops it, unless the email is about an order (those an order schedules)."""
    if not profile:
        return "no_profile"
    last_purchase = float(profile.get("last_purchase") or 0)
    if last_purchase and last_purchase >= job.scheduled and job.kind not in AFTER_ORDER:
        return "purchased"
    if not job.email:  # scheduled for the visitor's phone only
        return "no_email"
    if not marketing_consent(profile):
        return "no_consent"
    address = profile.get("email", "").strip().lower()
    if address and address != job.email.lower():
        return "email_changed"
    return None


async def process_job(
    ctx: MailContext, transport: MailTransport, job: MailJob, clock: Clock = time.time
) -> str:
    """Handle one claimed job; returns ``sent``, ``deferred``, ``retry``, ``lost``, ``failed``,
    ``uncertain`` or the reason it was skipped."""
    if job.flow == CONFIRM_FLOW:  # double opt-in confirmation emails
        return await process_confirmation(ctx, transport, job, clock)
    if job.flow == REWARD_FLOW:  # the code of an email capture
        return await process_reward(ctx, transport, job, clock)
    now = clock()
    site = await ctx.sites.get(job.site)
    config = await ctx.flows.get(job.site)
    flow = config.flow(job.flow)
    if site is None or flow is None or not flow.enabled or job.step >= len(flow.steps):
        return await _skip(ctx, job, "flow_disabled")
    if job.claims > MAX_CLAIMS:
        return await _skip(ctx, job, "poison")
    raw = await ctx.redis.hgetall(ctx.keys.profile(job.site, job.visitor))
    profile = {reply_text(k): reply_text(v) for k, v in raw.items()}
    sms = is_sms_step(flow, job.step)  # an SMS step: its own checks and sender, same budget
    reason = await sms_veto(ctx, job, flow, profile) if sms else send_time_veto(job, profile)
    if reason is not None:
        return await _skip(ctx, job, reason)
    zone = visitor_zone(profile, site)
    budget = config.budget
    due = job.step_due(flow.steps[job.step])
    if budget.quiet(datetime.fromtimestamp(int(now), zone).hour):
        quiet = "sms_quiet_hours" if sms else "quiet_hours"
        return await _hold(ctx, job, due, quiet_end(budget, now, zone), quiet)
    if await ctx.scheduler.outranked(job, now):
        return await _hold(ctx, job, due, now + PRIORITY_WAIT_S, "priority")
    if sms:
        return await send_sms_step(
            ctx, job, site, config, flow, profile, zone, now,
            hold=lambda until, why: _hold(ctx, job, due, until, why),
            skip=lambda why: _skip(ctx, job, why),
        )  # fmt: skip
    try:
        message = await compose(ctx, site, config, flow, job, now)
    except NothingToShow:
        return await _skip(ctx, job, "no_products")
    except (TemplateError, MailAddressError) as exc:
        log.error("mail job %s cannot be rendered: %s", job.id, exc)
        return await _skip(ctx, job, "unrenderable")
    wait = await ctx.rate.acquire(job.email.rpartition("@")[2], now)
    if wait > 0:
        await ctx.scheduler.defer(job, until=now + wait)
        return "deferred"
    check = BudgetCheck.of(budget, now, zone)
    committed = await ctx.scheduler.commit(job, now=now, daily_cap=flow.daily_cap, budget=check)
    if committed == "lost":
        return "lost"
    if committed == "budget":
        frees = await ctx.scheduler.budget_frees(job.site, job.visitor, check)
        return await _hold(ctx, job, due, frees, "budget")
    if committed != "ok":
        return await _skip(ctx, job, committed)
    outcome = await deliver(ctx, transport, job, message, now)
    if outcome == "sent":
        ctx.metrics.sent.labels(job.flow).inc()
        await _count(ctx, job, f"sent:{job.step}")
        with contextlib.suppress(RedisError):
            await ctx.scheduler.experiments.sent(job.site, job.visitor, flow, "email", now)
    return outcome


def visitor_zone(profile: Mapping[str, str], site: Site) -> ZoneInfo:
    """The visitor's time zone (``tz`` of their profile, as their browser reported it), else
    the site's."""
    for name in (profile.get("tz", ""), site.timezone):
        if name:
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                return ZoneInfo(name)
    return ZoneInfo("UTC")


def quiet_end(budget: Budget, now: float, zone: ZoneInfo) -> float:
    """The end of the quiet hours ``now`` falls in, in ``zone``."""
    assert budget.quiet_hours is not None
    local = datetime.fromtimestamp(int(now), zone)
    end = local.replace(hour=budget.quiet_hours[1], minute=0, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.timestamp()


async def _hold(ctx: MailContext, job: MailJob, due: float, until: float, reason: str) -> str:
    """Keep the email until ``until`` (quiet hours, budget), or drop it when that is more than
    :data:`~widget_server.mail.flows.MAX_HOLD_S` after it was due."""
    if until - due > MAX_HOLD_S:
        return await _skip(ctx, job, reason)
    await ctx.scheduler.defer(job, until=until)
    ctx.metrics.held.labels(reason).inc()
    await _count(ctx, job, f"held:{reason}")
    return "deferred"


async def _skip(ctx: MailContext, job: MailJob, reason: str) -> str:
    await ctx.scheduler.complete(job)
    ctx.metrics.skipped.labels(reason).inc()
    await _count(ctx, job, f"skipped:{reason}")
    return reason


async def _count(ctx: MailContext, job: MailJob, field: str) -> None:
    with contextlib.suppress(RedisError):
        await ctx.redis.hincrby(ctx.keys.mail_stats(job.site, job.flow), field, 1)


def default_shop_url(site: Site) -> str:
    """The first exact origin of the site: where its links lead unless configured otherwise."""
    return next((o for o in site.origins if "*" not in o), "")


async def compose(
    ctx: MailContext, site: Site, config: MailConfig, flow: Flow, job: MailJob, now: float
) -> EmailMessage:
    """Build the finished message for a job: products, signed links, rendered parts, headers.

    Raises NothingToShow, TemplateError or MailAddressError."""
    shop_url = config.shop_url or default_shop_url(site) or ctx.settings.public_url
    links = MailLinks(
        signer=ctx.signer,
        public_url=ctx.settings.public_url,
        site=site.key,
        flow=flow.name,
        step=job.step,
        now=now,
        utm_source=config.utm_source,
        utm_medium=config.utm_medium,
        visitor=job.visitor,
    )
    step = flow.steps[job.step]
    code, code_expires = job.code, job.code_expires
    if not code and step.code:
        code = step.code
        code_expires = now + step.code_valid_hours * 3600 if step.code_valid_hours else 0.0
    lines = await _products(ctx, site.key, flow, job, links, shop_url)
    if flow.kind in ("cart", "checkout"):
        action = links.restore(job.visitor, [(line.id, line.quantity) for line in job.cart], code)
    else:
        action = (lines[0].url if lines else "") or links.tracked(shop_url)
    similar = (
        await ctx.similar(site.key, [line.id for line in lines])
        if ctx.similar and lines and flow.kind != "cross_sell"
        else []
    )
    view = MailView(
        shop_name=config.sender_name or site.name,
        locale=job.locale or site.locale,
        currency=site.currency,
        action_url=action,
        unsubscribe_url=links.unsubscribe(job.email),
        shop_url=links.tracked(shop_url),
        lines=lines,
        similar=[
            MailProduct(
                p.id, p.title, p.price, 1, p.image, links.tracked(absolute(p.url, shop_url))
            )
            for p in list(similar)[:4]
        ],
        code=code,
        code_expires=code_expires,
        timezone=site.timezone,
        words=config.words_for(job.locale or site.locale),
    )
    return build_message(
        from_address=ctx.settings.from_address,
        from_name=config.sender_name or site.name,
        to=job.email,
        rendered=ctx.renderer.render(flow, job.step, view),
        unsubscribe_url=view.unsubscribe_url,
        unsubscribe_mailto=ctx.settings.unsubscribe_mailto,
        now=now,
    )


async def _products(
    ctx: MailContext, site: str, flow: Flow, job: MailJob, links: MailLinks, shop_url: str
) -> list[MailProduct]:
    """The email's product lines: the cart as it was (cart and checkout flows); products like
    the ones bought, never one of those (cross-sell); else the products the email is about
    (viewed, bought, dropped in price, back in stock...) that are still available, up to
    three (a review request shows every item bought, up to five). Images and tracked links
    come from the catalog. Raises NothingToShow when an email needs products and has none."""
    kind = flow.kind
    known: dict[str, Product] = {}

    def product(product_id: str, title: str, price: float, quantity: int) -> MailProduct:
        found = known.get(product_id)
        link = absolute(found.link, shop_url) if found else ""
        image = absolute(found.image_link, shop_url) if found else ""
        return MailProduct(
            product_id, title, price, quantity, image, links.tracked(link) if link else ""
        )

    if kind in ("cart", "checkout"):
        known = await ctx.catalog.get(site, [line.id for line in job.cart]) if ctx.catalog else {}
        lines = [product(line.id, line.title, line.price, line.quantity) for line in job.cart]
    elif kind == "cross_sell":
        bought = set(job.viewed)
        similar = await ctx.similar(site, list(job.viewed)) if ctx.similar else []
        lines = [
            MailProduct(p.id, p.title, p.price, 1, p.image,
                        links.tracked(absolute(p.url, shop_url)) if p.url else "")
            for p in similar if p.id not in bought
        ][:4]  # fmt: skip
    else:
        ids = list(dict.fromkeys(reversed(job.viewed))) if kind == "browse" else list(job.viewed)
        known = await ctx.catalog.get(site, ids) if ctx.catalog else {}
        found = [known[i] for i in ids if i in known]
        if kind in ANY_STOCK:
            lines = [product(p.id, p.title, p.effective_price, 1) for p in found][:5]
        else:
            lines = [product(p.id, p.title, p.effective_price, 1) for p in found if p.available]
            lines = lines[:3]
    if not lines and kind not in NO_PRODUCTS_NEEDED:
        raise NothingToShow(job.id)
    return lines
