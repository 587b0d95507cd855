"""Offers at run time: pre-arming, the claim, what the visitor saw, purchases, live offers,
decision traces.

The decision itself is pure (:mod:`widget_server.offers.decide`); this module feeds it the visitor's
latest state and turns the result into ``arm``/``offer``/``withdraw`` messages. An offer is
reserved at the signal and counted when the widget reports it painted:

1. reserve a place under the site's frequency policy, on the visitor's slot
   (``lua/offer_reserve.lua``; for an exit signal, the signal's own ``lua/session_event.lua``
   call, with the decision made just before from the visitor's last view: :meth:`record_signal`);
2. claim it on the campaign's slot (``lua/offer_claim.lua``: caps, code, exposure), or release
   step 1 if the campaign refuses;
3. send ``offer`` with the reservation's token; the widget echoes it in ``offer_shown`` once the
   offer is painted;
4. confirm on the visitor's slot (``lua/session_event.lua``: the site-wide counts), then on the
   campaign's slot (``lua/offer_confirm.lua``: the caps and one impression).

No single script can span both slots on a cluster; the steps are ordered so that a process dying
between any two of them errs the same way: a reservation nobody confirms runs out after
``offer_seen_timeout_s`` and counts nowhere, so an interrupted offer shows less, never more than
the policy allows (docs/frequency.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import StoreUnavailable
from ..metrics import Metrics
from ..store.bus import Bus
from ..store.keys import Keys
from ..store.replicated import ReplicatedCalls
from ..store.replies import reply_text
from ..store.scripts import ScriptCall, Scripts, pipelined
from ..store.sites import SiteRegistry
from ..visitors.session_view import SessionView
from ..visitors.sessions import Places, SessionStore
from ..wire import nodes
from ..wire import protocol as p
from .assign import HOLDOUT, in_site_holdout
from .campaign_store import CampaignStore
from .campaigns import Campaign, OfferWords, Variant
from .codes import code_candidates
from .decide import (
    ArmProbe,
    Candidate,
    Decision,
    ExitIntentSignal,
    HesitationSignal,
    LiveSignal,
    Reason,
    Rejection,
    ScrollSignal,
    Signal,
    SitePolicy,
    TimeOnPageSignal,
    VisitorState,
    decide,
    offers_discount,
    period_keys,
    prejudge,
)
from .texts import pick, wording_version

log = logging.getLogger("widget_server.offers")
TRACE_LIMIT = 20
TRACE_TTL_S = 7 * 86_400
SITE_DECISIONS = 50  # the latest decisions of a site, for the admin's live feed
LOW_POOL = 100  # codes left in a pool below which a warning is logged
LIVE_RUNS_KEPT = 500  # live broadcasts remembered per site, for the reports
ProductsFor = Callable[[str, VisitorState], Awaitable[list[p.OfferProduct]]]
# Called with the name of each step of an offer as it completes ("reserved", "claimed", "sent",
# "seen_by_visitor"): the fault-injection point of the tests that kill a process between steps.
StepHook = Callable[[str], None]


# The site-wide experiment: its arm for visitors who may see offers and messages, and how long
# after a visit an order counts for it.
TOOL = "tool"
SITE_ATTRIBUTION_DAYS = 7


def _no_hook(step: str) -> None:
    return None


class Visit(Protocol):
    """Whose visit: a connection, or a batch of messages sent over HTTP."""

    @property
    def site(self) -> str: ...
    @property
    def visitor(self) -> str: ...
    @property
    def session_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class VisitRef:
    site: str
    visitor: str
    session_id: str


class OfferSocket(Protocol):
    """What the offer engine needs from a visitor connection."""

    site: str
    visitor: str
    session_id: str
    country: str
    armed: str | None
    shown: str | None
    last_view: SessionView | None

    async def send(self, message: p.ServerMessage) -> None: ...


@dataclass(slots=True)
class _Live:
    """One visitor of a live broadcast being claimed in a batch."""

    sock: OfferSocket
    state: VisitorState
    decision: Decision
    candidate: Candidate | None  # the live campaign's arm; None once refused
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    claim: ClaimResult | None = None
    late: list[Rejection] = field(default_factory=list)


# Offer kinds whose content does not depend on the visitor: rendered once per batch.
_SAME_FOR_EVERYONE = frozenset({"discount", "message"})


@dataclass(frozen=True, slots=True)
class CaptureResult:
    campaign: Campaign
    variant: Variant
    code: str  # "" when the campaign gives no code (or none was left)
    expires_at_ms: int
    first: bool  # the visitor's first capture for this campaign


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: str  # ok | rejected | replay
    variant: str
    code: str
    expires_at_ms: int
    reason: str
    token: str = ""  # the reservation to confirm when the offer is seen ("" for the holdout)


@dataclass(frozen=True, slots=True)
class PreparedSignal:
    """The decision for an exit signal, made before the signal is recorded from the visitor's
    last view, and the places the signal's own script is to reserve for its offers
    (:meth:`OfferEngine.prepare`): the signal and the reservation go in one round trip."""

    signal: Signal
    state: VisitorState
    decision: Decision
    site: SitePolicy
    now: float
    tokens: tuple[str, ...]  # a reservation token per eligible offer, best first
    places: bytes | None  # the request (lua/session_event.lua); None: nothing to reserve


@dataclass(frozen=True, slots=True)
class _Reserved:
    """Where the claim starts: eligible offer ``start`` holds a place under ``token`` (""
    when it is past the last), the ones before it were refused (``late``)."""

    start: int
    token: str
    late: list[Rejection]


SITE_REFUSALS = {
    "site_session": Reason.SITE_SESSION,
    "site_day": Reason.SITE_DAY,
    "site_discount": Reason.SITE_DISCOUNT,
    "site_live_session": Reason.SITE_LIVE_SESSION,
    "site_live_day": Reason.SITE_LIVE_DAY,
}


async def _no_products(site: str, state: VisitorState) -> list[p.OfferProduct]:
    return []


class OfferEngine:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        campaigns: CampaignStore,
        sessions: SessionStore,
        metrics: Metrics,
        *,
        sites: SiteRegistry | None = None,
        seen_timeout_s: int = 120,
        products_for: ProductsFor = _no_products,
        clock: Callable[[], float] = time.time,
        after_step: StepHook = _no_hook,
    ) -> None:
        self._redis = redis
        self._replicated = ReplicatedCalls(redis)
        self._scripts = scripts
        self._keys = keys
        self.campaigns = campaigns
        self._sessions = sessions
        self._metrics = metrics
        self._products_for = products_for
        self._sites = sites
        self.seen_timeout_s = seen_timeout_s
        self._clock = clock
        self._after_step = after_step
        self._live_cache: dict[str, tuple[float, dict[str, float]]] = {}
        self._low_pool_warned: set[tuple[str, str]] = set()

    # --- pre-arming --------------------------------------------------------------------------
    async def rearm(
        self, sock: OfferSocket, view: SessionView, state: VisitorState | None = None
    ) -> None:
        """After a state change: tell the widget what exit intent would show now (no code)."""
        sock.last_view = view
        campaigns = await self.campaigns.active(sock.site)
        if not campaigns:
            if sock.armed is not None:
                await sock.send(p.Withdraw(offer=sock.armed))
                sock.armed = None
            return
        site = await self.site_policy(sock.site)
        started = time.perf_counter()
        state = state or VisitorState.from_view(sock.visitor, view, sock.country)
        decision = decide(state, campaigns, ArmProbe(), self._clock(), site)
        self._metrics.decision_seconds.observe(time.perf_counter() - started)
        chosen = decision.chosen
        if chosen is None or chosen.variant == HOLDOUT:
            if sock.armed is not None:
                await sock.send(p.Withdraw(offer=sock.armed))
                sock.armed = None
            return
        if sock.armed == chosen.offer_id:
            return
        body = await self.render(sock.site, chosen, state)
        sock.armed = chosen.offer_id
        await sock.send(
            p.Arm(
                offer=msgspec.structs.replace(
                    body,
                    kinds=list(chosen.campaign.trigger.exit_intent),
                    not_before=int(chosen.not_before * 1000),
                    scroll_depth=chosen.campaign.trigger.scroll_depth,
                    time_on_page=chosen.campaign.trigger.time_on_page,
                )
            )
        )

    # --- signals -----------------------------------------------------------------------------
    async def site_policy(self, site: str) -> SitePolicy:
        """The site's frequency policy and time zone (the registry caches them in-process)."""
        record = await self._sites.get(site) if self._sites is not None else None
        if record is None:
            return SitePolicy()
        return SitePolicy(record.frequency, record.timezone, record.key, record.holdout,
                          record.holdout_version)  # fmt: skip

    async def record_signal(
        self, sock: OfferSocket, message: p.SignalMessage, *, now: float
    ) -> tuple[SessionView, PreparedSignal | None, Places | None]:
        """Apply an exit signal to the session, reserving its offer's place in the same script
        call when a decision could be made first (:meth:`prepare`). Pass what it returns to
        :meth:`on_signal`. Raises what :meth:`SessionStore.apply` raises."""
        signal = signal_for(message)
        assert signal is not None
        try:
            prepared = await self.prepare(sock, signal)
        except (RedisError, StoreUnavailable):  # decided again after the signal is recorded
            prepared = None
        sessions = self._sessions
        if prepared is None or prepared.places is None:
            view = await sessions.apply(sock.site, sock.visitor, sock.session_id, message, now=now)
            return view, prepared, None
        view, places = await sessions.apply_signal(
            sock.site, sock.visitor, sock.session_id, message, prepared.places, now=now
        )
        return view, prepared, places

    async def prepare(self, sock: OfferSocket, signal: Signal) -> PreparedSignal | None:
        """Decide for an exit signal before it is recorded, from the visitor's last view (an
        exit signal changes nothing the decision reads). :meth:`on_signal` uses the decision
        when the view the signal's script returns gives the same state, so the reservation
        the script made holds; else it decides again and gives the place back."""
        view = sock.last_view
        if view is None or not await self.campaigns.active(sock.site):
            return None
        state = VisitorState.from_view(sock.visitor, view, sock.country)
        decision, site, now = await self._decide(sock.site, state, signal)
        tokens = tuple(secrets.token_hex(8) for _ in decision.eligible)
        places = None
        if decision.eligible:
            places = msgspec.json.encode(
                {
                    "sid": state.session_id,
                    "day": period_keys(now, site.timezone)[0],
                    "until": now + self.seen_timeout_s,
                    "policy": site.frequency,
                    "offers": [
                        {"token": token, "offer": c.offer_id,
                         "rule": int(offers_discount(c.campaign)),
                         "check": int(c.variant == HOLDOUT), "disc": int(_shows_discount(c))}
                        for token, c in zip(tokens, decision.eligible, strict=True)
                    ],
                }
            )  # fmt: skip
        return PreparedSignal(signal, state, decision, site, now, tokens, places)

    async def on_signal(
        self,
        sock: OfferSocket,
        signal: Signal,
        message_id: str,
        *,
        resend: bool = True,
        again: bool = False,
        prepared: PreparedSignal | None = None,
        places: Places | None = None,
    ) -> None:
        """Decide and claim for a signal; send ``offer`` (or ``withdraw`` if nothing may show).

        ``again``: the message id may have been claimed before (a signal sent again, a live
        offer on a reconnect). Its earlier claim is returned then, and ``resend`` says whether
        to send it again. ``prepared`` and ``places``: the decision made before the signal was
        recorded, and what its script reserved (:meth:`prepare`).
        """
        view = sock.last_view
        if view is None or not await self.campaigns.active(sock.site):
            await self._give_back(sock, prepared, places)
            return
        state = VisitorState.from_view(sock.visitor, view, sock.country)
        reserved: _Reserved | None = None
        if (
            prepared is not None
            and state == prepared.state
            and (places is not None or prepared.places is None)
        ):
            decision, site, now = prepared.decision, prepared.site, prepared.now
            reserved = _reserved(prepared, places)
        else:  # the view changed meanwhile (another tab), or the signal was recorded before
            await self._give_back(sock, prepared, places)
            decision, site, now = await self._decide(sock.site, state, signal)
        earlier = await self._earlier_claim(sock, decision, message_id) if again else None
        chosen: Candidate | None
        claim: ClaimResult | None
        late: list[Rejection] = []
        if earlier is not None:
            chosen, claim = earlier
        else:
            chosen, claim, late = await self._claim_first(
                sock, decision, state, signal, site, message_id, now, reserved
            )
        if claim is not None and claim.status == "replay" and not resend:
            return
        await self._deliver(sock, signal, state, chosen, claim)
        await self._record_trace(sock, signal, decision, chosen, late, now)

    async def _decide(
        self, site_key: str, state: VisitorState, signal: Signal
    ) -> tuple[Decision, SitePolicy, float]:
        """The decision for ``signal`` now, among all the site's campaigns (paused ones too,
        for the trace), with the site's policy and the time it was made at."""
        campaigns = await self.campaigns.for_site(site_key)
        site = await self.site_policy(site_key)
        now = self._clock()
        started = time.perf_counter()
        decision = decide(state, campaigns, signal, now, site)
        self._metrics.decision_seconds.observe(time.perf_counter() - started)
        return decision, site, now

    async def _give_back(
        self, sock: OfferSocket, prepared: PreparedSignal | None, places: Places | None
    ) -> None:
        """Release the place a signal's script reserved for a decision that no longer holds."""
        if prepared is not None and places is not None and places.chosen:
            await self.release(sock.site, sock.visitor, prepared.tokens[places.chosen - 1])

    async def _deliver(
        self,
        sock: OfferSocket,
        signal: Signal,
        state: VisitorState,
        chosen: Candidate | None,
        claim: ClaimResult | None,
        body: p.OfferBody | None = None,
    ) -> None:
        """Send the claimed offer (``body``: already rendered), or take the armed one away when
        an exit signal gets nothing. A live offer leaves the armed exit offer where it is."""
        exit_signal = not isinstance(signal, LiveSignal)
        if chosen is not None and claim is not None and chosen.variant != HOLDOUT:
            if exit_signal and sock.armed is not None and sock.armed != chosen.offer_id:
                # The armed offer the widget may have painted lost its claim: take it away first.
                await sock.send(p.Withdraw(offer=sock.armed))
            body = body or await self.render(sock.site, chosen, state)
            body = msgspec.structs.replace(
                body,
                code=claim.code or None,
                expires_at=claim.expires_at_ms or None,
                claim=claim.token or None,
                show_within=self.seen_timeout_s,
            )
            await sock.send(p.Offer(offer=body))
            self._after_step("sent")
            if exit_signal:
                sock.armed = None
            sock.shown = chosen.offer_id
        elif exit_signal and sock.armed is not None:
            await sock.send(p.Withdraw(offer=sock.armed))
            sock.armed = None

    async def offer_live_many(self, socks: Sequence[OfferSocket], campaign_id: str) -> None:
        """A live broadcast that has just started, for many connections of one site at once:
        what :meth:`on_signal` does for each (decide, reserve, claim, send, trace), with each step
        one pipelined round trip for the whole batch instead of one per visitor. Every script
        still runs atomically on its own slot, so caps, the global cap and the site's limits hold
        exactly as one by one. Claims that hand out unique codes go one by one, each waiting for a
        replica (:class:`ReplicatedCalls`)."""
        if not socks or not await self.campaigns.active(socks[0].site):
            return
        site_key = socks[0].site
        campaigns = await self.campaigns.for_site(site_key)
        site = await self.site_policy(site_key)
        signal, now = LiveSignal(campaign_id), self._clock()
        started = time.perf_counter()
        work: list[_Live] = []
        prejudged = prejudge(campaigns, signal, now)
        for sock in socks:
            view = sock.last_view
            if view is not None:
                state = VisitorState.from_view(sock.visitor, view, sock.country)
                decision = decide(state, campaigns, signal, now, site, prejudged)
                first = decision.eligible[0] if decision.eligible else None
                work.append(_Live(sock, state, decision, first))
        self._metrics.decision_seconds.observe(time.perf_counter() - started)
        try:
            await self._reserve_many(work, signal, site, now)
            self._after_step("reserved")
            await self._claim_many(work, now)
            self._after_step("claimed")
        except RedisError as exc:
            self._metrics.redis_errors.inc()
            log.warning("live offer claims failed", extra={"error": str(exc), "site": site_key})
            return
        # Offers whose body is the same for every visitor in a language are rendered once per
        # language of the batch, not once per visitor.
        bodies: dict[tuple[str, str], p.OfferBody] = {}
        for item in work:
            candidate, claim = item.candidate, item.claim
            if candidate is not None and claim is not None and claim.status == "ok":
                variant = candidate.campaign.variant(candidate.variant)
                same = variant is not None and variant.offer.kind in _SAME_FOR_EVERYONE
                shared = (candidate.offer_id, item.state.lang)
                if same and shared not in bodies:
                    bodies[shared] = await self.render(site_key, candidate, item.state)
        await asyncio.gather(
            *(self._deliver(item.sock, signal, item.state, item.candidate, item.claim,
                            bodies.get((item.candidate.offer_id, item.state.lang))
                            if item.candidate else None)
              for item in work if item.claim is None or item.claim.status != "replay"),
            return_exceptions=True,
        )  # fmt: skip
        traced = [item for item in work if item.claim is None or item.claim.status != "replay"]
        entries = [
            _trace_entry(signal, item.decision,
                         item.candidate if item.claim is not None else None, item.late, now)
            for item in traced
        ]  # fmt: skip
        await self._trace_many([item.sock for item in traced], entries)

    async def _trace_many(self, socks: list[OfferSocket], entries: list[dict[str, Any]]) -> None:
        """What :meth:`_trace_commands` writes, for a batch: each session's trace in one call of
        the trace script per visitor (one batch call per slot), and the site's feed once with
        the newest entries only (it keeps :data:`SITE_DECISIONS`)."""
        if not socks:
            return
        k, site = self._keys, socks[0].site
        encoded = [msgspec.json.encode(entry) for entry in entries]
        calls: list[ScriptCall] = [
            (self._scripts.offer_trace, [k.trace(site, s.visitor, s.session_id)],
             [entry, TRACE_LIMIT, TRACE_TTL_S])
            for s, entry in zip(socks, encoded, strict=True)
        ]  # fmt: skip
        newest = list(zip(socks, entries, strict=True))[-SITE_DECISIONS:]
        feed = [
            msgspec.json.encode({**entry, "visitor": s.visitor, "session": s.session_id})
            for s, entry in newest
        ]
        try:
            await pipelined(self._redis, calls)
            async with self._redis.pipeline(transaction=False) as pipe:
                for s in socks:
                    pipe.set(k.session_owner(site, s.session_id), s.visitor, ex=TRACE_TTL_S)
                pipe.lpush(k.decisions(site), *feed)
                pipe.ltrim(k.decisions(site), 0, SITE_DECISIONS - 1)
                await pipe.execute()
        except RedisError:
            self._metrics.redis_errors.inc()

    async def _reserve_many(
        self, work: list[_Live], signal: Signal, site: SitePolicy, now: float
    ) -> None:
        todo = [item for item in work if item.candidate is not None]
        calls: list[ScriptCall] = []
        for item in todo:
            assert item.candidate is not None
            keys, args = self._reserve_call(
                item.sock, item.state, item.candidate, signal, site, item.token, now
            )
            calls.append((self._scripts.offer_reserve, keys, args))
        results = await pipelined(self._redis, calls)
        for item, result in zip(todo, results, strict=True):
            assert item.candidate is not None
            if isinstance(result, Exception):
                item.candidate = None  # not reserved: nothing for this visitor now
                continue
            refused = _refusal(item.candidate, result)
            if refused is not None:
                item.late.append(refused)
                item.candidate = None

    async def _claim_many(self, work: list[_Live], now: float) -> None:
        todo = [item for item in work if item.candidate is not None]
        batched: list[tuple[_Live, str]] = []
        one_by_one: list[_Live] = []
        calls: list[ScriptCall] = []
        for item in todo:
            assert item.candidate is not None
            keys, args, strategy = self._claim_call(
                item.sock.site, item.sock.visitor, item.state, item.candidate,
                f"live:{item.candidate.campaign.id}:{item.state.session_id}", now, item.token,
            )  # fmt: skip
            if strategy in ("pool", "generated"):
                one_by_one.append(item)
                continue
            calls.append((self._scripts.offer_claim, keys, args))
            batched.append((item, strategy))
        results = await pipelined(self._redis, calls)
        for (item, strategy), result in zip(batched, results, strict=True):
            assert item.candidate is not None
            if not isinstance(result, Exception):
                item.claim = self._claim_result(
                    item.sock.site, item.candidate.campaign.id, strategy, result
                )
        for item in one_by_one:
            assert item.candidate is not None
            item.claim = await self.claim(
                item.sock.site, item.sock.visitor, item.state, item.candidate,
                f"live:{item.candidate.campaign.id}:{item.state.session_id}", now, item.token,
            )  # fmt: skip
        refused = [item for item in todo if item.claim is None or item.claim.status != "ok"]
        await pipelined(
            self._redis,
            [(self._scripts.offer_release, [self._keys.held(i.sock.site, i.sock.visitor)],
              [i.token]) for i in refused],
        )  # fmt: skip
        for item in refused:
            assert item.candidate is not None
            if item.claim is not None and item.claim.status == "rejected":
                item.late.append(
                    Rejection(
                        item.candidate.campaign.id, Reason(item.claim.reason), "at claim time"
                    )
                )
                item.claim = None

    async def _claim_first(
        self,
        sock: OfferSocket,
        decision: Decision,
        state: VisitorState,
        signal: Signal,
        site: SitePolicy,
        message_id: str,
        now: float,
        reserved: _Reserved | None = None,
    ) -> tuple[Candidate | None, ClaimResult | None, list[Rejection]]:
        """Reserve and claim the best candidate that both the site and its campaign allow
        (``reserved``: where the signal's script left the reservation)."""
        late: list[Rejection] = list(reserved.late) if reserved is not None else []
        eligible = decision.eligible
        for n in range(reserved.start if reserved is not None else 0, len(eligible)):
            candidate = eligible[n]
            try:
                if reserved is not None and n == reserved.start:
                    token, refused = reserved.token, None  # reserved by the signal's script
                else:
                    token = secrets.token_hex(8)
                    refused = await self.reserve(sock, state, candidate, signal, site, token, now)
                self._after_step("reserved")
                if refused is not None:
                    late.append(refused)
                    if candidate.variant == HOLDOUT:
                        break
                    continue
                claim = await self.claim(
                    sock.site, sock.visitor, state, candidate, message_id, now, token
                )
                self._after_step("claimed")
                if claim.status == "ok":
                    return candidate, claim, late
                await self.release(sock.site, sock.visitor, token)
                if claim.status == "replay":  # the earlier claim stands
                    return candidate, claim, late
            except RedisError as exc:
                self._metrics.redis_errors.inc()
                log.warning("claim failed", extra={"error": str(exc), "site": sock.site})
                return None, None, late
            late.append(Rejection(candidate.campaign.id, Reason(claim.reason), "at claim time"))
            if candidate.variant == HOLDOUT:
                break
        return None, None, late

    async def _earlier_claim(
        self, sock: OfferSocket, decision: Decision, message_id: str
    ) -> tuple[Candidate, ClaimResult] | None:
        """The claim an earlier copy of this message made, if any (one pipelined read)."""
        if not decision.eligible:
            return None
        field = f"m:{sock.session_id}:{message_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            for candidate in decision.eligible:
                pipe.hget(
                    self._keys.campaign_visitor(sock.site, candidate.campaign.id, sock.visitor),
                    field,
                )
            found = await pipe.execute()
        for candidate, raw in zip(decision.eligible, found, strict=True):
            if raw:
                variant, code, expires, *rest = json.loads(raw)
                token = str(rest[0]) if rest else ""
                claimed = dataclasses.replace(candidate, variant=str(variant))
                result = ClaimResult("replay", str(variant), str(code), int(float(expires or 0)),
                                     "", token)  # fmt: skip
                return claimed, result
        return None

    async def reserve(
        self,
        sock: OfferSocket,
        state: VisitorState,
        candidate: Candidate,
        signal: Signal,
        site: SitePolicy,
        token: str,
        now: float,
    ) -> Rejection | None:
        """Step 1: a place under the site's frequency policy, held until the offer is seen or
        ``seen_timeout_s`` runs out (the holdout is checked the same way and holds nothing)."""
        keys, args = self._reserve_call(sock, state, candidate, signal, site, token, now)
        return _refusal(candidate, await self._scripts.offer_reserve(keys=keys, args=args))

    def _reserve_call(
        self,
        sock: Visit,
        state: VisitorState,
        candidate: Candidate,
        signal: Signal,
        site: SitePolicy,
        token: str,
        now: float,
    ) -> tuple[list[str], list[Any]]:
        k, campaign = self._keys, candidate.campaign
        return (
            [
                k.held(sock.site, sock.visitor),
                k.session(sock.site, sock.visitor, state.session_id),
                k.profile(sock.site, sock.visitor),
            ],
            [
                repr(now),
                token,
                repr(now + self.seen_timeout_s),
                "live" if isinstance(signal, LiveSignal) else "overlay",
                "1" if offers_discount(campaign) else "0",
                period_keys(now, site.timezone)[0],
                msgspec.json.encode(site.frequency),
                candidate.offer_id,
                state.session_id,
                "1" if candidate.variant == HOLDOUT else "0",
                "1" if _shows_discount(candidate) else "0",
            ],
        )

    async def release(self, site: str, visitor: str, token: str) -> None:
        """Step 2, refused: give the place reserved in step 1 back."""
        await self._scripts.offer_release(keys=[self._keys.held(site, visitor)], args=[token])

    async def claim(
        self,
        site: str,
        visitor: str,
        state: VisitorState,
        candidate: Candidate,
        message_id: str,
        now: float,
        token: str = "",
    ) -> ClaimResult:
        """Step 2: the claim script for one candidate (atomic on the campaign's slot)."""
        claim_keys, claim_args, strategy = self._claim_call(
            site, visitor, state, candidate, message_id, now, token
        )
        if strategy in ("pool", "generated"):  # a unique code: a replica must have it
            result, acked = await self._replicated.call(
                self._scripts.offer_claim, claim_keys, claim_args
            )
            if acked == 0 and reply_text(result[0]) == "ok" and reply_text(result[2]):
                self._metrics.codes_unreplicated.inc()
                log.warning(
                    "a code was handed out before a replica had it",
                    extra={"site": site, "campaign": candidate.campaign.id},
                )
        else:
            result = await self._scripts.offer_claim(keys=claim_keys, args=claim_args)
        return self._claim_result(site, candidate.campaign.id, strategy, result)

    def _claim_result(self, site: str, campaign_id: str, strategy: str, result: Any) -> ClaimResult:
        status, variant_key, code, expires, reason = (reply_text(x) for x in result[:5])
        left = int(result[5]) if len(result) > 5 else -1
        if strategy == "pool" and left >= 0:
            self._pool_level(site, campaign_id, left)
        token_out = reply_text(result[6]) if len(result) > 6 else ""
        return ClaimResult(status, variant_key, code, int(float(expires or 0)), reason, token_out)

    def _claim_call(
        self,
        site: str,
        visitor: str,
        state: VisitorState,
        candidate: Candidate,
        message_id: str,
        now: float,
        token: str,
    ) -> tuple[list[str], list[Any], str]:
        campaign = candidate.campaign
        k = self._keys
        day, week = period_keys(now, campaign.schedule.timezone)
        caps = campaign.caps
        variant = campaign.variant(candidate.variant)
        discount = variant.discount if variant is not None else None
        strategy = discount.code_strategy if discount is not None else "none"
        if variant is not None and variant.offer.kind in ("email_capture", "sms_capture"):
            # email: its code is given for the address (on_capture), not shown now; SMS: none
            strategy = "none"
        generated = discount is not None and strategy == "generated"
        candidates = code_candidates(discount.code_format) if generated and discount else []
        claim_keys, claim_args = (
            [
                k.campaign_visitor(site, campaign.id, visitor),
                k.campaign_impressions(site, campaign.id),
                k.code_pool(site, campaign.id),
                k.issued_codes(site, campaign.id),
                k.campaign_stats(site, campaign.id, day, campaign.experiment_version),
                k.campaign_pending(site, campaign.id),
            ],
            [
                repr(now),
                message_id,
                state.session_id,
                day,
                week,
                json.dumps(
                    {
                        "per_session": caps.per_session,
                        "per_day": caps.per_visitor_day,
                        "per_week": caps.per_visitor_week,
                        "global_max": caps.global_max_impressions or 0,
                    }
                ),
                candidate.variant,
                "1" if candidate.variant == HOLDOUT else "0",
                strategy,
                (discount.static_code or "") if discount is not None else "",
                json.dumps(candidates),
                (discount.valid_minutes * 60) if discount is not None else 0,
                max(8, campaign.attribution_days + 1) * 86_400,
                visitor,
                "1" if campaign.uses_pool else "0",
                campaign.experiment_version,
                token or secrets.token_hex(8),
                repr(now + self.seen_timeout_s),
                state.covariates(),
            ],
        )
        return claim_keys, claim_args, strategy

    # --- what the visitor saw ----------------------------------------------------------------
    async def on_shown(self, sock: Visit, message: p.OfferShown, view: SessionView) -> None:
        """Step 4: the widget painted an offer. The visitor's slot has judged the report (the
        view's note); a seen offer is now confirmed on the campaign's slot.

        A report sent again after a failure between the two slots finishes the campaign's step
        if the visitor's was done: in the same session (a duplicate message id) or, when the
        visit ended meanwhile, in the next one (the visitor's slot calls it ``replayed``).
        Confirming is idempotent, so a true replay counts nothing twice."""
        again = view.duplicate or view.note == "replayed"
        if again:
            if not message.claim or not await self._redis.hexists(
                self._keys.held(sock.site, sock.visitor), f"done:{message.claim}"
            ):
                self._refused(view.note)
                return
        elif view.note != "seen":
            self._refused(view.note)
            return
        campaign, _ = await self.offer_of(sock.site, message.offer)
        if campaign is None:
            return
        self._after_step("seen_by_visitor")
        now = self._clock()
        outcome = await self.confirm(sock.site, sock.visitor, campaign, message.claim, now)
        if again:
            if outcome != "seen":
                self._refused(view.note)  # the campaign had it already: a replay
            return
        if outcome == "seen":
            await self._record_seen(sock, message.offer, now)

    def _refused(self, note: str) -> None:
        if note and note != "seen":
            self._metrics.offer_reports_refused.labels(note).inc()

    async def confirm(
        self, site: str, visitor: str, campaign: Campaign, token: str, now: float
    ) -> str:
        """The campaign's part of step 4: caps and one impression (``lua/offer_confirm.lua``)."""
        k = self._keys
        day, _ = period_keys(now, campaign.schedule.timezone)
        outcome = await self._scripts.offer_confirm(
            keys=[
                k.campaign_visitor(site, campaign.id, visitor),
                k.campaign_impressions(site, campaign.id),
                k.campaign_stats(site, campaign.id, day, campaign.experiment_version),
                k.campaign_pending(site, campaign.id),
            ],
            args=[repr(now), token, max(8, campaign.attribution_days + 1) * 86_400],
        )
        return reply_text(outcome)

    def _pool_level(self, site: str, campaign_id: str, left: int) -> None:
        """Export the codes left in a pool; warn once when it runs low."""
        self._metrics.pool_available.labels(site, campaign_id).set(left)
        key = (site, campaign_id)
        if left < LOW_POOL and key not in self._low_pool_warned:
            self._low_pool_warned.add(key)
            log.warning(
                "code pool running low",
                extra={"site": site, "campaign": campaign_id, "codes_left": left},
            )
        elif left >= LOW_POOL:
            self._low_pool_warned.discard(key)

    async def _record_trace(
        self,
        sock: OfferSocket,
        signal: Signal,
        decision: Decision,
        chosen: Candidate | None,
        late: list[Rejection],
        now: float,
    ) -> None:
        entry = _trace_entry(signal, decision, chosen, late, now)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                self._trace_commands(pipe, sock, entry)
                await pipe.execute()
        except RedisError:
            self._metrics.redis_errors.inc()

    def _trace_commands(self, pipe: Any, sock: Visit, entry: dict[str, Any]) -> None:
        """Add a decision trace entry to ``pipe``: the session's trace and the site's feed."""
        k = self._keys
        key = k.trace(sock.site, sock.visitor, sock.session_id)
        feed = {**entry, "visitor": sock.visitor, "session": sock.session_id}
        pipe.lpush(key, json.dumps(entry))
        pipe.ltrim(key, 0, TRACE_LIMIT - 1)
        pipe.expire(key, TRACE_TTL_S)
        pipe.set(k.session_owner(sock.site, sock.session_id), sock.visitor, ex=TRACE_TTL_S)
        pipe.lpush(k.decisions(sock.site), json.dumps(feed))
        pipe.ltrim(k.decisions(sock.site), 0, SITE_DECISIONS - 1)

    async def _record_seen(self, sock: Visit, offer_id: str, now: float) -> None:
        """A trace entry for an offer the widget painted (the sent one becomes "shown")."""
        entry = {"at": now, "signal": {"type": "seen", "offer": offer_id}, "shown": offer_id,
                 "chosen": offer_id, "eligible": [], "rejected": []}  # fmt: skip
        k = self._keys
        key = k.trace(sock.site, sock.visitor, sock.session_id)
        feed = {**entry, "visitor": sock.visitor, "session": sock.session_id}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lpush(key, json.dumps(entry))
                pipe.ltrim(key, 0, TRACE_LIMIT - 1)
                pipe.expire(key, TRACE_TTL_S)
                pipe.lpush(k.decisions(sock.site), json.dumps(feed))
                pipe.ltrim(k.decisions(sock.site), 0, SITE_DECISIONS - 1)
                await pipe.execute()
        except RedisError:
            self._metrics.redis_errors.inc()

    async def traces(self, site: str, visitor: str, session_id: str) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(self._keys.trace(site, visitor, session_id), 0, -1)
        return [json.loads(item) for item in raw]

    # --- rendering ---------------------------------------------------------------------------
    async def render(self, site: str, candidate: Candidate, state: VisitorState) -> p.OfferBody:
        """The ``offer`` object the widget renders (see docs/protocol.md), without what only
        ``arm`` (``kinds``, ``not_before``) or ``offer`` (``code``, ``expires_at``) carry."""
        campaign = candidate.campaign
        variant = campaign.variant(candidate.variant)
        assert variant is not None
        offer, theme, discount = variant.offer, variant.offer.theme, variant.discount
        words = offer.words(state.lang)
        headline, text = words.headline, words.body
        free_shipping = None
        if offer.kind == "free_shipping_progress" and offer.free_shipping_threshold:
            remaining = max(0.0, offer.free_shipping_threshold - state.cart_value)
            free_shipping = p.FreeShipping(
                threshold=offer.free_shipping_threshold, remaining=round(remaining, 2)
            )
            amount = f"{remaining:.2f}"
            headline = headline.replace("{remaining}", amount)
            text = text.replace("{remaining}", amount)
        products = None
        if offer.kind == "similar_products":
            products = await self._products_for(site, state)
        capture: dict[str, Any] = {}
        if offer.kind == "email_capture":
            capture = await self._capture_texts(site, variant, state.lang, words)
        elif offer.kind == "sms_capture":
            capture = await self._phone_texts(site, variant, state.lang, words.cta_label)
        if discount is not None:
            capture["apply"] = await self._apply(site)
        return p.OfferBody(
            id=candidate.offer_id,
            campaign=campaign.id,
            variant=variant.key,
            kind=offer.kind,
            headline=headline,
            body=text,
            cta=p.OfferCta(label=words.cta_label, url=offer.cta_url or ""),
            theme=p.OfferTheme(
                accent=theme.accent,
                background=theme.background,
                text=theme.text,
                radius=theme.radius,
            ),
            discount=(
                p.OfferDiscount(type=discount.type, amount=discount.amount)
                if discount is not None
                else None
            ),
            free_shipping=free_shipping,
            products=products,
            layout=None if offer.layout == "popup" else offer.layout,
            **capture,
        )

    async def offer_of(self, site: str, offer_id: str) -> tuple[Campaign | None, Variant | None]:
        """The campaign and variant an offer id (``campaign.variant``) names, if they exist."""
        campaign_id, _, variant_key = offer_id.partition(".")
        campaign = next(
            (c for c in await self.campaigns.for_site(site) if c.id == campaign_id), None
        )
        return campaign, campaign.variant(variant_key) if campaign is not None else None

    # --- email capture -----------------------------------------------------------------------
    async def _apply(self, site: str) -> p.OfferApply | None:
        record = await self._sites.get(site) if self._sites is not None else None
        if record is None or record.apply_code.mode == "none":
            return None
        return p.OfferApply(mode=record.apply_code.mode, param=record.apply_code.param)

    async def site_locale(self, site: str) -> str:
        record = await self._sites.get(site) if self._sites is not None else None
        return record.locale if record is not None else "en"

    async def _capture_texts(
        self, site: str, variant: Variant, lang: str, words: OfferWords
    ) -> dict[str, Any]:
        """The consent sentence, thanks, privacy link and button labels of an email capture,
        in the page's language (offers/texts.py; ``words``: the variant's, in it)."""
        offer, locale = variant.offer, await self.site_locale(site)
        cta_label = words.cta_label

        def text(field: str, texts: Mapping[str, str] | None = None) -> str:
            return pick(texts, lang, locale, field)

        reward = p.OfferReward(
            code=variant.discount is not None,
            submit_with_email=cta_label or text("submit_with_email"),
            submit_on_screen=text("submit_on_screen"),
            privacy_label=text("privacy_link"),
        )
        if variant.discount is None:
            reward = msgspec.structs.replace(reward, submit_with_email=cta_label or text("submit"))
        two_step = offer.two_step
        return {
            "two_step": (
                p.OfferTwoStep(yes=words.yes_label, no=words.no_label) if two_step else None
            ),
            "consent_label": text("consent_label", offer.consent_label),
            "thanks": text("thanks", offer.thanks),
            "privacy_url": offer.privacy_url,
            "reward": reward,
        }

    async def _phone_texts(
        self, site: str, variant: Variant, lang: str, cta_label: str
    ) -> dict[str, Any]:
        """The words of an SMS capture (a phone number, its own SMS consent, the code texted to
        it) in the page's language; the consent sentence is the SMS one unless the campaign
        has its own."""
        offer, locale = variant.offer, await self.site_locale(site)

        def text(field: str, texts: Mapping[str, str] | None = None) -> str:
            return pick(texts, lang, locale, field)

        return {
            "consent_label": pick(offer.consent_label, lang, locale, "sms_consent_label"),
            "thanks": text("thanks", offer.thanks),
            "privacy_url": offer.privacy_url,
            "reward": p.OfferReward(privacy_label=text("privacy_link")),
            "phone": p.OfferPhone(
                submit=cta_label or text("sms_submit"),
                code=text("sms_code"),
                confirm=text("sms_confirm"),
            ),
        }

    async def consent_wording(self, site: str, offer_id: str, lang: str, now: float) -> str | None:
        """The version of the consent sentence an email capture showed (kept with its text in
        the site's wordings, so a consent record says what was agreed to)."""
        campaign, variant = await self.offer_of(site, offer_id)
        if campaign is None or variant is None or variant.offer.kind != "email_capture":
            return None
        text = pick(
            variant.offer.consent_label, lang, await self.site_locale(site), "consent_label"
        )
        version = wording_version(text, lang or await self.site_locale(site))
        record = json.dumps({"text": text, "campaign": campaign.id, "first": now})
        await self._redis.hsetnx(self._keys.consent_wordings(site), version, record)
        return version

    async def on_capture(
        self, sock: Visit, message: p.OfferCapture, view: SessionView, now: float
    ) -> CaptureResult | None:
        """An address submitted in a painted email capture (the identify is recorded already):
        count it, give the campaign's code for it, and answer with a ``reward``."""
        campaign, variant = await self.offer_of(sock.site, message.offer)
        if campaign is None or variant is None or variant.offer.kind != "email_capture":
            self._metrics.offer_reports_refused.labels("forged").inc()
            return None
        k = self._keys
        discount = variant.discount
        strategy = discount.code_strategy if discount is not None else "none"
        day, _ = period_keys(now, campaign.schedule.timezone)
        keys = [
            k.campaign_visitor(sock.site, campaign.id, sock.visitor),
            k.code_pool(sock.site, campaign.id),
            k.issued_codes(sock.site, campaign.id),
            k.campaign_stats(sock.site, campaign.id, day, campaign.experiment_version),
        ]
        args: list[str | int] = [
            repr(now),
            message.claim,
            strategy,
            (discount.static_code or "") if discount is not None else "",
            json.dumps(code_candidates(discount.code_format) if discount is not None else []),
            (discount.valid_minutes * 60) if discount is not None else 0,
            sock.visitor,
            variant.key,
            "1" if message.consent else "0",
            max(8, campaign.attribution_days + 1) * 86_400,
            view.session_id,
        ]
        if strategy in ("pool", "generated"):
            result, _ = await self._replicated.call(self._scripts.offer_reward, keys, args)
        else:
            result = await self._scripts.offer_reward(keys=keys, args=args)
        status, code = reply_text(result[0]), reply_text(result[1])
        if status == "unseen":
            self._metrics.offer_reports_refused.labels("forged").inc()
            return None
        return CaptureResult(campaign, variant, code, int(float(result[2] or 0)), status == "ok")

    # --- purchases ---------------------------------------------------------------------------
    async def count_visit(self, site: str, visitor: str, now: float) -> bool:
        """Count a visit in the site-wide experiment (:file:`lua/offer_visit.lua`): the visitor
        is exposed in the tool's arm or the site-wide holdout once per holdout version, and the
        visit restarts the window in which their orders count. True for a first exposure."""
        record = await self._sites.get(site) if self._sites is not None else None
        if record is None:
            return False
        version = record.holdout_version
        held = in_site_holdout(site, version, record.holdout, visitor)
        day, _ = period_keys(now, record.timezone)
        k = self._keys
        first = await self._scripts.offer_visit(
            keys=[k.site_experiment_visitor(site, visitor),
                  k.site_experiment_stats(site, day, version), k.site_reached(site, day)],
            args=[repr(now), version, HOLDOUT if held else TOOL,
                  (SITE_ATTRIBUTION_DAYS + 1) * 86_400, visitor, secrets.token_hex(8)],
        )  # fmt: skip
        return bool(int(first))

    async def on_purchase(
        self, site: str, visitor: str, purchase: p.Purchase, *, new_order: bool, now: float
    ) -> None:
        """Attribute a new order to every campaign that exposed the visitor within its window
        (:file:`lua/offer_attribute.lua`, one atomic call per campaign) and to the site-wide
        experiment (within :data:`SITE_ATTRIBUTION_DAYS` of the visitor's last visit), mark the
        coupon it carries as redeemed, and count it as influenced when a campaign's offer (not
        its holdout) is attributed it."""
        if not new_order:
            return
        campaigns = await self.campaigns.for_site(site)
        record = await self._sites.get(site) if self._sites is not None else None
        k = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            if record is not None:
                version = record.holdout_version
                site_day, _ = period_keys(now, record.timezone)
                stats = k.site_experiment_stats(site, site_day, version)
                await self._scripts.offer_attribute(
                    keys=[k.site_experiment_visitor(site, visitor), stats,
                          k.site_experiment_codes(site), k.site_experiment_buyers(site, version)],
                    args=[repr(now), SITE_ATTRIBUTION_DAYS * 86_400, version,
                          repr(purchase.value), "", purchase.order_id, site_day, "1"],
                    client=pipe,
                )  # fmt: skip
            for campaign in campaigns:
                day, _ = period_keys(now, campaign.schedule.timezone)
                await self._scripts.offer_attribute(
                    keys=[
                        k.campaign_visitor(site, campaign.id, visitor),
                        k.campaign_stats(site, campaign.id, day, campaign.experiment_version),
                        k.issued_codes(site, campaign.id),
                        k.campaign_buyers(site, campaign.id, campaign.experiment_version),
                    ],
                    args=[
                        repr(now),
                        campaign.attribution_days * 86_400,
                        campaign.experiment_version,
                        repr(purchase.value),
                        purchase.coupon or "",
                        purchase.order_id,
                        day,
                    ],
                    client=pipe,
                )
            results = await pipe.execute()
        if record is None:
            return
        # Influenced: a campaign's offer (not its holdout) is attributed the order. Known only
        # once every campaign's slot answered, so counted after them.
        if any(reply_text(r[0]) not in ("", HOLDOUT) for r in results[1:]):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(stats, "influenced_orders", 1)
                pipe.hincrbyfloat(stats, "influenced_revenue", purchase.value)
                pipe.expire(stats, 400 * 86_400)
                await pipe.execute()

    # --- interactions ------------------------------------------------------------------------
    async def count_interaction(
        self, site: str, message: p.OfferClicked | p.OfferDismissed, now: float
    ) -> None:
        """Count a click, code copy, email capture or dismissal for the offer's variant."""
        campaign, chosen = await self.offer_of(site, message.offer)
        if campaign is None or chosen is None:
            return
        variant = chosen.key
        if isinstance(message, p.OfferDismissed):
            metric = "dismissals"
        else:
            metric = {"code_copy": "code_copies", "email_submit": "email_captures"}.get(
                message.action, "clicks"
            )
        day, _ = period_keys(now, campaign.schedule.timezone)
        key = self._keys.campaign_stats(site, campaign.id, day, campaign.experiment_version)
        await self._redis.hincrby(key, f"{metric}:{variant}", 1)

    # --- live offers -------------------------------------------------------------------------
    async def start_live(self, site: str, campaign_id: str, minutes: int) -> int:
        """Start a live broadcast now: every connected matching visitor, on every node."""
        until = time.time() + minutes * 60
        k = self._keys
        await self._redis.hset(k.live_offers(site), campaign_id, until)
        run = {"campaign": campaign_id, "started": time.time(), "until": until}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(k.live_runs(site), json.dumps(run))
            pipe.ltrim(k.live_runs(site), 0, LIVE_RUNS_KEPT - 1)
            await pipe.execute()
        return await Bus(self._redis).publish(
            k.broadcast_channel(), nodes.encode(nodes.LiveStarted(site=site, campaign=campaign_id))
        )

    async def stop_live(self, site: str, campaign_id: str) -> None:
        await self._redis.hdel(self._keys.live_offers(site), campaign_id)
        self._live_cache.pop(site, None)

    async def widget_config(self, site: str, base: p.WidgetConfig) -> p.WidgetConfig:
        """The welcome's config for a visitor of ``site``: ``base`` with the scroll-depth and
        time-on-page thresholds of the site's active campaigns, which the widget reports."""
        campaigns = await self.campaigns.active(site)
        return msgspec.structs.replace(base, **trigger_thresholds(campaigns))

    async def active_live(self, site: str, now: float) -> list[str]:
        """Campaign ids whose live broadcast runs now (cached for a few seconds)."""
        cached = self._live_cache.get(site)
        if cached is None or now - cached[0] > 5:
            raw = await self._redis.hgetall(self._keys.live_offers(site))
            cached = (now, {reply_text(key): float(value) for key, value in raw.items()})
            self._live_cache[site] = cached
        return sorted(cid for cid, until in cached[1].items() if until > now)

    def live_started(self, site: str) -> None:
        self._live_cache.pop(site, None)


