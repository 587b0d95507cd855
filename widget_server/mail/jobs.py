"""Durable delayed email jobs in Redis: at most one email per (visitor, flow, step), ever.

Layout (every key under the hash tag ``{mail}``, see :class:`~widget_server.store.keys.Keys`):

- a **job hash** per scheduled email, id ``site:visitor:flow:step``: address, locale, the cart or
  viewed products at the time the visitor left, when it was scheduled and when the flow's delays
  count from, attempts, lease token;
- ``due``, a sorted set of job ids by due time, and ``leases``, a sorted set of claimed job ids
  by lease deadline;
- ``sent``, a hash per visitor of every ``flow:step`` committed for sending: the once-only mark;
- per-site suppressions (address -> reason) and consent withdrawals (visitor -> time), and a
  per-visitor count of emails per UTC day.

Lifecycle: :meth:`MailScheduler.visitor_left` writes the jobs. A worker claims due jobs
(:meth:`~MailScheduler.claim`, Lua: due -> leases, with a fresh lease token), checks the visitor,
renders, then commits (:meth:`~MailScheduler.commit`, Lua: token still valid, address not
suppressed, consent not withdrawn since scheduling, step not sent yet, daily cap not reached ->
write the ``sent`` mark), hands the message to the transport and completes the job. A claim also
reaps leases that ran out: the job goes back to ``due`` and the old token dies, so a worker killed
mid-way is replaced by the next one to claim.

**Guarantee: at most once.** The ``sent`` mark is written before the transport is called, in the
same atomic step that checks the lease, so no two workers can both pass it, and a job reclaimed
after a crash meets the mark and is dropped. The price is one window: a worker that dies after
the commit and before the relay accepted the message loses that email (it is not sent rather
than sent twice). Failures known to happen before acceptance (connection refused, 4xx) undo the
mark and retry. Marks live for the retention period (the profile TTL), so "ever" means "while
the visitor's data is kept". Times come from the callers' clocks: keep workers NTP-synced and
leases far longer than clock skew.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.exceptions import WatchError

from ..offers.assign import in_site_holdout
from ..sms.store import sms_consent
from ..store.keys import Keys
from ..store.replies import reply_text
from ..store.scripts import Scripts
from ..store.sites import SiteRegistry
from ..visitors.session_view import CartLine, SessionView
from ..wire.protocol import Purchase
from .experiments import FlowExperiments, flow_arm, reach_arm
from .flows import (
    ABANDONMENT,
    AFTER_ORDER,
    RETURN_CANCELS,
    Budget,
    Flow,
    FlowKind,
    FlowStep,
    MailFlowStore,
    in_holdout,
)
from .message import MailAddressError, email_digest, normalize_address

CommitOutcome = Literal["ok", "lost", "suppressed", "withdrawn", "already_sent", "capped", "budget"]
SuppressionReason = Literal["unsubscribed", "bounced", "complained"]
DEFAULT_RETENTION_S = 180 * 24 * 3600
_JOB_SLACK_S = 14 * 24 * 3600
# Repeat orders of a category needed before its replenishment interval counts as learned.
MIN_REPEATS = 3
# A script that gets the keys of the jobs read just before is tried again this often when the
# jobs changed in between.
_ATTEMPTS = 5
# Jobs whose lease ran out, put back per claim.
_REAP_LIMIT = 100
# The flow name of double opt-in confirmation jobs; not a valid configured flow name.
CONFIRM_FLOW = "@confirm"
ConfirmationOutcome = Literal["scheduled", "pending", "already_sent", "invalid_email"]


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def banner_refused(profile: Mapping[str, str]) -> bool:
    """Whether the visitor refused marketing in the consent banner after opting in to email.
    The banner's state alone is not a refusal: a page without a consent manager reports
    marketing as not granted, and the later, specific opt-in to email wins over an earlier
    banner choice."""
    if profile.get("consent_marketing") != "0":
        return False
    try:
        return float(profile.get("consent_changed") or 0) > float(
            profile.get("email_consent_at") or 0
        )
    except ValueError:
        return True


def marketing_consent(profile: Mapping[str, str]) -> bool:
    """Whether a profile allows marketing email: opted in with the address, not withdrawn
    through the consent banner since, and confirmed when the consent was given under double
    opt-in (the profile records that requirement with the consent, and resets both when the
    address changes)."""
    if profile.get("email_consent") != "1" or banner_refused(profile):
        return False
    return profile.get("email_confirm_required") != "1" or bool(profile.get("email_confirmed_at"))


REWARD_FLOW = "@reward"


def reward_job_id(site: str, visitor: str, campaign: str) -> str:
    """The id of the email that brings the code of an email capture (one per campaign)."""
    return f"{site}:{visitor}:{REWARD_FLOW}:{campaign}"


def reward_campaign(job_id: str) -> str:
    return job_id.rsplit(":", 1)[-1]


def confirmation_job_id(site: str, visitor: str) -> str:
    """The id of the visitor's double opt-in confirmation job (one at a time per visitor)."""
    return f"{site}:{visitor}:{CONFIRM_FLOW}"


