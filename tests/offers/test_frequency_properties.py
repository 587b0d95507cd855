"""The site-wide frequency policy against any sequence of signals, tabs, nodes, clocks and crashes.

Two offer engines (two nodes, each with its own connection to the real Valkey) serve two tabs of
one visitor. Hypothesis draws what happens: exit intents and live offers on either tab through
either node, paints of the offers a tab received (as the widget does: only in time), reports
sent again, new visits, time passing, and a process dying after any step of an offer
(``reserved``, ``claimed``, ``sent``, ``seen_by_visitor``). Whatever happens, the visitor never
sees more overlays than the policy allows, and the report counts exactly the offers both slots
confirmed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from widget_server.metrics import Metrics
from widget_server.offers.campaign_store import CampaignStore
from widget_server.offers.decide import ExitIntentSignal, LiveSignal, period_keys
from widget_server.offers.engine import OfferEngine
from widget_server.store.client import open_store
from widget_server.store.frequency import Frequency
from widget_server.store.keys import Keys
from widget_server.store.scripts import Scripts
from widget_server.store.sites import SiteRegistry, new_site
from widget_server.visitors.session_view import SessionView
from widget_server.visitors.sessions import SessionStore
from widget_server.wire import protocol as p

from ..support import discount_campaign, message_campaign

START = 1_780_000_000.0  # a fixed moment, so that days and weeks are reproducible
TIMEOUT_S = 60
TZ = "Europe/Berlin"
STEPS = ("reserved", "claimed", "sent")


class Crash(BaseException):
    """The process died here: nothing after this line of the step ran."""


@dataclass
class Tab:
    """One open tab of the visitor, as the offer engine sees a connection."""

    site: str
    visitor: str
    session_id: str
    country: str = ""
    armed: str | None = None
    shown: str | None = None
    last_view: SessionView | None = None
    received: list[dict[str, Any]] = field(default_factory=list)  # offers, with their arrival

    async def send(self, message: p.ServerMessage) -> None:
        if isinstance(message, p.Offer):
            offer = msgspec.to_builtins(message.offer)
            self.received.append({**offer, "at": CLOCK.now, "seq": next(SENT)})


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()
SENT = itertools.count()  # the order in which offers were claimed and sent


@dataclass
class Paint:
    offer: str
    claim: str
    live: bool
    discount: bool
    claimed_at: float
    painted_at: float
    session: str
    seq: int


signal = st.tuples(
    st.just("signal"),
    st.integers(0, 1),  # tab
    st.integers(0, 1),  # node
    st.sampled_from(["exit", "exit", "live"]),
    st.sampled_from([None, None, None, *STEPS]),  # where the node dies, if it does
    st.sampled_from([True, True, False]),  # the tab paints what it gets at once
)
paint = st.tuples(
    st.just("paint"),
    st.integers(0, 3),  # which of the offers received and not painted yet
    st.integers(0, 1),  # node
    st.sampled_from([None, None, "seen_by_visitor"]),  # where the node dies, if it does
)
ops = st.lists(
    st.one_of(
        signal,
        paint,
        signal,
        paint,
        st.tuples(st.just("resend"), st.integers(0, 1), st.integers(0, 1)),
        st.tuples(st.just("wait"), st.sampled_from([1, 30, TIMEOUT_S + 1, 13 * 3600, 4 * 86400])),
        st.tuples(st.just("new_visit")),
    ),
    min_size=4,
    max_size=30,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Cases every run includes: two tabs ask before either paints; a node dying after each step.
@example(ops=[("signal", 0, 0, "exit", None, False), ("signal", 1, 1, "exit", None, True),
              ("paint", 0, 0, None)], per_session=1, per_day=2, live_per_session=1,
         visitor="v-0000")  # fmt: skip
@example(ops=[("signal", 0, 0, "live", None, False), ("signal", 1, 0, "exit", None, True),
              ("paint", 0, 1, None), ("signal", 1, 1, "exit", None, True)], per_session=2,
         per_day=3, live_per_session=1, visitor="v-0000")  # fmt: skip
@example(ops=[("signal", 0, 0, "exit", None, False), ("paint", 0, 1, "seen_by_visitor"),
              ("resend", 0, 0), ("signal", 1, 1, "exit", None, True)], per_session=1,
         per_day=2, live_per_session=1, visitor="v-0000")  # fmt: skip
@example(ops=[("signal", 0, 0, "exit", "reserved", True), ("signal", 1, 1, "exit", None, True),
              ("wait", TIMEOUT_S + 1), ("signal", 1, 1, "exit", None, True)], per_session=1,
         per_day=2, live_per_session=1, visitor="v-0000")  # fmt: skip
@example(ops=[("signal", 0, 0, "exit", "claimed", True), ("signal", 1, 1, "exit", None, True),
              ("wait", TIMEOUT_S + 1), ("signal", 1, 1, "exit", None, True)], per_session=1,
         per_day=2, live_per_session=1, visitor="v-0000")  # fmt: skip
@example(ops=[("signal", 0, 0, "exit", "sent", False), ("signal", 1, 1, "exit", None, True),
              ("paint", 0, 0, None), ("wait", TIMEOUT_S + 1), ("signal", 1, 1, "exit", None, True)],
         per_session=1, per_day=2, live_per_session=1, visitor="v-0000")  # fmt: skip
# A report whose campaign step a crash cut short, sent again once the next visit has begun
# (it counts), and sent again days later (the campaign has forgotten it: it does not).
@example(ops=[("signal", 0, 0, "exit", None, True), ("signal", 1, 0, "live", None, False),
              ("paint", 0, 0, "seen_by_visitor"), ("new_visit",), ("resend", 1, 0)],
         per_session=1, per_day=1, live_per_session=0, visitor="v-0000")  # fmt: skip
@example(ops=[("signal", 0, 0, "exit", None, True), ("signal", 1, 0, "live", None, False),
              ("paint", 0, 0, "seen_by_visitor"), ("wait", 4 * 86400), ("resend", 1, 0)],
         per_session=1, per_day=1, live_per_session=0, visitor="v-0000")  # fmt: skip
@given(
    ops=ops,
    per_session=st.integers(1, 2),
    per_day=st.integers(1, 3),
    live_per_session=st.integers(0, 1),
    visitor=st.sampled_from([f"v-{n:04d}" for n in range(12)]),
)
def test_no_history_shows_more_than_the_policy_allows(
    redis_url: str,
    ops: list[tuple[Any, ...]],
    per_session: int,
    per_day: int,
    live_per_session: int,
    visitor: str,
) -> None:
    policy = Frequency(per_session=per_session, per_day=per_day, discount_days=7,
                       live_per_session=live_per_session, live_per_day=2)  # fmt: skip
    paints, impressions = asyncio.run(_play(redis_url, policy, visitor, ops))
    event(f"overlays seen: {min(len(paints), 3)}+" if len(paints) >= 3 else
          f"overlays seen: {len(paints)}")  # fmt: skip
    event(f"a live offer seen: {any(x.live for x in paints)}")
    event(f"reports cut short by a crash: {len(paints) - len(COUNTED) > 0}")
    _check(policy, paints)
    assert impressions == Counter(x.offer for x in paints if x.claim in COUNTED)


COUNTED: set[str] = set()  # claims whose report reached both slots (set by _play)
_sites = itertools.count()


async def _play(
    redis_url: str, policy: Frequency, visitor: str, ops: list[tuple[Any, ...]]
) -> tuple[list[Paint], Counter[str]]:
    CLOCK.now = START
    COUNTED.clear()
    keys = Keys()
    site = f"fq{next(_sites)}x{id(ops) % 100_000}"
    crash_at: list[str | None] = [None]

    def after_step(step: str) -> None:
        if crash_at[0] == step:
            raise Crash(step)

    clients = [open_store(redis_url), open_store(redis_url)]
    try:
        await SiteRegistry(clients[0], keys).save(
            new_site(site, origins=["*"], timezone=TZ, frequency=policy)
        )
        store = CampaignStore(clients[0], keys)
        unlimited = {"per_session": 0, "per_visitor_day": 0, "per_visitor_week": 0,
                     "dismiss_cooldown_minutes": 0}  # fmt: skip
        for data in (
            discount_campaign("disc", priority=30, caps=unlimited),
            discount_campaign("disc2", priority=20, caps=unlimited, holdout=0.3),
            message_campaign("msg", priority=10, caps=unlimited, holdout=0.3),
            discount_campaign("flash", priority=5, caps=unlimited, trigger={"live": True}),
        ):
            await store.save(site, data, author="tests")
        engines, sessions = [], []
        for client in clients:
            scripts = Scripts.of(client)
            session_store = SessionStore(client, scripts, keys, session_ttl_s=1800,
                                         profile_ttl_s=86400 * 30, presence_ttl_s=60)  # fmt: skip
            sessions.append(session_store)
            engines.append(
                OfferEngine(
                    client,
                    scripts,
                    keys,
                    CampaignStore(client, keys),
                    session_store,
                    Metrics(),
                    sites=SiteRegistry(client, keys),
                    seen_timeout_s=TIMEOUT_S,
                    clock=CLOCK,
                    after_step=after_step,
                )
            )
        opened = await sessions[0].open(site, visitor, now=CLOCK.now)
        tabs = [Tab(site, visitor, opened.session_id), Tab(site, visitor, opened.session_id)]
        for tab in tabs:
            tab.last_view = opened.view
        paints: list[Paint] = []
        reports: dict[int, tuple[p.OfferShown, float]] = {}
        ids = itertools.count()

        async def paint_one(tab: Tab, offer: dict[str, Any], node: int, crash: str | None) -> None:
            """The widget paints an offer it received, if still in time, and reports it."""
            offer["painted"] = True
            if CLOCK.now > offer["at"] + offer["show_within"] - 5:
                return  # the widget drops an offer it could not paint in time
            paints.append(Paint(offer["id"], offer["claim"], offer["campaign"] == "flash",
                                "discount" in offer, offer["at"], CLOCK.now,
                                tab.session_id, offer["seq"]))  # fmt: skip
            report = p.OfferShown(id=f"s{next(ids)}", offer=offer["id"], claim=offer["claim"])
            reports[tabs.index(tab)] = (report, offer["at"])
            await _report(engines[node], sessions[node], tab, report, crash, crash_at)

        for op in ops:
            kind = op[0]
            if kind == "wait":
                CLOCK.now += op[1]
            elif kind == "new_visit":  # after the last one timed out
                CLOCK.now += 31 * 60
                opened = await sessions[0].open(site, visitor, now=CLOCK.now)
                for tab in tabs:
                    tab.session_id, tab.last_view, tab.armed = opened.session_id, opened.view, None
            elif kind == "signal":
                _, t, n, what, crash, paint_now = op
                tab, engine = tabs[t], engines[n]
                before = len(tab.received)
                crash_at[0] = crash
                try:
                    if what == "exit":
                        # As a connection does: the offer's place is reserved as the signal
                        # is recorded, from what this tab last knew.
                        message = p.ExitIntent(id=f"m{next(ids)}", kind="top_edge")
                        tab.last_view, prepared, places = await engine.record_signal(
                            tab, message, now=CLOCK.now
                        )
                        await engine.on_signal(tab, ExitIntentSignal("top_edge"), message.id,
                                               prepared=prepared, places=places)  # fmt: skip
                    else:
                        await engine.on_signal(tab, LiveSignal("flash"),
                                               f"live:flash:{tab.session_id}", resend=False,
                                               again=True)  # fmt: skip
                except Crash:
                    pass
                crash_at[0] = None
                if paint_now and len(tab.received) > before:
                    await paint_one(tab, tab.received[-1], n, None)
            elif kind == "paint":
                _, which, n, crash = op
                fresh = [(tab, o) for tab in tabs for o in tab.received if not o.get("painted")]
                if fresh:
                    tab, offer = fresh[which % len(fresh)]
                    await paint_one(tab, offer, n, crash)
            elif kind == "resend" and op[1] in reports:  # the widget sends an unacked report again
                tab, (report, claimed_at) = tabs[op[1]], reports[op[1]]
                counted = report.claim in COUNTED
                await _report(engines[op[2]], sessions[op[2]], tab, report, None, crash_at)
                if not counted and CLOCK.now > claimed_at + TIMEOUT_S + 86_400:
                    COUNTED.discard(report.claim)  # too late: the campaign forgot it
        impressions: Counter[str] = Counter()
        days = sorted({period_keys(START + n * 86_400, "UTC")[0]
                       for n in range(int((CLOCK.now - START) // 86_400) + 2)})  # fmt: skip
        async with clients[0].pipeline(transaction=False) as pipe:
            for campaign in ("disc", "disc2", "msg", "flash"):
                for day in days:
                    pipe.hget(keys.campaign_stats(site, campaign, day), "impressions:a")
            counts = await pipe.execute()
        for n, campaign in enumerate(("disc", "disc2", "msg", "flash")):
            found = sum(int(c or 0) for c in counts[n * len(days) : (n + 1) * len(days)])
            if found:
                impressions[f"{campaign}.a"] = found
        return paints, impressions
    finally:
        for client in clients:
            await client.aclose()


async def _report(
    engine: OfferEngine,
    sessions: SessionStore,
    tab: Tab,
    report: p.OfferShown,
    crash: str | None,
    crash_at: list[str | None],
) -> None:
    """What the connection does with an ``offer_shown``: the visitor's slot, then the engine.
    A report handled to the end counts (a copy sent again after a crash finishes it)."""
    view = await sessions.apply(tab.site, tab.visitor, tab.session_id, report, now=CLOCK.now)
    crash_at[0] = crash
    try:
        await engine.on_shown(tab, report, view)
        COUNTED.add(report.claim)
    except Crash:
        pass
    crash_at[0] = None


def _check(policy: Frequency, paints: list[Paint]) -> None:
    exits = [x for x in paints if not x.live]
    lives = [x for x in paints if x.live]
    for group, per_session, per_day in (
        (exits, policy.per_session, policy.per_day),
        (lives, policy.live_per_session, policy.live_per_day),
    ):
        by_session = Counter(x.session for x in group)
        by_day = Counter(period_keys(x.claimed_at, TZ)[0] for x in group)
        if per_session:
            assert max(by_session.values(), default=0) <= per_session, by_session
        if per_day:
            assert max(by_day.values(), default=0) <= per_day, by_day
    window = policy.discount_days * 86_400
    discounts = [x for x in paints if x.discount]
    for d in (x for x in exits if x.discount):
        for e in discounts:
            if e is d:
                continue
            if e.seq < d.seq:
                # Any discount seen before (a live one too) keeps exit discounts away a while.
                assert d.claimed_at - e.painted_at >= window, (d, e)
            elif not e.live:
                assert e.claimed_at - d.painted_at >= window, (d, e)