def _trace_entry(
    signal: Signal, decision: Decision, chosen: Candidate | None, late: list[Rejection], now: float
) -> dict[str, Any]:
    trace = decision.trace()
    trace["sent"] = chosen.offer_id if chosen and chosen.variant != HOLDOUT else None
    trace["rejected"] += [  # type: ignore[operator]
        {"campaign": r.campaign_id, "reason": str(r.reason), "detail": r.detail} for r in late
    ]
    return {"at": now, "signal": _describe(signal), **trace}


def _shows_discount(candidate: Candidate) -> bool:
    variant = candidate.campaign.variant(candidate.variant)
    return variant is not None and variant.discount is not None


def _reserved(prepared: PreparedSignal, places: Places | None) -> _Reserved:
    """Where the claim of a prepared signal starts, from what its script reserved."""
    eligible = prepared.decision.eligible
    if places is None:  # nothing to reserve
        return _Reserved(len(eligible), "", [])
    late = [
        Rejection(eligible[number - 1].campaign.id, SITE_REFUSALS[reason], str(int(limit)))
        for number, reason, limit in places.refused
    ]
    if not places.chosen:
        return _Reserved(len(eligible), "", late)
    return _Reserved(places.chosen - 1, prepared.tokens[places.chosen - 1], late)


def _refusal(candidate: Candidate, result: Any) -> Rejection | None:
    """The site's refusal in a reservation script's reply, or None when it holds a place."""
    if reply_text(result[0]) == "ok":
        return None
    reason = SITE_REFUSALS[reply_text(result[1])]
    return Rejection(candidate.campaign.id, reason, str(int(result[2])))


