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
from typing import Generic, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from ..store.frequency import Frequency
from ..visitors.session_view import SessionView
from .assign import HOLDOUT, assign, in_site_holdout
from .campaigns import Campaign, Condition

K = TypeVar("K")
V = TypeVar("V")


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
    SITE_HOLDOUT = "site_holdout"


@dataclass(frozen=True, slots=True)
class ExitIntentSignal:
    kind: str


@dataclass(frozen=True, slots=True)
class HesitationSignal:
    seconds: float
    page_type: str


@dataclass(frozen=True, slots=True)
class ScrollSignal:
    """The visitor has scrolled ``percent`` of the page."""

    percent: int


@dataclass(frozen=True, slots=True)
class TimeOnPageSignal:
    """The page has been in view ``seconds``."""

    seconds: int


@dataclass(frozen=True, slots=True)
class LiveSignal:
    campaign_id: str


@dataclass(frozen=True, slots=True)
class ArmProbe:
    """ "What would exit intent show now?" Time thresholds are reported, not enforced."""


Signal = (
    ExitIntentSignal | HesitationSignal | ScrollSignal | TimeOnPageSignal | LiveSignal | ArmProbe
)


# What was known of a visitor before an offer, kept at exposure (VisitorState.covariates).
COVARIATES = ("cart_value", "cart_items", "pages", "orders")


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
    purchases: int = 0  # the visitor's earlier orders
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

    def covariates(self) -> str:
        """What was known of the visitor before an offer, in :data:`COVARIATES` order, as the
        claim script keeps it at exposure (the report's regression adjustment)."""
        values = (float(self.cart_value), float(self.cart_items), float(self.pages),
                  float(self.purchases))  # fmt: skip
        return ",".join(repr(v) if math.isfinite(v) else "0.0" for v in values)

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
            purchases=view.purchases,
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
    """What the decision reads of a site: its frequency policy, its time zone and its
    site-wide holdout (the share of visitors who never see an offer, and its version)."""

    frequency: Frequency = field(default_factory=Frequency)
    timezone: str = "UTC"
    key: str = ""
    holdout: float = 0.0
    holdout_version: int = 1


UNLIMITED = SitePolicy(Frequency(per_session=0, per_day=0, discount_days=0,
                                 live_per_session=0, live_per_day=0))  # fmt: skip


class Rejection(NamedTuple):
    """Why a campaign was not chosen (a tuple: decisions make many, and cheaply)."""

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
    deck = deck_of(campaigns)
    if site.holdout > 0 and in_site_holdout(site.key, site.holdout_version, site.holdout,
                                            state.visitor):  # fmt: skip
        return Decision(None, (), tuple(
            Rejection(c.id, Reason.SITE_HOLDOUT, "site-wide holdout") for c in deck.campaigns
        ))  # fmt: skip
    if prejudged is None:
        prejudged = deck.prejudge(signal, now)
    ranked: list[tuple[int, Candidate, _Plan]] = []
    rejections: list[Rejection] = []
    policy = site.frequency if site.frequency.limits else None
    live = isinstance(signal, LiveSignal)
    limits: dict[bool, tuple[Reason, str] | None] = {}  # by "offers a discount"
    for plan, refused, rank in zip(deck.plans, prejudged, deck.ranks, strict=True):
        if refused is not None:
            rejections.append(refused)
            continue
        outcome = plan.evaluate(state, signal, now)
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
            continue
        if policy is not None:
            discount = plan.discount
            if discount not in limits:
                limits[discount] = site_limit(state, live, discount, policy, site.timezone, now)
            limit = limits[discount]
            if limit is not None:
                rejections.append(Rejection(plan.campaign.id, *limit))
                continue
        ranked.append((rank, outcome, plan))
    ranked.sort()  # ranks are unique within a deck: candidates are never compared
    eligible = [candidate for _, candidate, _ in ranked]
    rejections.extend(plan.lower for _, _, plan in ranked[1:])
    chosen = eligible[0] if eligible else None
    if chosen is not None and chosen.variant == HOLDOUT:
        rejections.append(Rejection(chosen.campaign.id, Reason.HOLDOUT, "control group"))
    elif chosen is not None and live:
        experiment = holding_out(state.visitor, deck.campaigns, chosen.campaign.id)
        if experiment is not None:
            rejections.append(Rejection(chosen.campaign.id, Reason.EXPERIMENT_HOLDOUT, experiment))
            return Decision(None, (), tuple(rejections))
    return Decision(chosen, tuple(eligible), tuple(rejections))


