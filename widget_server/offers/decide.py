"""The decision engine. Pure: (visitor state, campaigns, signal, now) -> Decision with a reason for
every campaign that was not chosen. No I/O, no clock, no randomness: the same inputs always give
the same decision. Caps checked here are a fast pre-check; the claim script re-checks them
atomically in Redis (see :mod:`widget_server.offers.engine`).
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from ..store.frequency import Frequency
from ..visitors.session_view import SessionView
from .assign import HOLDOUT, assign
from .campaigns import Campaign, Condition


class Reason(StrEnum):
    NOT_ACTIVE = "not_active"
    NOT_SCHEDULED = "not_scheduled"
    WRONG_TRIGGER = "wrong_trigger"
    THRESHOLD = "trigger_threshold"
    TARGETING = "targeting_miss"
    PAYMENT_STEP = "payment_step"
    AFTER_PURCHASE = "after_purchase"
    CAPPED_SESSION = "capped_session"
    CAPPED_DAY = "capped_day"
    CAPPED_WEEK = "capped_week"
    COOLDOWN = "dismiss_cooldown"
    MIN_CART = "below_min_cart_value"
    HOLDOUT = "holdout"
    EXPERIMENT_HOLDOUT = "experiment_holdout"
    LOWER_PRIORITY = "lower_priority"
    POOL_EXHAUSTED = "pool_exhausted"
    GLOBAL_CAP = "global_cap"
    CODE_COLLISION = "code_collision"
    SITE_SESSION = "site_session"
    SITE_DAY = "site_day"
    SITE_DISCOUNT = "site_discount"
    SITE_LIVE_SESSION = "site_live_session"
    SITE_LIVE_DAY = "site_live_day"


@dataclass(frozen=True, slots=True)
class ExitIntentSignal:
    kind: str


@dataclass(frozen=True, slots=True)
class HesitationSignal:
    seconds: float
    page_type: str


@dataclass(frozen=True, slots=True)
class LiveSignal:
    campaign_id: str


@dataclass(frozen=True, slots=True)
class ArmProbe:
    """ "What would exit intent show now?" Time thresholds are reported, not enforced."""


Signal = ExitIntentSignal | HesitationSignal | LiveSignal | ArmProbe


@dataclass(frozen=True, slots=True)
class VisitorState:
    visitor: str
    session_id: str = ""
    page_type: str = "other"
    page_url: str = ""
    device: str = ""
    lang: str = ""  # the page's language, for the offer's texts
    started: float = 0.0
    page_started: float = 0.0
    pages: int = 0
    cart_value: float = 0.0
    cart_items: int = 0
    cart_categories: frozenset[str] = frozenset()
    cart_brands: frozenset[str] = frozenset()
    cart_products: frozenset[str] = frozenset()
    left_checkout: bool = False
    visits: int = 1
    identified: bool = False
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    referrer: str = ""
    landing_url: str = ""
    viewed_count: int = 0
    viewed_ids: tuple[str, ...] = ()
    country: str = ""
    last_purchase: float | None = None
    shown_in_session: dict[str, int] = field(default_factory=dict)
    shown_at: dict[str, tuple[float, ...]] = field(default_factory=dict)
    dismissals: dict[str, tuple[int, float]] = field(default_factory=dict)
    # Offers seen across every campaign, for the site's frequency policy (lua/session_event.lua).
    site_overlays: int = 0  # in this session
    site_live: int = 0  # live offers in this session
    site_day: str = ""  # the day (site's time zone) the two counts below are for
    site_day_overlays: int = 0
    site_day_live: int = 0
    site_discount_at: float = 0.0  # when the visitor last saw a discount

    @classmethod
    def from_view(cls, visitor: str, view: SessionView, country: str = "") -> VisitorState:
        s, p = view.session, view.profile
        cart = view.cart
        shown_in_session = {k[6:]: int(v) for k, v in s.items() if k.startswith("shown:")}
        shown_at: dict[str, tuple[float, ...]] = {}
        dismissals: dict[str, tuple[int, float]] = {}
        for key, value in p.items():
            if key.startswith("shown:"):
                shown_at[key[6:]] = tuple(float(t) for t in json.loads(value or "[]"))
            elif key.startswith("dismiss:"):
                count, _, last = value.partition(":")
                dismissals[key[8:]] = (int(count or 0), float(last or 0))
        return cls(
            visitor=visitor,
            session_id=view.session_id,
            page_type=s.get("page_type", "other"),
            page_url=s.get("page_url", ""),
            device=s.get("device", ""),
            lang=s.get("lang", ""),
            started=_f(s.get("started")),
            page_started=_f(s.get("page_started")),
            pages=view.pages,
            cart_value=view.cart_value,
            cart_items=view.cart_items,
            cart_categories=frozenset(line.category for line in cart if line.category),
            cart_brands=frozenset(line.brand for line in cart if line.brand),
            cart_products=frozenset(line.id for line in cart),
            left_checkout=s.get("left_checkout") == "1",
            visits=view.visits or 1,
            identified=s.get("identified") == "1" or bool(p.get("email")),
            utm_source=s.get("utm_source", ""),
            utm_medium=s.get("utm_medium", ""),
            utm_campaign=s.get("utm_campaign", ""),
            referrer=s.get("referrer", ""),
            landing_url=s.get("landing", ""),
            viewed_count=int(_f(s.get("products_viewed"))),
            viewed_ids=view.viewed_ids,
            country=country,
            last_purchase=_f(p.get("last_purchase")) or None,
            shown_in_session=shown_in_session,
            shown_at=shown_at,
            dismissals=dismissals,
            site_overlays=int(_f(s.get("fq_overlays"))),
            site_live=int(_f(s.get("fq_live"))),
            site_day=p.get("fq_day", ""),
            site_day_overlays=int(_f(p.get("fq_day_overlays"))),
            site_day_live=int(_f(p.get("fq_day_live"))),
            site_discount_at=_f(p.get("fq_discount_at")),
        )


def _f(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """What the decision reads of a site: its frequency policy and its time zone."""

    frequency: Frequency = field(default_factory=Frequency)
    timezone: str = "UTC"


UNLIMITED = SitePolicy(Frequency(per_session=0, per_day=0, discount_days=0,
                                 live_per_session=0, live_per_day=0))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rejection:
    campaign_id: str
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    campaign: Campaign
    variant: str  # a variant key, or HOLDOUT
    not_before: float = 0.0  # for ArmProbe: when the time thresholds will be met

    @property
    def offer_id(self) -> str:
        return f"{self.campaign.id}.{self.variant}"


@dataclass(frozen=True, slots=True)
class Decision:
    chosen: Candidate | None
    eligible: tuple[Candidate, ...]  # best first; the claim falls back along this list
    rejections: tuple[Rejection, ...]

    def trace(self) -> dict[str, object]:
        return {
            "chosen": self.chosen.offer_id if self.chosen else None,
            "eligible": [c.offer_id for c in self.eligible],
            "rejected": [
                {"campaign": r.campaign_id, "reason": str(r.reason), "detail": r.detail}
                for r in self.rejections
            ],
        }


def decide(
    state: VisitorState,
    campaigns: Iterable[Campaign],
    signal: Signal,
    now: float,
    site: SitePolicy = UNLIMITED,
    prejudged: Sequence[Rejection | None] | None = None,
) -> Decision:
    """Choose the offer for ``signal``: priority first, then expected value, then id.

    The site's frequency policy is checked here against the offers the visitor has seen; the
    reservation script checks it again atomically, counting offers sent and not yet seen.
    ``prejudged``: :func:`prejudge` of the same campaigns, signal and time, when many visitors
    are decided for at once.
    """
    campaigns = tuple(campaigns)
    if prejudged is None:
        prejudged = prejudge(campaigns, signal, now)
    eligible: list[Candidate] = []
    rejections: list[Rejection] = []
    day = period_keys(now, site.timezone)[0]
    for campaign, refused in zip(campaigns, prejudged, strict=True):
        outcome = refused or _evaluate_visitor(state, campaign, signal, now)
        if not isinstance(outcome, Rejection):
            outcome = site_refusal(state, outcome, signal, site.frequency, day, now) or outcome
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            eligible.append(outcome)
    eligible.sort(key=lambda c: (-c.campaign.priority, -c.campaign.expected_value, c.campaign.id))
    chosen = eligible[0] if eligible else None
    for other in eligible[1:]:
        rejections.append(Rejection(other.campaign.id, Reason.LOWER_PRIORITY))
    if chosen is not None and chosen.variant == HOLDOUT:
        rejections.append(Rejection(chosen.campaign.id, Reason.HOLDOUT, "control group"))
    elif chosen is not None and isinstance(signal, LiveSignal):
        experiment = holding_out(state.visitor, campaigns, chosen.campaign.id)
        if experiment is not None:
            rejections.append(Rejection(chosen.campaign.id, Reason.EXPERIMENT_HOLDOUT, experiment))
            return Decision(None, (), tuple(rejections))
    return Decision(chosen, tuple(eligible), tuple(rejections))


def offers_discount(campaign: Campaign) -> bool:
    """Whether the site's discount rule applies to a campaign: when any of its variants has a
    discount. Per campaign, not per variant, so that it refuses every arm alike (the holdout and
    a variant without a discount too) and the arms of an experiment stay comparable."""
    return any(v.discount is not None for v in campaign.variants)


def site_refusal(
    state: VisitorState,
    candidate: Candidate,
    signal: Signal,
    policy: Frequency,
    day: str,
    now: float,
) -> Rejection | None:
    """The site's frequency policy against what the visitor has seen (every arm alike)."""
    cid = candidate.campaign.id
    same_day = state.site_day == day
    if isinstance(signal, LiveSignal):
        if policy.live_per_session and state.site_live >= policy.live_per_session:
            return Rejection(cid, Reason.SITE_LIVE_SESSION, str(policy.live_per_session))
        if policy.live_per_day and same_day and state.site_day_live >= policy.live_per_day:
            return Rejection(cid, Reason.SITE_LIVE_DAY, str(policy.live_per_day))
        return None
    if policy.per_session and state.site_overlays >= policy.per_session:
        return Rejection(cid, Reason.SITE_SESSION, str(policy.per_session))
    if policy.per_day and same_day and state.site_day_overlays >= policy.per_day:
        return Rejection(cid, Reason.SITE_DAY, str(policy.per_day))
    window = policy.discount_days * 86_400
    if window and offers_discount(candidate.campaign) and now - state.site_discount_at < window:
        return Rejection(cid, Reason.SITE_DISCOUNT, str(policy.discount_days))
    return None


