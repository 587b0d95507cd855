"""A traffic simulator: synthetic visitors that speak the real WebSocket protocol, with known true
behaviour per arm, so that a campaign's A/B report can be checked against the truth.

Every visitor connects like the widget does (``hello``, ``page_view``, some ``product_view``,
``cart_add``, an exit-intent ``signal``), takes the server's answer as it comes (an ``offer``, or
nothing for the holdout), reports the offer (``offer_shown``, sometimes ``offer_clicked`` or
``offer_dismissed``) and buys with its arm's true conversion rate. The simulator never picks arms:
a visitor's arm is the ``variant`` of the offer the server sent, or, for a visitor who got no offer,
what :func:`widget_server.experiments.assign` says (the holdout, when the server works).

All randomness is drawn up front, one plan per visitor, from ``random.Random(seed)``: the outcome
of a visitor depends on its plan and its arm only, never on timing or concurrency. The same plans
run without a server in :func:`simulate_offline`, which is how many seeds can be checked quickly.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Origin

from ..experiments.reports import campaign_split
from ..experiments.stats import ExperimentSettings, Report, VariantCounts, experiment_report
from ..offers.assign import HOLDOUT, assign, in_site_holdout
from ..offers.campaigns import Campaign

VISITOR_TIMEOUT_S = 15.0
# The arm of visitors in the site-wide holdout (no offer, no message); its truth's key too.
SITE_HOLDOUT = "site-holdout"
CLICK_SHARE = 0.3  # of visitors shown an offer; independent of whether they buy
DISMISS_SHARE = 0.4
EXIT_KINDS = ("top_edge", "back_button", "tab_switch", "scroll_up")
SHOP_URL = "https://shop.test"
_CATALOGUE_SIZE = 50


@dataclass(frozen=True, slots=True)
class ArmTruth:
    """The true behaviour of the visitors of one arm.

    Order values are log-normal with exactly this mean and standard deviation (always positive),
    rounded to cents.
    """

    conversion_rate: float
    order_value_mean: float
    order_value_sd: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.conversion_rate <= 1.0:
            raise ValueError(f"conversion rate {self.conversion_rate} is not between 0 and 1")
        if not self.order_value_mean > 0:
            raise ValueError(f"order value mean {self.order_value_mean} must be positive")
        if not self.order_value_sd >= 0:
            raise ValueError(f"order value sd {self.order_value_sd} must not be negative")

    def order_value(self, z: float) -> float:
        """The order value at standard normal quantile ``z``."""
        sigma2 = math.log1p((self.order_value_sd / self.order_value_mean) ** 2)
        mu = math.log(self.order_value_mean) - sigma2 / 2
        return max(0.01, round(math.exp(mu + math.sqrt(sigma2) * z), 2))


@dataclass(frozen=True, slots=True)
class VisitorPlan:
    """Everything random about one visitor, drawn before it connects."""

    index: int
    visitor: str
    prefix: str  # message ids are ``prefix.n``
    products: tuple[tuple[str, float], ...]  # viewed (id, price); the first goes in the cart
    exit_kind: str
    u_drop: float
    u_convert: float
    z_value: float
    u_interaction: float


@dataclass(frozen=True, slots=True)
class VisitorOutcome:
    """What happened to one visitor. ``arm`` is None when it could not be established."""

    visitor: str
    arm: str | None = None
    dropped: bool = False
    reached_signal: bool = False
    exposed: bool = False  # counted by the server as exposed in ``arm`` (as far as one can tell)
    offer_id: str | None = None
    clicked: bool = False
    dismissed: bool = False
    converted: bool = False
    order_id: str | None = None
    order_value: float = 0.0
    note: str = ""  # an anomaly worth a look (no offer though assigned a variant, ...)
    error: str = ""  # the visit failed: the server's error code, a timeout, a closed socket


@dataclass(frozen=True, slots=True)
class SimulationResult:
    site: str
    campaign: str
    seed: int
    elapsed_s: float
    outcomes: list[VisitorOutcome] = field(default_factory=list)

    @property
    def visitors(self) -> int:
        return len(self.outcomes)

    @property
    def reached_signal(self) -> int:
        return sum(1 for o in self.outcomes if o.reached_signal)

    @property
    def dropped(self) -> int:
        return sum(1 for o in self.outcomes if o.dropped)

    @property
    def errors(self) -> Counter[str]:
        return Counter(o.error for o in self.outcomes if o.error)

    @property
    def notes(self) -> Counter[str]:
        return Counter(o.note for o in self.outcomes if o.note)

    def counts(self) -> dict[str, VariantCounts]:
        """Per arm, what the server should have counted for this run: exposures, impressions,
        clicks, dismissals, conversions and revenue (redemptions are not tracked here)."""
        totals: dict[str, VariantCounts] = {}
        for o in self.outcomes:
            if not o.exposed or o.arm is None:
                continue
            value = o.order_value if o.converted else 0.0
            shown = o.arm != HOLDOUT
            row = VariantCounts(
                o.arm,
                exposures=1,
                conversions=int(o.converted),
                revenue=value,
                revenue_sq=value * value,
                impressions=int(shown),
                clicks=int(o.clicked),
                dismissals=int(o.dismissed),
            )
            totals[o.arm] = totals[o.arm].plus(row) if o.arm in totals else row
        return totals

    def report(self, campaign: Campaign, settings: ExperimentSettings | None = None) -> Report:
        """The experiment report computed from this run's own records, without the server."""
        control, split = campaign_split(campaign)
        return experiment_report(
            campaign.id, self.counts(), control, split, settings or ExperimentSettings()
        )