def offers_discount(campaign: Campaign) -> bool:
    """Whether the site's discount rule applies to a campaign: when any of its variants has a
    discount. Per campaign, not per variant, so that it refuses every arm alike (the holdout and
    a variant without a discount too) and the arms of an experiment stay comparable."""
    return any(v.discount is not None for v in campaign.variants)


def site_limit(
    state: VisitorState,
    live: bool,
    discount: bool,
    policy: Frequency,
    timezone: str,
    now: float,
) -> tuple[Reason, str] | None:
    """The site's frequency policy against what the visitor has seen, for a live offer or an
    overlay, from a campaign that offers a discount or not (every arm alike: it depends on
    nothing else). ``timezone``: the site's, where its days start."""
    if live:
        if policy.live_per_session and state.site_live >= policy.live_per_session:
            return Reason.SITE_LIVE_SESSION, str(policy.live_per_session)
        if (policy.live_per_day and state.site_day_live >= policy.live_per_day
                and state.site_day == period_keys(now, timezone)[0]):  # fmt: skip
            return Reason.SITE_LIVE_DAY, str(policy.live_per_day)
        return None
    if policy.per_session and state.site_overlays >= policy.per_session:
        return Reason.SITE_SESSION, str(policy.per_session)
    if (policy.per_day and state.site_day_overlays >= policy.per_day
            and state.site_day == period_keys(now, timezone)[0]):  # fmt: skip
        return Reason.SITE_DAY, str(policy.per_day)
    window = policy.discount_days * 86_400
    if window and discount and now - state.site_discount_at < window:
        return Reason.SITE_DISCOUNT, str(policy.discount_days)
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
    plan = plan_of(campaign)
    return plan.refusal_for_all(signal, now) or plan.evaluate(state, signal, now)


def prejudge(
    campaigns: Sequence[Campaign], signal: Signal, now: float
) -> tuple[Rejection | None, ...]:
    """What each campaign answers every visitor before looking at them (not active, out of
    schedule, another trigger): worked out once for a live offer to many visitors, where
    usually one campaign of many is left to evaluate per visitor."""
    return deck_of(campaigns).prejudge(signal, now)


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


class _Plan:
    """What the decision reads of one campaign, worked out once (campaigns are immutable; a
    change is a new object): what it answers every visitor for a signal (cached when its
    schedule does not depend on the time), its compiled targeting, which thresholds and caps
    it sets at all, one shared candidate per arm (recent visitors' arms are kept in
    :data:`_ARMS`). The checks themselves are the functions below, so a plan decides exactly
    as they do."""

    __slots__ = ("campaign", "candidates", "caps", "cid", "devices", "discount", "groups",
                 "lower", "min_cart", "on_page", "on_site", "refusals", "thresholds",
                 "timeless")  # fmt: skip

    def __init__(self, campaign: Campaign) -> None:
        self.campaign, self.cid = campaign, campaign.id
        sched, t, caps = campaign.schedule, campaign.trigger, campaign.caps
        self.timeless = campaign.status != "active" or (
            sched.start is None and sched.end is None and sched.hours is None
            and len(sched.weekdays) == 7
        )  # fmt: skip
        self.refusals: dict[Signal, Rejection | None] = {}
        # Whether any threshold other than time is set (the time ones are cheap to check).
        self.thresholds = bool(
            t.min_pages or t.min_cart_value or t.max_cart_value is not None
            or t.min_cart_items or t.left_checkout or t.returning_visitor is not None
        )  # fmt: skip
        self.on_site, self.on_page = t.min_time_on_site_s, t.min_time_on_page_s
        targeting = campaign.targeting
        self.devices = None if targeting.every_device else frozenset(targeting.devices)
        self.groups = tuple(
            tuple(compiled(c) for c in group.all) for group in campaign.targeting.any
        )
        self.caps = bool(
            caps.never_on_payment or caps.quiet_days_after_purchase or caps.per_session
            or caps.per_visitor_day or caps.per_visitor_week or caps.dismiss_cooldown_minutes
        )  # fmt: skip
        self.min_cart = campaign.min_cart_value
        self.discount = offers_discount(campaign)
        self.lower = Rejection(campaign.id, Reason.LOWER_PRIORITY)
        self.candidates = {key: Candidate(campaign, key)
                           for key in (HOLDOUT, *(v.key for v in campaign.variants))}  # fmt: skip

    def refusal_for_all(self, signal: Signal, now: float) -> Rejection | None:
        if not self.timeless:
            return _refusal_for_all(self.campaign, signal, now)
        try:
            return self.refusals[signal]
        except KeyError:
            refused = _refusal_for_all(self.campaign, signal, now)
            if len(self.refusals) < _SIGNALS_KEPT:  # hesitation signals carry their seconds
                self.refusals[signal] = refused
            return refused

    def evaluate(self, state: VisitorState, signal: Signal, now: float) -> Candidate | Rejection:
        """:func:`evaluate` once the campaign is active, in schedule and triggered by
        ``signal``."""
        campaign, cid = self.campaign, self.cid
        if self.thresholds:
            not_before, threshold_miss = _thresholds(state, campaign, now, signal)
            if threshold_miss:
                return Rejection(cid, Reason.THRESHOLD, threshold_miss)
        else:  # what _thresholds checks when only the times are set
            on_site, on_page = state.started + self.on_site, state.page_started + self.on_page
            ready = on_site if on_site > on_page else on_page
            not_before = 0.0
            if ready > now:
                if not isinstance(signal, ArmProbe):
                    return Rejection(cid, Reason.THRESHOLD, _too_soon(ready, now))
                not_before = ready
        if self.devices is not None and state.device not in self.devices:
            return Rejection(cid, Reason.TARGETING, targeting_miss(state, campaign))
        for predicates in self.groups:
            for predicate in predicates:
                if not predicate(state):
                    break
            else:
                break  # this group holds
        else:
            if self.groups:
                return Rejection(cid, Reason.TARGETING, targeting_miss(state, campaign))
        if self.caps and (
            state.last_purchase is not None or state.page_type == "payment"
            or cid in state.shown_in_session or cid in state.shown_at or cid in state.dismissals
        ):  # fmt: skip
            cap = _cap_rejection(state, campaign, now)
            if cap is not None:
                return cap
        if state.cart_value < self.min_cart:
            detail = f"cart {state.cart_value:g} < {self.min_cart:g}"
            return Rejection(cid, Reason.MIN_CART, detail)
        key = (self, state.visitor)
        arm = _ARMS.get(key)
        if arm is None:
            if len(_ARMS) >= _ARMS_KEPT:
                _ARMS.clear()
            arm = _ARMS[key] = self.candidates[assign(campaign, state.visitor)]
        return arm if not not_before else Candidate(campaign, arm.variant, not_before)