@dataclass(frozen=True, slots=True)
class MailJob:
    """One claimed email job; ``token`` proves the claim until the lease runs out."""

    id: str
    token: str
    site: str
    visitor: str
    flow: str
    step: int
    email: str
    locale: str
    scheduled: float
    due: float
    attempts: int
    claims: int
    cart: tuple[CartLine, ...]
    viewed: tuple[str, ...]
    code: str
    code_expires: float
    kind: str = ""
    rank: int = 0
    occurrence: str = ""
    start: float = 0.0

    def step_due(self, step: FlowStep) -> float:
        """When the job's ``step`` was due: its delay after the flow's start (a replenishment
        reminder starts an interval after the order), else after it was scheduled (jobs written
        before the start was kept). How long the budget and quiet hours may hold a message
        counts from here."""
        return (self.start or self.scheduled) + step.delay_minutes * 60

    @property
    def step_field(self) -> str:
        """The once-only mark of the step: per flow and step, and per occurrence for flows that
        come again (after each order, after each absence)."""
        field = f"{self.flow}:{self.step}"
        return f"{field}@{self.occurrence}" if self.occurrence else field

    @classmethod
    def from_hash(cls, job_id: str, token: str, raw: Mapping[str, str]) -> MailJob:
        cart = [line for line in json.loads(raw.get("cart") or "[]") if isinstance(line, dict)]
        return cls(
            id=job_id,
            token=token,
            site=raw.get("site", ""),
            visitor=raw.get("visitor", ""),
            flow=raw.get("flow", ""),
            step=int(raw.get("step", "0")),
            email=raw.get("email", ""),
            locale=raw.get("locale", ""),
            scheduled=float(raw.get("scheduled", "0")),
            due=float(raw.get("due", "0")),
            attempts=int(raw.get("attempts", "0")),
            claims=int(raw.get("claims", "0")),
            cart=tuple(CartLine(**line) for line in cart),
            viewed=tuple(str(v) for v in json.loads(raw.get("viewed") or "[]")),
            code=raw.get("code", ""),
            code_expires=float(raw.get("code_expires") or 0),
            kind=raw.get("kind", ""),
            rank=int(raw.get("rank") or 0),
            occurrence=raw.get("occurrence", ""),
            start=float(raw.get("start") or 0),
        )


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """A site's :class:`~widget_server.mail.flows.Budget` at ``now`` for one visitor: where their
    local day started and when the next one starts (their time zone decides)."""

    per_day: int
    per_week: int
    now: float
    day_start: float
    next_day: float

    @classmethod
    def of(cls, budget: Budget, now: float, zone: ZoneInfo) -> BudgetCheck:
        local = datetime.fromtimestamp(int(now), zone)  # whole seconds: never rounded up
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = midnight + timedelta(days=1)  # wall-clock: DST days have 23 or 25 h
        return cls(
            budget.per_day, budget.per_week, now, midnight.timestamp(), following.timestamp()
        )

    def args(self) -> tuple[str, str, str]:
        return str(self.per_day), str(self.per_week), repr(self.day_start)


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """What :meth:`MailScheduler.visitor_left` did. ``outcome`` is ``scheduled`` or why not:
    ``no_email``, ``invalid_email``, ``no_consent``, ``suppressed``, ``site_holdout`` (the
    visitor is in the site-wide holdout), ``nothing_abandoned``, ``holdout`` or
    ``already_sent`` (every step of the flow went out before)."""

    outcome: str
    flow: str = ""
    job_ids: tuple[str, ...] = ()


def _reachable_address(email: str, sms: bool) -> str | ScheduleResult:
    """The normalised address to email (``""`` for a visitor reached by texts only, ``sms``: a
    confirmed phone), or why the visitor cannot be reached."""
    if not email and not sms:
        return ScheduleResult("no_email")
    try:
        return normalize_address(email) if email else ""
    except MailAddressError:
        return "" if sms else ScheduleResult("invalid_email")