def campaign_arms(campaign: Campaign) -> list[str]:
    """The arm keys of a campaign: the holdout (if any) and every variant."""
    return ([HOLDOUT] if campaign.holdout > 0 else []) + [v.key for v in campaign.variants]


def check_inputs(
    campaign: Campaign, truth: Mapping[str, ArmTruth], drop_share: Mapping[str, float]
) -> None:
    """Raise ValueError unless ``truth`` covers every arm and ``drop_share`` names known arms
    with shares in [0, 1]."""
    arms = campaign_arms(campaign)
    missing = [arm for arm in arms if arm not in truth]
    if missing:
        raise ValueError(f"no true behaviour for arm(s) {', '.join(missing)}")
    for arm, share in drop_share.items():
        if arm not in arms:
            raise ValueError(f"drop share for {arm!r}, which is not an arm of {campaign.id}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"drop share {share} for {arm} is not between 0 and 1")


def plan_visitors(visitors: int, seed: int) -> list[VisitorPlan]:
    """The plans of ``visitors`` visitors; the same seed always gives the same plans."""
    rng = random.Random(seed)
    catalogue = [
        (f"sim-{i:03d}", round(rng.uniform(9.0, 120.0), 2)) for i in range(_CATALOGUE_SIZE)
    ]
    plans = []
    for index in range(visitors):
        plans.append(
            VisitorPlan(
                index=index,
                visitor=f"sim{rng.getrandbits(64):016x}",
                prefix=f"{rng.getrandbits(32):08x}",
                products=tuple(rng.sample(catalogue, rng.randint(1, 3))),
                exit_kind=rng.choice(EXIT_KINDS),
                u_drop=rng.random(),
                u_convert=rng.random(),
                z_value=rng.gauss(0.0, 1.0),
                u_interaction=rng.random(),
            )
        )
    return plans


def _drops(plan: VisitorPlan, campaign: Campaign, drop_share: Mapping[str, float]) -> bool:
    """A broken split: the visitor vanishes after hello, by the arm the server will assign."""
    share = drop_share.get(assign(campaign, plan.visitor), 0.0) if drop_share else 0.0
    return plan.u_drop < share


def _behaviour(
    plan: VisitorPlan, arm: str, offered: bool, truth: Mapping[str, ArmTruth]
) -> tuple[bool, bool, bool, float]:
    """(clicked, dismissed, converted, order value) of a visitor in ``arm``."""
    clicked = offered and plan.u_interaction < CLICK_SHARE
    dismissed = offered and CLICK_SHARE <= plan.u_interaction < CLICK_SHARE + DISMISS_SHARE
    arm_truth = truth[arm]
    converted = plan.u_convert < arm_truth.conversion_rate
    value = arm_truth.order_value(plan.z_value) if converted else 0.0
    return clicked, dismissed, converted, value


def _order_id(seed: int, plan: VisitorPlan) -> str:
    return f"sim-{seed}-{plan.index}-{plan.prefix}"


def simulate_offline(
    campaign: Campaign,
    *,
    visitors: int,
    truth: Mapping[str, ArmTruth],
    seed: int,
    drop_share: Mapping[str, float] | None = None,
    site: str = "",
) -> SimulationResult:
    """The outcomes :func:`simulate` records when the server assigns and exposes as designed
    (every visitor who reaches the signal is exposed in ``assign(campaign, visitor)``), without
    a server: the same plans, the same behaviour."""
    drop_share = drop_share or {}
    check_inputs(campaign, truth, drop_share)
    started = time.perf_counter()
    outcomes = []
    for plan in plan_visitors(visitors, seed):
        if _drops(plan, campaign, drop_share):
            outcomes.append(VisitorOutcome(plan.visitor, dropped=True))
            continue
        arm = assign(campaign, plan.visitor)
        offered = arm != HOLDOUT
        clicked, dismissed, converted, value = _behaviour(plan, arm, offered, truth)
        outcomes.append(
            VisitorOutcome(
                plan.visitor,
                arm=arm,
                reached_signal=True,
                exposed=True,
                offer_id=f"{campaign.id}.{arm}" if offered else None,
                clicked=clicked,
                dismissed=dismissed,
                converted=converted,
                order_id=_order_id(seed, plan) if converted else None,
                order_value=value,
            )
        )
    return SimulationResult(site, campaign.id, seed, time.perf_counter() - started, outcomes)


async def simulate(
    ws_url: str,
    site: str,
    campaign: Campaign,
    *,
    visitors: int,
    concurrency: int,
    truth: Mapping[str, ArmTruth],
    seed: int,
    origin: str | None,
    drop_share: Mapping[str, float] | None = None,
    visitor_timeout_s: float = VISITOR_TIMEOUT_S,
    site_holdout: tuple[float, int] = (0.0, 1),
) -> SimulationResult:
    """Send ``visitors`` synthetic visitors to the server at ``ws_url`` (the ``/v1/ws`` URL),
    at most ``concurrency`` at a time, each given at most ``visitor_timeout_s`` seconds.

    ``drop_share`` maps an arm to the share of its visitors who vanish right after ``hello``
    (a broken split, to provoke a sample ratio mismatch). ``site_holdout``: the site's
    site-wide holdout (share, version); its visitors see nothing and buy by
    ``truth[SITE_HOLDOUT]`` (default: the campaign's holdout's). Nothing but ``ws_url`` is
    contacted.
    """
    if visitors < 0 or concurrency < 1 or visitor_timeout_s <= 0:
        raise ValueError("visitors must be >= 0, concurrency >= 1 and the timeout positive")
    drop_share = drop_share or {}
    check_inputs(campaign, truth, drop_share)
    if site_holdout[0] > 0 and SITE_HOLDOUT not in truth:
        if HOLDOUT not in truth:
            raise ValueError(f"no true behaviour for the site-wide holdout ({SITE_HOLDOUT}=...)")
        truth = {**truth, SITE_HOLDOUT: truth[HOLDOUT]}
    plans = plan_visitors(visitors, seed)
    results: list[VisitorOutcome | None] = [None] * len(plans)
    pending = iter(plans)
    visit = _Visit(ws_url, site, campaign, truth, drop_share, origin, seed, visitor_timeout_s,
                   site_holdout)  # fmt: skip

    async def worker() -> None:
        for plan in pending:
            results[plan.index] = await visit.run(plan)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(plans))):
            group.create_task(worker())
    outcomes = [o for o in results if o is not None]
    return SimulationResult(site, campaign.id, seed, time.perf_counter() - started, outcomes)