_SIGNALS_KEPT = 64
# The arm (a shared candidate) of recent visitors, by plan and visitor; starts again when full.
_ARMS: dict[tuple[_Plan, str], Candidate] = {}
_ARMS_KEPT = 65_536


class _Deck:
    """The plans of a site's campaigns, in order, and what each answers every visitor for a
    signal, kept when no schedule depends on the time."""

    __slots__ = ("campaigns", "plans", "prejudged", "ranks", "timeless")

    def __init__(self, campaigns: tuple[Campaign, ...]) -> None:
        self.campaigns = campaigns
        self.plans = tuple(plan_of(campaign) for campaign in campaigns)
        # Each campaign's place in the order of choice: priority, then expected value, then id.
        order = sorted(
            range(len(campaigns)),
            key=lambda i: (-campaigns[i].priority, -campaigns[i].expected_value, campaigns[i].id),
        )
        self.ranks = tuple(sorted(range(len(campaigns)), key=order.__getitem__))
        self.timeless = all(plan.timeless for plan in self.plans)
        self.prejudged: dict[Signal, tuple[Rejection | None, ...]] = {}

    def prejudge(self, signal: Signal, now: float) -> tuple[Rejection | None, ...]:
        known = self.prejudged.get(signal) if self.timeless else None
        if known is None:
            known = tuple(plan.refusal_for_all(signal, now) for plan in self.plans)
            if self.timeless and len(self.prejudged) < _SIGNALS_KEPT:
                self.prejudged[signal] = known
        return known


class _ByIdentity(Generic[K, V]):
    """What is worked out once per object (immutable ones: campaigns, their tuples, conditions),
    found by the object's identity. The object is kept beside its value, so a recycled id never
    finds another object's; the table starts again when it grows past ``limit``."""

    __slots__ = ("_limit", "_make", "_table")

    def __init__(self, make: Callable[[K], V], limit: int) -> None:
        self._make, self._limit = make, limit
        self._table: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        known = self._table.get(id(key))
        if known is not None and known[0] is key:
            return known[1]
        if len(self._table) >= self._limit:
            self._table.clear()
        value = self._make(key)
        self._table[id(key)] = (key, value)
        return value


plan_of: _ByIdentity[Campaign, _Plan] = _ByIdentity(_Plan, 4096)
_DECKS: _ByIdentity[tuple[Campaign, ...], _Deck] = _ByIdentity(_Deck, 1024)