def holding_out(visitor: str, campaigns: Iterable[Campaign], live: str) -> str | None:
    """The first active campaign with a holdout that holds ``visitor`` out, other than the live
    offer ``live``: a live offer reaches no holdout visitor of a running experiment, so the
    experiment's control group stays untouched (its report compares like with like)."""
    for campaign in campaigns:
        if campaign.id == live or campaign.status != "active" or campaign.holdout <= 0:
            continue
        if assign(campaign, visitor) == HOLDOUT:
            return campaign.id
    return None


def evaluate(
    state: VisitorState, campaign: Campaign, signal: Signal, now: float
) -> Candidate | Rejection:
    """Whether one campaign may fire for ``signal`` now, and in which variant."""
    return _refusal_for_all(campaign, signal, now) or _evaluate_visitor(
        state, campaign, signal, now
    )


def prejudge(
    campaigns: Sequence[Campaign], signal: Signal, now: float
) -> tuple[Rejection | None, ...]:
    """What each campaign answers every visitor before looking at them (not active, out of
    schedule, another trigger): worked out once for a live offer to many visitors, where
    usually one campaign of many is left to evaluate per visitor."""
    return tuple(_refusal_for_all(campaign, signal, now) for campaign in campaigns)


def _refusal_for_all(campaign: Campaign, signal: Signal, now: float) -> Rejection | None:
    cid = campaign.id
    if campaign.status != "active":
        return Rejection(cid, Reason.NOT_ACTIVE, campaign.status)
    if not in_schedule(campaign, now):
        return Rejection(cid, Reason.NOT_SCHEDULED)
    trigger_miss = _trigger_miss(campaign, signal)
    if trigger_miss:
        return Rejection(cid, Reason.WRONG_TRIGGER, trigger_miss)
    return None