class _Failed(Exception):
    """The visit cannot go on; the message says why."""


class _Conversation:
    """One visitor's socket: numbered messages, and a ping as a barrier (the server handles a
    connection's frames in order, so the pong comes after everything the earlier ones caused)."""

    def __init__(self, ws: ClientConnection, prefix: str) -> None:
        self.ws = ws
        self.prefix = prefix
        self.seq = 0
        self.unacked: list[str] = []
        self.offers: list[dict[str, Any]] = []
        self.welcomed = False

    async def send(self, message: dict[str, Any]) -> str:
        message_id = f"{self.prefix}.{self.seq}"
        self.seq += 1
        await self.ws.send(json.dumps({"id": message_id, **message}))
        if message["type"] != "ping":
            self.unacked.append(message_id)
        return message_id

    async def sync(self) -> None:
        """Wait until the server has handled everything sent so far; fail on any refusal."""
        barrier = await self.send({"type": "ping"})
        error = ""
        try:
            while True:
                message = json.loads(await self.ws.recv())
                kind = message.get("type")
                if kind == "pong" and message.get("id") == barrier:
                    break
                if kind == "ack":
                    acked = set(message.get("ids", ()))
                    self.unacked = [i for i in self.unacked if i not in acked]
                elif kind == "welcome":
                    self.welcomed = True
                elif kind == "offer":
                    self.offers.append(message.get("offer") or {})
                elif kind == "error":
                    error = error or str(message.get("code", "error"))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            raise _Failed(error or f"connection closed ({code})") from None
        if error or self.unacked:
            raise _Failed(error or f"not acknowledged: {', '.join(self.unacked)}")