class MailScheduler:
    """Schedules, cancels and hands out email jobs. All methods raise ``redis`` errors as is."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        flows: MailFlowStore | None = None,
        *,
        retention_s: int = DEFAULT_RETENTION_S,
        sites: SiteRegistry | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.flows = flows or MailFlowStore(redis, keys)
        self._sites = sites or SiteRegistry(redis, keys)
        self._retention_s = retention_s
        self.experiments = FlowExperiments(redis, keys, retention_s=retention_s)
        scripts = Scripts.of(redis)
        self._schedule = scripts.mailjob_schedule
        self._cancel = scripts.mailjob_cancel
        self._claim = scripts.mailjob_claim
        self._commit = scripts.mailjob_commit
        self._finish = scripts.mailjob_finish

    # --- the visitor's side ------------------------------------------------------------------
    async def visitor_left(
        self,
        site: str,
        visitor: str,
        *,
        now: float,
        cart: Sequence[CartLine],
        email: str | None,
        consent: bool,
        locale: str | None = None,
        product_views: int = 0,
        viewed: Sequence[str] = (),
        checkout: bool = False,
        code: str = "",
        code_expires: float = 0.0,
        sms: bool = False,
    ) -> ScheduleResult:
        """Schedule the flow that fits, replacing the visitor's pending jobs.

        Checkout flow if the visitor reached checkout with a cart (and that flow is enabled),
        else the cart flow for a non-empty cart, else the browse flow after ``browse_min_views``
        product views. Needs an address and marketing consent, or ``sms`` (a confirmed phone:
        each step checks its own channel when due); steps already sent are skipped.
        """
        address = _reachable_address(email or "", sms)
        if isinstance(address, ScheduleResult):
            return address
        if not consent and not sms:
            await self.cancel(site, visitor)
            return ScheduleResult("no_consent")
        if not sms and await self.suppression(site, address) is not None:
            await self.cancel(site, visitor)
            return ScheduleResult("suppressed")
        record = await self._sites.get(site)
        if record is not None and in_site_holdout(
            site, record.holdout_version, record.holdout, visitor
        ):
            await self.cancel(site, visitor)
            return ScheduleResult("site_holdout")  # no message at all: the tool's control group
        config = await self.flows.get(site)
        flow = config.flow_for(has_cart=bool(cart), product_views=product_views, checkout=checkout)
        if flow is None:
            abandonment = [f.name for f in config.flows if f.kind in ABANDONMENT]
            await self.cancel(site, visitor, flows=abandonment)
            return ScheduleResult("nothing_abandoned")
        return await self._schedule_flow(
            site,
            visitor,
            flow,
            now=now,
            address=address,
            replace=[f.name for f in config.flows if f.kind in ABANDONMENT],
            fields={
                "locale": locale or "",
                "cart": json.dumps([asdict(line) for line in cart[:50]]),
                "viewed": json.dumps(list(viewed)[-10:]),
                "code": code,
                "code_expires": repr(code_expires),
            },
            cancel_when_held_out=True,
            sms_reach=sms,
        )

    async def _schedule_flow(
        self,
        site: str,
        visitor: str,
        flow: Flow,
        *,
        now: float,
        address: str,
        replace: Sequence[str],
        fields: Mapping[str, str],
        occurrence: str = "",
        cancel_when_held_out: bool = False,
        start: float | None = None,
        sms_reach: bool = False,
    ) -> ScheduleResult:
        """Schedule every step of ``flow`` for a visitor whose address and consent were checked,
        replacing the pending jobs of the flows named in ``replace`` (the flow's own included):
        the holdout draw and exposure (``sms_reach``: the visitor can get texts), then one
        atomic script."""
        begins = now if start is None else start
        held_out = in_holdout(site, visitor, flow)
        segment = reach_arm(site, visitor, flow, held_out=held_out, sms=sms_reach)
        await self.experiments.exposed(
            site, visitor, flow, flow_arm(held_out), now, reach_arm=segment
        )
        if held_out:
            if cancel_when_held_out:
                await self.cancel(site, visitor, flows=list(replace))
            return ScheduleResult("holdout", flow.name)
        base = {
            "site": site,
            "visitor": visitor,
            "flow": flow.name,
            "kind": flow.kind,
            "rank": str(flow.rank),
            "occurrence": occurrence,
            "email": address,
            "scheduled": repr(now),
            "start": repr(begins),
            "attempts": "0",
            "claims": "0",
            "locale": "",
            "cart": "[]",
            "viewed": "[]",
            "code": "",
            "code_expires": "0.0",
            **fields,
        }
        mark = f"@{occurrence}" if occurrence else ""
        steps = []
        for index, step in enumerate(flow.steps):
            due = begins + step.delay_minutes * 60
            job_fields = {**base, "step": str(index), "due": repr(due)}
            job_id = f"{site}:{visitor}:{flow.name}:{index}"
            steps.append(
                {"id": job_id, "field": f"{flow.name}:{index}{mark}", "due": due,
                 "fields": job_fields}
            )  # fmt: skip
        replaced = json.dumps(sorted({*replace, flow.name}))
        k = self._keys
        for _ in range(_ATTEMPTS):
            pending = await self._visitor_jobs(site, visitor)
            ids = await self._schedule(
                keys=[
                    k.mail_due(),
                    k.mail_leases(),
                    k.mail_sent(site, visitor),
                    k.mail_visitor_jobs(site, visitor),
                    *(k.mail_job(job_id) for job_id in pending),
                    *(k.mail_job(str(step["id"])) for step in steps),
                ],
                args=[_JOB_SLACK_S, repr(now), json.dumps(steps), replaced, *pending],
            )
            if ids != -1:
                break
        else:
            raise WatchError("the visitor's email jobs kept changing while scheduling")
        if address:
            index_key = k.mail_email_visitors(site, email_digest(address))
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(index_key, visitor)
                pipe.expire(index_key, self._retention_s)
                await pipe.execute()
        job_ids = tuple(reply_text(i) for i in ids)
        return ScheduleResult("scheduled" if job_ids else "already_sent", flow.name, job_ids)

    async def schedule_flow(
        self,
        site: str,
        visitor: str,
        kind: FlowKind,
        *,
        now: float,
        products: Sequence[str] = (),
        occurrence: str = "",
        start: float | None = None,
        profile: Mapping[str, str] | None = None,
    ) -> ScheduleResult:
        """Schedule the site's enabled flow of ``kind`` for a visitor, from what their profile
        says (address and marketing consent, or a confirmed phone; language): a welcome after a
        capture, the emails after an order (``products``: what was bought), a price drop or a
        restock (``products``: the products concerned). Replaces that flow's own pending emails
        only. ``occurrence`` names one instance of a flow that comes again (an order id, a
        day): each gets its emails. The steps' delays count from ``start`` (default: now);
        ``profile``: the visitor's profile when the caller has just read it."""
        config = await self.flows.get(site)
        flow = config.enabled_flow(kind)
        if flow is None:
            return ScheduleResult("flow_disabled")
        if profile is None:
            raw = await self._redis.hgetall(self._keys.profile(site, visitor))
            profile = {reply_text(k): reply_text(v) for k, v in raw.items()}
        sms = sms_consent(profile)  # texts only: each step checks its own channel when due
        address = _reachable_address(profile.get("email", ""), sms)
        if isinstance(address, ScheduleResult):
            return address
        if not sms:
            if not marketing_consent(profile):
                return ScheduleResult("no_consent")
            if await self.suppression(site, address) is not None:
                return ScheduleResult("suppressed")
        record = await self._sites.get(site)
        if record is not None and in_site_holdout(
            site, record.holdout_version, record.holdout, visitor
        ):
            return ScheduleResult("site_holdout")
        return await self._schedule_flow(
            site,
            visitor,
            flow,
            now=now,
            address=address,
            replace=[flow.name],
            fields={
                "locale": profile.get("lang", ""),
                "viewed": json.dumps([str(p) for p in products][:10]),
            },
            occurrence=occurrence,
            start=start,
            sms_reach=sms,
        )

    async def visitor_left_from_view(
        self, site: str, visitor: str, view: SessionView, *, now: float, locale: str | None = None
    ) -> ScheduleResult:
        """:meth:`visitor_left` with everything taken from the session view the store returned;
        then the win-back series restarts its clock from this visit (when the site has one)."""
        result = await self.visitor_left(
            site,
            visitor,
            now=now,
            cart=[] if view.purchased else view.cart,
            email=view.profile.get("email") or None,
            consent=marketing_consent(view.profile),
            locale=locale,
            product_views=int(view.session.get("products_viewed") or 0),
            viewed=list(view.viewed_ids),
            checkout=view.session.get("checkout") == "1",
            sms=sms_consent(view.profile),
        )
        if result.outcome not in ("no_email", "invalid_email", "no_consent", "suppressed"):
            recent = json.loads(view.profile.get("viewed") or "[]")  # over every visit
            viewed = [str(v) for v in recent][-3:] if isinstance(recent, list) else []
            await self.schedule_flow(
                site, visitor, "winback", now=now, products=viewed[::-1],
                occurrence=utc_day(now), profile=view.profile,
            )  # fmt: skip
        return result

    async def visitor_returned(self, site: str, visitor: str, *, now: float) -> int:
        """Cancel the pending steps of flows with ``cancel_on_return`` (the default); the next
        :meth:`visitor_left` schedules them again. Returns the number of jobs cancelled."""
        config = await self.flows.get(site)
        names = [f.name for f in config.flows if f.cancel_on_return and f.kind in RETURN_CANCELS]
        return await self.cancel(site, visitor, flows=names) if names else 0

    async def purchased(
        self, site: str, visitor: str, *, value: float | None = None, now: float | None = None
    ) -> int:
        """Cancel every pending email of the visitor at once (claimed ones included). With the
        ``value`` of a new order, attribute it to the flows that exposed the visitor."""
        cancelled = await self.cancel(site, visitor)
        if value is not None:
            config = await self.flows.get(site)
            moment = time.time() if now is None else now
            await self.experiments.purchased(site, visitor, config.flows, value, moment)
        return cancelled

    async def after_order(
        self,
        site: str,
        visitor: str,
        order_id: str,
        items: Sequence[tuple[str, str]],
        *,
        now: float,
    ) -> list[ScheduleResult]:
        """Schedule the emails an order starts, once per order: products to go with it (never
        what was bought), a review request, and a replenishment reminder when a bought item's
        category has an interval, set on the flow or learned from the shop's repeat orders of
        that category (``items``: (product id, category))."""
        bought = [product for product, _ in items]
        results = [
            await self.schedule_flow(
                site, visitor, kind, now=now, products=bought, occurrence=order_id
            )
            for kind in ("cross_sell", "review")
        ]
        categories = sorted({c.strip().lower() for _, c in items if c.strip()})
        learned = await self._learn_intervals(site, visitor, categories, now)
        config = await self.flows.get(site)
        flow = config.enabled_flow("replenishment")
        if flow is not None:
            chosen = {k.strip().lower(): v for k, v in flow.categories.items()}
            intervals = {
                c: days
                for c in categories
                if (
                    days := chosen.get(c)
                    or chosen.get(c.rpartition(">")[2].strip())
                    or learned.get(c)
                )
            }
            if intervals:
                category = min(intervals, key=lambda c: intervals[c])
                again = [p for p, c in items if c.strip().lower() == category]
                results.append(
                    await self.schedule_flow(
                        site, visitor, "replenishment", now=now, products=again,
                        occurrence=order_id, start=now + intervals[category] * 86400,
                    )
                )  # fmt: skip
        return results

    async def _learn_intervals(
        self, site: str, visitor: str, categories: Sequence[str], now: float
    ) -> dict[str, int]:
        """Record when the visitor last bought each category; a repeat order adds its interval
        to the site's per-category statistics. Returns the learned interval (days, the geometric
        mean of at least :data:`MIN_REPEATS` repeat intervals) of each category that has one."""
        if not categories:
            return {}
        profile, stats = self._keys.profile(site, visitor), self._keys.mail_replenish(site)
        fields = [f"bought:{c}" for c in categories]
        if not await self._redis.exists(profile):
            return {}  # nothing to compare with, and no profile to create (it has its TTL)
        before = await self._redis.hmget(profile, fields)
        async with self._redis.pipeline(transaction=False) as pipe:
            for category, last in zip(categories, before, strict=True):
                days = (now - float(reply_text(last))) / 86400 if last else 0.0
                if 1 <= days <= 365:
                    pipe.hincrby(stats, f"{category}:n", 1)
                    pipe.hincrbyfloat(stats, f"{category}:log", math.log(days))
            pipe.hset(profile, mapping={field: repr(now) for field in fields})
            await pipe.execute()
        raw = await self._redis.hmget(
            stats, [f"{c}:{part}" for c in categories for part in ("n", "log")]
        )
        learned = {}
        for i, category in enumerate(categories):
            n, total = raw[2 * i], raw[2 * i + 1]
            if n and total and int(n) >= MIN_REPEATS:
                learned[category] = max(1, round(math.exp(float(reply_text(total)) / int(n))))
        return learned

    async def welcome(
        self, site: str, visitor: str, *, now: float, profile: Mapping[str, str] | None = None
    ) -> ScheduleResult:
        """Start the welcome series for a visitor whose marketing consent now counts, unless it
        is under way or was sent (it is sent once). ``profile``: as :meth:`schedule_flow`."""
        config = await self.flows.get(site)
        flow = config.enabled_flow("welcome")
        if flow is None:
            return ScheduleResult("flow_disabled")
        pending = await self._visitor_jobs(site, visitor)
        if any(job_id.rsplit(":", 2)[-2] == flow.name for job_id in pending):
            return ScheduleResult("already_scheduled", flow.name)
        return await self.schedule_flow(site, visitor, "welcome", now=now, profile=profile)

    async def after_purchase(
        self, site: str, visitor: str, purchase: Purchase, *, now: float
    ) -> list[ScheduleResult]:
        """A new order: every pending email stops (:meth:`purchased`, with the order's value for
        the flows' reports), then the emails the order starts (:meth:`after_order`)."""
        await self.purchased(site, visitor, value=purchase.value, now=now)
        items = [(item.id, item.category) for item in purchase.items]
        return await self.after_order(site, visitor, purchase.order_id, items, now=now)

    async def order_reported_again(self, site: str, visitor: str, order_id: str) -> int:
        """An order reported once more (the widget saw it, then the shop's webhook came; or a
        webhook retried): it counts once. The visitor's pending emails stop as at a purchase
        (the first report may have failed before stopping them), except the ones this order
        started (:data:`~widget_server.mail.flows.AFTER_ORDER` flows with the order as their
        occurrence). Returns the number of jobs cancelled."""
        pending = await self.pending(site, visitor)
        own = {
            job.get("flow", "")
            for job in pending
            if job.get("kind") in AFTER_ORDER and job.get("occurrence") == order_id
        }
        others = sorted({job.get("flow", "") for job in pending} - own)
        return await self.cancel(site, visitor, flows=others) if others else 0

    async def outranked(self, job: MailJob, now: float) -> bool:
        """Whether another of the visitor's emails, of a higher priority, is due now or being
        sent: this one then waits, so the budget goes to the more important one first."""
        k = self._keys
        others = [i for i in await self._visitor_jobs(job.site, job.visitor) if i != job.id]
        if not others:
            return False
        async with self._redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.hmget(k.mail_job(other), "rank", "committed_day")
                pipe.zscore(k.mail_due(), other)
                pipe.zscore(k.mail_leases(), other)
            replies = await pipe.execute()
        for i in range(len(others)):
            (rank, committed), due, leased = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            waiting = (due is not None and float(due) <= now) or (leased and not committed)
            if waiting and int(reply_text(rank) if rank else "0") > job.rank:
                return True
        return False

    async def consent_withdrawn(self, site: str, visitor: str, *, now: float | None = None) -> int:
        """Record the withdrawal (jobs scheduled before it never send) and cancel everything."""
        when = time.time() if now is None else now
        await self._redis.hset(self._keys.mail_withdrawn(site), visitor, repr(when))
        return await self.cancel(site, visitor)

    async def unsubscribed(self, site: str, email: str, *, now: float | None = None) -> int:
        """Suppress the address for the site and cancel every pending email to it."""
        return await self.suppress(site, email, "unsubscribed", now=now)

    async def suppress(
        self, site: str, email: str, reason: SuppressionReason, *, now: float | None = None
    ) -> int:
        """Add the address to the site's suppression list (unsubscribed, bounced, complained)
        and cancel pending emails to it. Raises MailAddressError for an unusable address."""
        address = normalize_address(email).lower()
        record = json.dumps({"reason": reason, "at": time.time() if now is None else now})
        await self._redis.hset(self._keys.mail_suppressed(site), address, record)
        visitors = await self._redis.smembers(
            self._keys.mail_email_visitors(site, email_digest(address))
        )
        cancelled = 0
        for visitor in visitors:
            cancelled += await self._cancel_jobs(site, reply_text(visitor), "email", address)
        return cancelled

    async def last_sent_flow(self, site: str, email: str) -> str | None:
        """The flow of the latest email sent to ``email`` on ``site`` (by the sent marks of the
        visitors with jobs for the address), or None; for bounces and complaints."""
        try:
            address = normalize_address(email).lower()
        except MailAddressError:
            return None
        k = self._keys
        visitors = await self._redis.smembers(k.mail_email_visitors(site, email_digest(address)))
        latest: tuple[float, str] | None = None
        for visitor in visitors:
            for field, mark in (
                await self._redis.hgetall(k.mail_sent(site, reply_text(visitor)))
            ).items():
                flow, _, _ = reply_text(field).rpartition(":")
                try:
                    at = float(reply_text(mark).rpartition("|")[2])
                except ValueError:
                    continue
                if latest is None or at > latest[0]:
                    latest = (at, flow)
        return latest[1] if latest else None

    async def suppression(self, site: str, email: str) -> str | None:
        """The reason the address is suppressed for the site, or None."""
        raw = await self._redis.hget(self._keys.mail_suppressed(site), email.strip().lower())
        return str(json.loads(raw)["reason"]) if raw else None

    async def forget(self, site: str, visitor: str) -> int:
        """Erase the visitor's email data: pending jobs, sent marks, counts, withdrawal record,
        per-flow experiment states.
        The site's suppression list keeps the address: an unsubscribe must outlive erasure."""
        k = self._keys
        jobs = [
            reply_text(j) for j in await self._redis.smembers(k.mail_visitor_jobs(site, visitor))
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in jobs:
                pipe.hget(k.mail_job(job_id), "email")
            emails = {reply_text(e) for e in await pipe.execute() if e}
        cancelled = await self.cancel(site, visitor)
        config = await self.flows.get(site)
        await self.experiments.forget(site, visitor, [flow.name for flow in config.flows])
        async with self._redis.pipeline(transaction=False) as pipe:
            for address in emails:
                pipe.srem(k.mail_email_visitors(site, email_digest(address)), visitor)
            pipe.delete(k.mail_sent(site, visitor), k.mail_daily(site, visitor))
            pipe.delete(k.mail_budget(site, visitor))
            pipe.hdel(k.mail_withdrawn(site), visitor)
            await pipe.execute()
        return cancelled

    async def cancel(self, site: str, visitor: str, *, flows: Sequence[str] | None = None) -> int:
        """Cancel the visitor's jobs (of ``flows`` only, if given), claimed ones included."""
        if flows is None:
            return await self._cancel_jobs(site, visitor, "all", "")
        return await self._cancel_jobs(site, visitor, "flows", json.dumps(list(flows)))

    async def pending(self, site: str, visitor: str) -> list[dict[str, str]]:
        """The visitor's scheduled jobs as stored (for the admin and for tests)."""
        jobs = sorted(
            reply_text(j)
            for j in await self._redis.smembers(self._keys.mail_visitor_jobs(site, visitor))
        )
        out = []
        for job_id in jobs:
            raw = await self._redis.hgetall(self._keys.mail_job(job_id))
            if raw:
                out.append({reply_text(a): reply_text(b) for a, b in raw.items()} | {"id": job_id})
        return out

    async def confirmation_requested(
        self, site: str, visitor: str, email: str, *, now: float, locale: str | None = None
    ) -> ConfirmationOutcome:
        """Queue the double opt-in confirmation email to ``email``, due at once.

        At most one per address, visitor and UTC day: one Lua step checks and writes the day's
        mark and the job. ``pending`` means a worker is sending the visitor's previous one right
        now; an unclaimed older one (another address, or a retry) is replaced.
        """
        return await self._once(
            confirmation_job_id(site, visitor),
            CONFIRM_FLOW,
            site,
            visitor,
            email,
            self._keys.mail_confirmations(site, visitor),
            lambda address: (email_digest(address), utc_day(now)),
            now=now,
            locale=locale,
        )

    async def reward_requested(
        self,
        site: str,
        visitor: str,
        email: str,
        campaign: str,
        *,
        now: float,
        locale: str | None = None,
    ) -> ConfirmationOutcome:
        """Queue the email that brings the code of ``campaign``'s email capture, due at once:
        once per campaign and visitor (the same Lua step as the confirmation's, with the
        campaign in place of the address)."""
        return await self._once(
            reward_job_id(site, visitor, campaign),
            REWARD_FLOW,
            site,
            visitor,
            email,
            self._keys.mail_rewards(site, visitor),
            lambda address: (campaign, "1"),
            now=now,
            locale=locale,
        )

    async def _once(
        self,
        job_id: str,
        flow: str,
        site: str,
        visitor: str,
        email: str,
        marks: str,
        mark: Callable[[str], tuple[str, str]],
        *,
        now: float,
        locale: str | None,
    ) -> ConfirmationOutcome:
        """Queue a once-only email due at once (``lua/optin_schedule.lua``): not when ``marks``
        already holds the ``(field, value)`` that ``mark`` gives for the address."""
        try:
            address = normalize_address(email)
        except MailAddressError:
            return "invalid_email"
        k = self._keys
        fields = {
            "site": site,
            "visitor": visitor,
            "flow": flow,
            "step": "0",
            "email": address,
            "locale": locale or "",
            "scheduled": repr(now),
            "due": repr(now),
            "attempts": "0",
            "claims": "0",
        }
        field, value = mark(address)
        outcome = await Scripts.of(self._redis).optin_schedule(
            keys=[k.mail_due(), k.mail_leases(), k.mail_job(job_id), marks],
            args=[job_id, field, value, repr(now), _JOB_SLACK_S, json.dumps(fields)],
        )
        return reply_text(outcome)  # type: ignore[return-value]

    # --- the worker's side -------------------------------------------------------------------
    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids of jobs due at ``now`` (not claimed), soonest first. Read-only."""
        ids = await self._redis.zrangebyscore(
            self._keys.mail_due(), "-inf", now, start=0, num=limit
        )
        return [reply_text(i) for i in ids if isinstance(i, bytes | str)]

    async def claim(self, now: float, *, limit: int = 10, lease_s: float = 120.0) -> list[MailJob]:
        """Reap expired leases, then claim up to ``limit`` due jobs for ``lease_s`` seconds."""
        k = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:  # one slot: one round trip
            pipe.zrangebyscore(k.mail_leases(), "-inf", now, start=0, num=_REAP_LIMIT)
            pipe.zrangebyscore(k.mail_due(), "-inf", now, start=0, num=limit)
            expired_raw, due_raw = await pipe.execute()
        expired = [reply_text(i) for i in expired_raw]
        due = [reply_text(i) for i in due_raw]
        if not expired and not due:
            return []
        rows = await self._claim(
            keys=[k.mail_due(), k.mail_leases(), *(k.mail_job(i) for i in (*expired, *due))],
            args=[repr(now), repr(lease_s), limit, secrets.token_hex(8), len(expired),
                  *expired, *due],
        )  # fmt: skip
        jobs = []
        for job_id, token, flat in rows:
            raw = {reply_text(flat[i]): reply_text(flat[i + 1]) for i in range(0, len(flat), 2)}
            jobs.append(MailJob.from_hash(reply_text(job_id), reply_text(token), raw))
        return jobs

    async def commit(
        self, job: MailJob, *, now: float, daily_cap: int, budget: BudgetCheck | None = None
    ) -> CommitOutcome:
        """The point of no return before sending (see the module docstring). Only ``ok`` allows
        the send; ``lost`` means the job was cancelled or its lease was taken over; ``budget``
        that the visitor had their messages for the day or the week (``budget``; None: the
        email is outside the budget)."""
        k = self._keys
        limits = ("", "", "") if budget is None else budget.args()
        outcome = await self._commit(
            keys=[
                k.mail_job(job.id),
                k.mail_leases(),
                k.mail_sent(job.site, job.visitor),
                k.mail_daily(job.site, job.visitor),
                k.mail_suppressed(job.site),
                k.mail_withdrawn(job.site),
                k.mail_budget(job.site, job.visitor),
            ],
            args=[
                *(job.id, job.token, repr(now), job.step_field, daily_cap, job.email.lower()),
                *(job.visitor, self._retention_s, utc_day(now), *limits),
            ],
        )
        return reply_text(outcome)  # type: ignore[return-value]

    async def budget_frees(self, site: str, visitor: str, budget: BudgetCheck) -> float:
        """When the visitor's budget next allows a message: the start of their next day when
        the day's are spent, the moment the oldest of the week's leaves the 7 days when those
        are; whichever is later."""
        key = self._keys.mail_budget(site, visitor)
        week_start = budget.now - 7 * 86400
        pairs = await self._redis.zrangebyscore(key, f"({week_start!r}", "+inf", withscores=True)
        recent = sorted(float(pair[1]) for pair in pairs)
        frees = budget.now
        if sum(1 for t in recent if t >= budget.day_start) >= budget.per_day:
            frees = budget.next_day
        if len(recent) >= budget.per_week:
            frees = max(frees, recent[len(recent) - budget.per_week] + 7 * 86400)
        return frees

    async def complete(self, job: MailJob) -> bool:
        """Drop a finished job (sent, suppressed, or given up). False if the lease was lost."""
        return await self._finish_job(job, "done", 0.0, uncommit=False, error="")

    async def fail(
        self, job: MailJob, *, retry_at: float | None, error: str, uncommit: bool
    ) -> bool:
        """A send failed. ``uncommit`` only when the message certainly did not go out: the step
        may then be sent again. ``retry_at`` None gives up; else the job is due again then."""
        if retry_at is None:
            return await self._finish_job(job, "done", 0.0, uncommit=uncommit, error=error)
        return await self._finish_job(job, "retry", retry_at, uncommit=uncommit, error=error)

    async def defer(self, job: MailJob, *, until: float) -> bool:
        """Put an uncommitted job back until ``until`` without counting an attempt."""
        return await self._finish_job(job, "defer", until, uncommit=True, error="")

    # --- helpers -----------------------------------------------------------------------------
    async def _finish_job(
        self, job: MailJob, action: str, due: float, *, uncommit: bool, error: str
    ) -> bool:
        k = self._keys
        done = await self._finish(
            keys=[
                k.mail_job(job.id),
                k.mail_leases(),
                k.mail_due(),
                k.mail_visitor_jobs(job.site, job.visitor),
                k.mail_sent(job.site, job.visitor),
                k.mail_daily(job.site, job.visitor),
                k.mail_budget(job.site, job.visitor),
            ],
            args=[
                *(job.id, job.token, action, repr(due), "1" if uncommit else "0"),
                *(job.step_field, error[:300]),
            ],
        )
        return bool(done)

    async def _cancel_jobs(self, site: str, visitor: str, mode: str, arg: str) -> int:
        k = self._keys
        for _ in range(_ATTEMPTS):
            pending = await self._visitor_jobs(site, visitor)
            if not pending:
                return 0
            cancelled = int(
                await self._cancel(
                    keys=[
                        k.mail_due(),
                        k.mail_leases(),
                        k.mail_visitor_jobs(site, visitor),
                        *(k.mail_job(job_id) for job_id in pending),
                    ],
                    args=[mode, arg, *pending],
                )
            )
            if cancelled >= 0:
                return cancelled
        raise WatchError("the visitor's email jobs kept changing while cancelling")

    async def _visitor_jobs(self, site: str, visitor: str) -> list[str]:
        """The ids in the visitor's job set, read before a script that gets their keys (and
        checks that the set did not change meanwhile)."""
        members = await self._redis.smembers(self._keys.mail_visitor_jobs(site, visitor))
        return sorted(reply_text(m) for m in members)