def _evaluate_visitor(
    state: VisitorState, campaign: Campaign, signal: Signal, now: float
) -> Candidate | Rejection:
    """:func:`evaluate` once the campaign is active, in schedule and triggered by ``signal``."""
    cid = campaign.id
    not_before, threshold_miss = _thresholds(state, campaign, now, signal)
    if threshold_miss:
        return Rejection(cid, Reason.THRESHOLD, threshold_miss)
    missed = targeting_miss(state, campaign)
    if missed:
        return Rejection(cid, Reason.TARGETING, missed)
    cap = _cap_rejection(state, campaign, now)
    if cap is not None:
        return cap
    minimum = campaign.min_cart_value
    if state.cart_value < minimum:
        return Rejection(cid, Reason.MIN_CART, f"cart {state.cart_value:g} < {minimum:g}")
    return Candidate(campaign, assign(campaign, state.visitor), not_before)


def in_schedule(campaign: Campaign, now: float) -> bool:
    sched = campaign.schedule
    unrestricted = sched.start is None and sched.end is None and sched.hours is None
    if unrestricted and len(sched.weekdays) == 7:
        return True
    local = datetime.fromtimestamp(now, ZoneInfo(sched.timezone))
    if sched.start and local < _aware(sched.start, local):
        return False
    if sched.end and local >= _aware(sched.end, local):
        return False
    if local.weekday() not in sched.weekdays:
        return False
    if sched.hours is not None:
        start, end = sched.hours
        hour = local.hour
        inside = start <= hour < end if start < end else (hour >= start or hour < end)
        if not inside:
            return False
    return True