@dataclass(frozen=True, slots=True)
class _Visit:
    ws_url: str
    site: str
    campaign: Campaign
    truth: Mapping[str, ArmTruth]
    drop_share: Mapping[str, float]
    origin: str | None
    seed: int
    timeout_s: float
    site_holdout: tuple[float, int] = (0.0, 1)

    async def run(self, plan: VisitorPlan) -> VisitorOutcome:
        """One visitor, start to end, bounded in time; never raises for a failed visit."""
        progress: dict[str, Any] = {}
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._run(plan, progress)
        except TimeoutError:
            error = "timeout"
        except _Failed as exc:
            error = str(exc)
        except (OSError, ValueError, WebSocketException) as exc:
            error = type(exc).__name__
        return VisitorOutcome(plan.visitor, error=error, **progress)

    async def _run(self, plan: VisitorPlan, progress: dict[str, Any]) -> VisitorOutcome:
        origin = Origin(self.origin) if self.origin else None
        async with connect(
            self.ws_url,
            origin=origin,
            compression=None,
            proxy=None,
            open_timeout=self.timeout_s,
            close_timeout=1,
            ping_interval=None,
            user_agent_header="widget-server-simulate",
        ) as ws:
            talk = _Conversation(ws, plan.prefix)
            home = {"url": f"{SHOP_URL}/", "title": "Home", "page_type": "home"}
            await talk.send(
                {"type": "hello", "v": 1, "site": self.site, "visitor": plan.visitor,
                 "page": home, "consent": {"analytics": True, "marketing": False},
                 "device": "desktop"}
            )  # fmt: skip
            await talk.sync()
            if not talk.welcomed:
                raise _Failed("no welcome")
            if _drops(plan, self.campaign, self.drop_share):
                return VisitorOutcome(plan.visitor, dropped=True)
            await self._browse(talk, plan)
            await talk.send({"type": "signal", "name": "exit_intent", "kind": plan.exit_kind})
            await talk.sync()
            progress["reached_signal"] = True
            outcome = self._arm_of(plan, talk.offers)
            progress.update(arm=outcome.arm, exposed=outcome.exposed, offer_id=outcome.offer_id)
            offer = talk.offers[-1] if outcome.offer_id is not None else None
            return await self._finish(talk, plan, outcome, offer)

    async def _browse(self, talk: _Conversation, plan: VisitorPlan) -> None:
        first_id, first_price = plan.products[0]
        await talk.send(
            {"type": "event", "name": "page_view", "url": f"{SHOP_URL}/p/{first_id}",
             "title": first_id, "page_type": "product"}
        )  # fmt: skip
        for product_id, price in plan.products:
            await talk.send(
                {"type": "event", "name": "product_view",
                 "product": {"id": product_id, "title": product_id, "price": price}}
            )  # fmt: skip
        await talk.send(
            {"type": "event", "name": "cart_add",
             "item": {"id": first_id, "quantity": 1, "price": first_price, "title": first_id}}
        )  # fmt: skip

    def _arm_of(self, plan: VisitorPlan, offers: list[dict[str, Any]]) -> VisitorOutcome:
        """The visitor's arm as the server decided it."""
        ours = [o for o in offers if o.get("campaign") == self.campaign.id]
        share, version = self.site_holdout
        if in_site_holdout(self.site, version, share, plan.visitor):
            if offers:
                return VisitorOutcome(plan.visitor, note="offer in the site-wide holdout")
            return VisitorOutcome(plan.visitor, arm=SITE_HOLDOUT)  # not the campaign's
        if ours:
            offer = ours[-1]
            arm = str(offer.get("variant", ""))
            if arm not in self.truth:
                return VisitorOutcome(plan.visitor, note=f"offer of unknown variant {arm!r}")
            return VisitorOutcome(plan.visitor, arm=arm, exposed=True, offer_id=str(offer["id"]))
        assigned = assign(self.campaign, plan.visitor)
        if offers:
            return VisitorOutcome(plan.visitor, note="offer of another campaign")
        if assigned != HOLDOUT:
            return VisitorOutcome(plan.visitor, arm=assigned, note=f"no offer in {assigned}")
        return VisitorOutcome(plan.visitor, arm=HOLDOUT, exposed=True)

    async def _finish(
        self,
        talk: _Conversation,
        plan: VisitorPlan,
        outcome: VisitorOutcome,
        offer: dict[str, Any] | None,
    ) -> VisitorOutcome:
        if outcome.arm is None:
            return VisitorOutcome(plan.visitor, reached_signal=True, note=outcome.note)
        offered = offer is not None
        clicked, dismissed, converted, value = _behaviour(plan, outcome.arm, offered, self.truth)
        if offer is not None:
            offer_id = str(offer["id"])
            await talk.send({"type": "offer_shown", "offer": offer_id, "claim": offer["claim"]})
            if clicked:
                await talk.send({"type": "offer_clicked", "offer": offer_id, "action": "cta"})
            elif dismissed:
                await talk.send(
                    {"type": "offer_dismissed", "offer": offer_id, "how": "close_button",
                     "visible_ms": 1500 + int(plan.u_interaction * 4000)}
                )  # fmt: skip
        order_id = _order_id(self.seed, plan) if converted else None
        if converted:
            first_id = plan.products[0][0]
            purchase: dict[str, Any] = {
                "type": "event",
                "name": "purchase",
                "order_id": order_id,
                "value": value,
                "items": [{"id": first_id, "quantity": 1, "price": value}],
            }
            if offer is not None and offer.get("code"):
                purchase["coupon"] = str(offer["code"])
            await talk.send(purchase)
        await talk.sync()
        return VisitorOutcome(
            plan.visitor,
            arm=outcome.arm,
            reached_signal=True,
            exposed=outcome.exposed,
            offer_id=outcome.offer_id,
            clicked=clicked,
            dismissed=dismissed,
            converted=converted,
            order_id=order_id,
            order_value=value,
            note=outcome.note,
        )