def _describe(signal: Signal) -> dict[str, Any]:
    if isinstance(signal, ExitIntentSignal):
        return {"type": "exit_intent", "kind": signal.kind}
    if isinstance(signal, HesitationSignal):
        return {"type": "hesitation", "seconds": signal.seconds, "page_type": signal.page_type}
    if isinstance(signal, ScrollSignal):
        return {"type": "scroll_depth", "percent": signal.percent}
    if isinstance(signal, TimeOnPageSignal):
        return {"type": "time_on_page", "seconds": signal.seconds}
    if isinstance(signal, LiveSignal):
        return {"type": "live", "campaign": signal.campaign_id}
    return {"type": "arm"}


def trigger_thresholds(campaigns: Sequence[Campaign]) -> dict[str, list[int]]:
    """The scroll depths and times on page the campaigns trigger at, each ascending, once."""
    triggers = [c.trigger for c in campaigns]
    return {
        "scroll_depth": sorted({t.scroll_depth for t in triggers if t.scroll_depth}),
        "time_on_page": sorted({t.time_on_page for t in triggers if t.time_on_page}),
    }


def signal_for(message: p.ClientMessage) -> Signal | None:
    if isinstance(message, p.ExitIntent):
        return ExitIntentSignal(message.kind)
    if isinstance(message, p.Hesitation):
        return HesitationSignal(message.seconds, message.page_type)
    if isinstance(message, p.ScrollDepth):
        return ScrollSignal(message.percent)
    if isinstance(message, p.TimeOnPage):
        return TimeOnPageSignal(message.seconds)
    return None