def _aware(moment: datetime, like: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=like.tzinfo)


def _trigger_miss(campaign: Campaign, signal: Signal) -> str:
    trigger = campaign.trigger
    if isinstance(signal, LiveSignal):
        return "" if trigger.live and signal.campaign_id == campaign.id else "not this live offer"
    if isinstance(signal, ExitIntentSignal):
        return "" if signal.kind in trigger.exit_intent else f"exit intent {signal.kind} not used"
    if isinstance(signal, HesitationSignal):
        needed = trigger.hesitation.get(signal.page_type)  # type: ignore[call-overload]
        if needed is None:
            return f"no hesitation trigger on {signal.page_type} pages"
        return "" if signal.seconds >= needed else f"hesitated {signal.seconds:g}s < {needed}s"
    return "" if trigger.exit_intent else "not an exit-intent campaign"


def _thresholds(
    state: VisitorState, campaign: Campaign, now: float, signal: Signal
) -> tuple[float, str]:
    t = campaign.trigger
    if state.pages < t.min_pages:
        return 0.0, f"pages {state.pages} < {t.min_pages}"
    if state.cart_value < t.min_cart_value:
        return 0.0, f"cart value {state.cart_value:g} < {t.min_cart_value:g}"
    if t.max_cart_value is not None and state.cart_value > t.max_cart_value:
        return 0.0, f"cart value {state.cart_value:g} > {t.max_cart_value:g}"
    if state.cart_items < t.min_cart_items:
        return 0.0, f"cart items {state.cart_items} < {t.min_cart_items}"
    if t.left_checkout and not state.left_checkout:
        return 0.0, "has not left checkout"
    if t.returning_visitor is not None and (state.visits > 1) != t.returning_visitor:
        return 0.0, "returning visitor" if state.visits > 1 else "new visitor"
    ready = max(state.started + t.min_time_on_site_s, state.page_started + t.min_time_on_page_s)
    if now < ready and not isinstance(signal, ArmProbe):
        return 0.0, f"{ready - now:.0f}s before the time on site/page is reached"
    return (ready if ready > now else 0.0), ""