def deck_of(campaigns: Iterable[Campaign]) -> _Deck:
    """The deck of a tuple of campaigns (the campaign store's cached tuple is the same object
    until the site's campaigns change); a new one for anything else."""
    if isinstance(campaigns, tuple):
        return _DECKS(campaigns)
    return _Deck(tuple(campaigns))


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
    if isinstance(signal, ScrollSignal):
        depth = trigger.scroll_depth
        if depth is None:
            return "no scroll-depth trigger"
        return "" if signal.percent >= depth else f"scrolled {signal.percent}% < {depth}%"
    if isinstance(signal, TimeOnPageSignal):
        wanted = trigger.time_on_page
        if wanted is None:
            return "no time-on-page trigger"
        return "" if signal.seconds >= wanted else f"on the page {signal.seconds}s < {wanted}s"
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
        return 0.0, _too_soon(ready, now)
    return (ready if ready > now else 0.0), ""


def _too_soon(ready: float, now: float) -> str:
    return f"{ready - now:.0f}s before the time on site/page is reached"


_TEXT_FIELDS = {
    "url": "page_url", "page_type": "page_type", "device": "device", "utm_source": "utm_source",
    "utm_medium": "utm_medium", "utm_campaign": "utm_campaign", "referrer": "referrer",
    "landing_url": "landing_url", "country": "country",
}  # fmt: skip


def targeting_miss(state: VisitorState, campaign: Campaign) -> str:
    """Empty when the visitor matches the targeting, else why not: a device the campaign does
    not show on, or the first group's failing condition.
    Each condition runs as its compiled predicate (:func:`compiled`), which holds exactly when
    :func:`condition_holds` does."""
    targeting = campaign.targeting
    if not targeting.every_device and state.device not in targeting.devices:
        return f"device {state.device or 'unknown'} not targeted"
    groups = targeting.any
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
_SETS = {"cart_category": "cart_categories", "cart_brand": "cart_brands",
         "cart_product": "cart_products"}  # fmt: skip


def compiled(condition: Condition) -> Predicate:
    """``condition`` as a plain predicate on the visitor's state, built once per condition:
    the field looked up, the value lowered, the wildcard turned into a regular expression ahead
    of time. Holds exactly when :func:`condition_holds` does (a property test checks it)."""
    return _COMPILED(condition)


def _compile(condition: Condition) -> Predicate:
    """:func:`compiled`, built."""
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
    positive = op in ("is", "contains", "matches", "in")
    one: Callable[[str], bool]  # the test on one lowered value
    if isinstance(want, list):
        one = frozenset(w.lower() for w in want).__contains__
    else:
        target = str(want).lower()
        if op in ("is", "is_not"):
            one = target.__eq__
        elif op in ("contains", "not_contains"):
            one = lambda v: target in v  # noqa: E731
        else:
            match = re.compile(fnmatch.translate(target)).match
            one = lambda v: match(v) is not None  # noqa: E731
    if name in _SETS:  # several values: a hit when any of them passes
        attribute = _SETS[name]
        if positive:
            return lambda s: any(one(v.lower()) for v in getattr(s, attribute))
        return lambda s: not any(one(v.lower()) for v in getattr(s, attribute))
    value = _lowered(name)
    if positive:
        return lambda s: one(value(s))
    return lambda s: not one(value(s))


# Compiled predicates by condition (campaigns live as long as their site's cache entry).
_COMPILED: _ByIdentity[Condition, Predicate] = _ByIdentity(_compile, 8192)


def _lowered(name: str) -> Callable[[VisitorState], str]:
    """The state's value for a single-valued text field, lowered."""
    if name == "visitor":
        return lambda s: "returning" if s.visits > 1 else "new"
    if name == "identified":
        return lambda s: "yes" if s.identified else "no"
    attribute = _TEXT_FIELDS[name]
    return lambda s: str(getattr(s, attribute)).lower()


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
    """The first of the campaign's caps that refuses the visitor. Each needs one of: a last
    purchase, the payment page, or the campaign among those the visitor saw or dismissed
    (:meth:`_Plan.evaluate` calls this only then)."""
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


def period_keys(moment: float, timezone: str) -> tuple[str, str]:
    """The (day, ISO week) a moment falls in, in the campaign's time zone: cap counter keys.

    Worked out once per quarter of an hour: every time zone's offset and changes of offset are
    whole quarters of an hour (since the 1970s), so its days and weeks start on such a
    boundary and every moment of one quarter has the same keys."""
    fraction, whole = math.modf(moment)
    whole += round(fraction * 1e6) // 1_000_000  # whole seconds as datetime rounds them
    return _period_keys(int(whole // 900), timezone)


@lru_cache(maxsize=4096)
def _period_keys(quarter: int, timezone: str) -> tuple[str, str]:
    local = datetime.fromtimestamp(quarter * 900, ZoneInfo(timezone))
    year, week, _ = local.isocalendar()
    return local.strftime("%Y%m%d"), f"{year}w{week:02d}"