_TEXT_FIELDS = {
    "url": "page_url", "page_type": "page_type", "device": "device", "utm_source": "utm_source",
    "utm_medium": "utm_medium", "utm_campaign": "utm_campaign", "referrer": "referrer",
    "landing_url": "landing_url", "country": "country",
}  # fmt: skip


def targeting_miss(state: VisitorState, campaign: Campaign) -> str:
    """Empty when the visitor matches the targeting, else the first group's failing condition.
    Each condition runs as its compiled predicate (:func:`compiled`), which holds exactly when
    :func:`condition_holds` does."""
    groups = campaign.targeting.any
    if not groups:
        return ""
    first_miss = ""
    for group in groups:
        miss = next((c for c in group.all if not compiled(c)(state)), None)
        if miss is None:
            return ""
        first_miss = first_miss or f"{miss.field} {miss.op} {miss.value!r}"
    return first_miss


Predicate = Callable[[VisitorState], bool]
# Compiled predicates by condition, with the condition itself so that a recycled id never finds
# another condition's predicate. Campaigns live as long as their site's cache entry; the table
# starts again when it grows past its bound.
_COMPILED: dict[int, tuple[Condition, Predicate]] = {}
_COMPILED_MAX = 8192
_SETS = {"cart_category": "cart_categories", "cart_brand": "cart_brands",
         "cart_product": "cart_products"}  # fmt: skip


def compiled(condition: Condition) -> Predicate:
    """``condition`` as a plain predicate on the visitor's state, built once per condition:
    the field looked up, the value lowered, the wildcard turned into a regular expression ahead
    of time. Holds exactly when :func:`condition_holds` does (a property test checks it)."""
    known = _COMPILED.get(id(condition))
    if known is not None and known[0] is condition:
        return known[1]
    predicate = _compile(condition)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[id(condition)] = (condition, predicate)
    return predicate


def _compile(condition: Condition) -> Predicate:
    name, op, want = condition.field, condition.op, condition.value
    if name == "viewed_count":
        number = float(want) if isinstance(want, int | float) else math.nan
        if op == "gte":
            return lambda s: s.viewed_count >= number
        if op == "lte":
            return lambda s: s.viewed_count <= number
        return lambda s: False
    if op in ("gte", "lte"):
        return lambda s: False
    values = _lowered(name)
    positive = op in ("is", "contains", "matches", "in")
    hit: Callable[[list[str]], bool]
    if isinstance(want, list):
        wanted = frozenset(w.lower() for w in want)
        hit = lambda vs: any(v in wanted for v in vs)  # noqa: E731
    else:
        target = str(want).lower()
        if op in ("is", "is_not"):
            hit = lambda vs: target in vs  # noqa: E731
        elif op in ("contains", "not_contains"):
            hit = lambda vs: any(target in v for v in vs)  # noqa: E731
        else:
            match = re.compile(fnmatch.translate(target)).match
            hit = lambda vs: any(match(v) is not None for v in vs)  # noqa: E731
    if positive:
        return lambda s: hit(values(s))
    return lambda s: not hit(values(s))


def _lowered(name: str) -> Callable[[VisitorState], list[str]]:
    """The state's values for a text field, lowered."""
    if name in _TEXT_FIELDS:
        attribute = _TEXT_FIELDS[name]
        return lambda s: [str(getattr(s, attribute)).lower()]
    if name == "visitor":
        return lambda s: ["returning" if s.visits > 1 else "new"]
    if name == "identified":
        return lambda s: ["yes" if s.identified else "no"]
    attribute = _SETS[name]
    return lambda s: [v.lower() for v in getattr(s, attribute)]


def _values(state: VisitorState, name: str) -> Sequence[str] | float:
    if name in _TEXT_FIELDS:
        return [str(getattr(state, _TEXT_FIELDS[name]))]
    if name == "visitor":
        return ["returning" if state.visits > 1 else "new"]
    if name == "identified":
        return ["yes" if state.identified else "no"]
    if name == "cart_category":
        return sorted(state.cart_categories)
    if name == "cart_brand":
        return sorted(state.cart_brands)
    if name == "cart_product":
        return sorted(state.cart_products)
    return float(state.viewed_count)  # viewed_count


def condition_holds(state: VisitorState, condition: Condition) -> bool:
    values = _values(state, condition.field)
    op, want = condition.op, condition.value
    if isinstance(values, float):
        number = float(want) if isinstance(want, int | float) else math.nan
        return values >= number if op == "gte" else values <= number if op == "lte" else False
    lowered = [v.lower() for v in values]
    if op in ("gte", "lte"):
        return False
    if isinstance(want, list):
        wanted = {w.lower() for w in want}
        hit = any(v in wanted for v in lowered)
        return hit if op == "in" else not hit
    target = str(want).lower()
    positive = op in ("is", "contains", "matches")
    if op in ("is", "is_not"):
        hit = target in lowered
    elif op in ("contains", "not_contains"):
        hit = any(target in v for v in lowered)
    else:
        hit = any(fnmatch.fnmatchcase(v, target) for v in lowered)
    return hit if positive else not hit


def _cap_rejection(state: VisitorState, campaign: Campaign, now: float) -> Rejection | None:
    caps, cid = campaign.caps, campaign.id
    if caps.never_on_payment and state.page_type == "payment":
        return Rejection(cid, Reason.PAYMENT_STEP)
    quiet = caps.quiet_days_after_purchase * 86_400
    if state.last_purchase is not None and quiet and now - state.last_purchase < quiet:
        return Rejection(
            cid, Reason.AFTER_PURCHASE, f"bought {(now - state.last_purchase):.0f}s ago"
        )
    if caps.per_session and state.shown_in_session.get(cid, 0) >= caps.per_session:
        return Rejection(cid, Reason.CAPPED_SESSION, f"{caps.per_session} per session")
    shown = state.shown_at.get(cid, ())
    tz = campaign.schedule.timezone
    day, week = period_keys(now, tz) if shown else ("", "")
    if caps.per_visitor_day and shown:
        today = sum(1 for t in shown if period_keys(t, tz)[0] == day)
        if today >= caps.per_visitor_day:
            return Rejection(cid, Reason.CAPPED_DAY, f"{caps.per_visitor_day} per day")
    if caps.per_visitor_week and shown:
        this_week = sum(1 for t in shown if period_keys(t, tz)[1] == week)
        if this_week >= caps.per_visitor_week:
            return Rejection(cid, Reason.CAPPED_WEEK, f"{caps.per_visitor_week} per week")
    count, last = state.dismissals.get(cid, (0, 0.0))
    if count and caps.dismiss_cooldown_minutes:
        cooldown = min(caps.dismiss_cooldown_minutes * 60 * 2 ** (count - 1), 30 * 86_400)
        if now - last < cooldown:
            return Rejection(cid, Reason.COOLDOWN, f"dismissed {count}x, {cooldown:.0f}s cooldown")
    return None


@lru_cache(maxsize=4096)
def period_keys(moment: float, timezone: str) -> tuple[str, str]:
    """The (day, ISO week) a moment falls in, in the campaign's time zone: cap counter keys."""
    local = datetime.fromtimestamp(moment, ZoneInfo(timezone))
    year, week, _ = local.isocalendar()
    return local.strftime("%Y%m%d"), f"{year}w{week:02d}"
