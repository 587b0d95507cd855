"""The decision engine is pure: same inputs, same decision, and a reason for every campaign."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from widget_server.offers.assign import HOLDOUT, assign, bucket
from widget_server.offers.campaigns import Campaign, CampaignInvalid, Condition, parse_campaign
from widget_server.offers.decide import (
    ArmProbe,
    Candidate,
    Decision,
    ExitIntentSignal,
    HesitationSignal,
    LiveSignal,
    Reason,
    Rejection,
    ScrollSignal,
    SitePolicy,
    TimeOnPageSignal,
    VisitorState,
    _cap_rejection,
    _refusal_for_all,
    _thresholds,
    compiled,
    condition_holds,
    decide,
    holding_out,
    in_schedule,
    offers_discount,
    period_keys,
    prejudge,
    site_limit,
    targeting_miss,
)
from widget_server.store.frequency import Frequency

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC).timestamp()  # a Monday


def campaign(cid: str = "c", **overrides: Any) -> Campaign:
    data: dict[str, Any] = {
        "id": cid,
        "name": cid,
        "status": "active",
        "variants": [{"key": "a", "offer": {"kind": "message", "headline": "Hi"}}],
    }
    data.update(overrides)
    return parse_campaign(data)


def state(**overrides: Any) -> VisitorState:
    base = VisitorState(visitor="visitor-1", session_id="s1", page_type="product",
                        page_url="https://shop.test/p/1", started=NOW - 300, page_started=NOW - 60,
                        pages=3)  # fmt: skip
    return replace(base, **overrides)


EXIT = ExitIntentSignal("top_edge")


def test_priority_then_expected_value_then_id() -> None:
    low, high = campaign("low", priority=10), campaign("high", priority=90)
    rich = campaign("rich", priority=10, expected_value=5)
    decision = decide(state(), [low, high, rich], EXIT, NOW)
    assert decision.chosen is not None and decision.chosen.campaign.id == "high"
    assert [c.campaign.id for c in decision.eligible] == ["high", "rich", "low"]
    reasons = {r.campaign_id: r.reason for r in decision.rejections}
    assert reasons == {"rich": Reason.LOWER_PRIORITY, "low": Reason.LOWER_PRIORITY}


def test_each_rejection_reason() -> None:
    cases = [
        (campaign(status="paused"), state(), EXIT, Reason.NOT_ACTIVE),
        (campaign(schedule={"start": "2027-01-01T00:00:00Z"}), state(), EXIT, Reason.NOT_SCHEDULED),
        (campaign(schedule={"weekdays": [5, 6]}), state(), EXIT, Reason.NOT_SCHEDULED),
        (
            campaign(schedule={"hours": [9, 12], "timezone": "UTC"}),
            state(),
            EXIT,
            Reason.NOT_SCHEDULED,
        ),
        (campaign(trigger={"exit_intent": ["back_button"]}), state(), EXIT, Reason.WRONG_TRIGGER),
        (campaign(trigger={"min_cart_value": 50}), state(cart_value=20), EXIT, Reason.THRESHOLD),
        (campaign(trigger={"min_pages": 5}), state(), EXIT, Reason.THRESHOLD),
        (campaign(trigger={"min_time_on_site_s": 600}), state(), EXIT, Reason.THRESHOLD),
        (campaign(trigger={"left_checkout": True}), state(), EXIT, Reason.THRESHOLD),
        (campaign(trigger={"returning_visitor": True}), state(visits=1), EXIT, Reason.THRESHOLD),
        (
            campaign(
                targeting={"any": [{"all": [{"field": "device", "op": "is", "value": "mobile"}]}]}
            ),
            state(device="desktop"),
            EXIT,
            Reason.TARGETING,
        ),
        (campaign(), state(page_type="payment"), EXIT, Reason.PAYMENT_STEP),
        (campaign(), state(last_purchase=NOW - 3600), EXIT, Reason.AFTER_PURCHASE),
        (campaign(), state(shown_in_session={"c": 1}), EXIT, Reason.CAPPED_SESSION),
        (
            campaign(caps={"per_session": 0, "per_visitor_day": 1}),
            state(shown_at={"c": (NOW - 60,)}),
            EXIT,
            Reason.CAPPED_DAY,
        ),
        (
            campaign(caps={"per_session": 0, "per_visitor_day": 0, "per_visitor_week": 2}),
            state(shown_at={"c": (NOW - 86400 * 0.5, NOW - 60)}),
            EXIT,
            Reason.CAPPED_WEEK,
        ),
        (campaign(), state(dismissals={"c": (1, NOW - 60)}), EXIT, Reason.COOLDOWN),
        (
            campaign(
                variants=[
                    {
                        "key": "a",
                        "offer": {"kind": "discount", "headline": "x"},
                        "discount": {"type": "percent", "amount": 10, "min_cart_value": 50},
                    }
                ]
            ),
            state(cart_value=10),
            EXIT,
            Reason.MIN_CART,
        ),
        (
            campaign(trigger={"hesitation": {"cart": 30}}),
            state(),
            HesitationSignal(40, "product"),
            Reason.WRONG_TRIGGER,
        ),
        (
            campaign(trigger={"hesitation": {"product": 30}}),
            state(),
            HesitationSignal(10, "product"),
            Reason.WRONG_TRIGGER,
        ),
        (
            campaign(trigger={"live": True, "exit_intent": []}),
            state(),
            LiveSignal("other"),
            Reason.WRONG_TRIGGER,
        ),
        (campaign(trigger={"scroll_depth": 50}), state(), ScrollSignal(49), Reason.WRONG_TRIGGER),
        (campaign(), state(), ScrollSignal(100), Reason.WRONG_TRIGGER),
        (
            campaign(trigger={"time_on_page": 30}),
            state(),
            TimeOnPageSignal(29),
            Reason.WRONG_TRIGGER,
        ),
        (campaign(), state(), TimeOnPageSignal(3600), Reason.WRONG_TRIGGER),
        (
            campaign(trigger={"exit_intent": [], "scroll_depth": 50}),
            state(),
            EXIT,
            Reason.WRONG_TRIGGER,
        ),
        (campaign(holdout=0.5), state(visitor=_holdout_visitor(0.5)), EXIT, Reason.HOLDOUT),
    ]
    for c, s, signal, reason in cases:
        decision = decide(s, [c], signal, NOW)
        assert reason in {r.reason for r in decision.rejections}, (c, reason, decision)
        if reason != Reason.HOLDOUT:
            assert decision.chosen is None


def test_scroll_depth_and_time_on_page_trigger_at_their_thresholds() -> None:
    reading = campaign("reading", priority=5, trigger={"exit_intent": [], "scroll_depth": 50})
    lingering = campaign("lingering", trigger={"exit_intent": [], "time_on_page": 20})
    leaving = campaign("leaving", priority=1, trigger={"scroll_depth": 80})
    both = [reading, lingering, leaving]

    def chosen(signal: Any) -> str | None:
        decision = decide(state(), both, signal, NOW)
        return decision.chosen.campaign.id if decision.chosen else None

    assert chosen(ScrollSignal(30)) is None
    assert chosen(ScrollSignal(50)) == "reading"
    assert chosen(ScrollSignal(90)) == "reading"  # the higher priority of the two reached
    assert chosen(TimeOnPageSignal(19)) is None
    assert chosen(TimeOnPageSignal(20)) == "lingering"
    # Exit intent only where the marketer ticked its kinds (the default: all of them).
    assert chosen(EXIT) == "leaving"
    assert chosen(ArmProbe()) == "leaving"
    refused = decide(state(), both, ScrollSignal(60), NOW).rejections
    assert Rejection("leaving", Reason.WRONG_TRIGGER, "scrolled 60% < 80%") in refused
    assert Rejection("lingering", Reason.WRONG_TRIGGER, "no scroll-depth trigger") in refused


def test_old_campaigns_load_without_the_new_triggers() -> None:
    old = campaign(trigger={"exit_intent": ["top_edge"], "hesitation": {"cart": 30}})
    assert old.trigger.scroll_depth is None and old.trigger.time_on_page is None
    only_scroll = campaign(trigger={"exit_intent": [], "scroll_depth": 100})
    assert only_scroll.trigger.exit_intent == []
    for bad in ({"scroll_depth": 0}, {"scroll_depth": 101}, {"time_on_page": 0},
                {"time_on_page": 3601}, {"scroll_depth": "half"}):  # fmt: skip
        with pytest.raises(CampaignInvalid) as refused:
            campaign(trigger=bad)
        assert [e.path for e in refused.value.errors] == [f"trigger.{next(iter(bad))}"]


def _holdout_visitor(share: float) -> str:
    c = campaign(holdout=share)
    return next(v for v in (f"visitor-{i}" for i in range(1000)) if assign(c, v) == HOLDOUT)


def test_dismiss_cooldown_backs_off_with_repeated_ignores() -> None:
    c = campaign(caps={"dismiss_cooldown_minutes": 10})
    fifteen_min_ago = NOW - 15 * 60
    once = decide(state(dismissals={"c": (1, fifteen_min_ago)}), [c], EXIT, NOW)  # 10 min cooldown
    assert once.chosen is not None
    blocked = decide(state(dismissals={"c": (2, fifteen_min_ago)}), [c], EXIT, NOW)  # 20 min
    assert blocked.chosen is None
    assert decide(state(dismissals={"c": (3, NOW - 35 * 60)}), [c], EXIT, NOW).chosen is None


def test_targeting_or_of_and_groups_and_operators() -> None:
    c = campaign(targeting={"any": [
        {"all": [{"field": "url", "op": "matches", "value": "*/sale/*"},
                 {"field": "device", "op": "is", "value": "mobile"}]},
        {"all": [{"field": "cart_category", "op": "in", "value": ["Shoes", "Bags"]},
                 {"field": "viewed_count", "op": "gte", "value": 3}]},
    ]})  # fmt: skip
    sale_mobile = state(page_url="https://shop.test/sale/x", device="mobile")
    assert decide(sale_mobile, [c], EXIT, NOW).chosen is not None
    sale_desktop = state(page_url="https://shop.test/sale/x", device="desktop")
    assert decide(sale_desktop, [c], EXIT, NOW).chosen is None
    shoes = state(cart_categories=frozenset({"shoes"}), viewed_count=3)
    assert decide(shoes, [c], EXIT, NOW).chosen is not None
    assert decide(replace(shoes, viewed_count=2), [c], EXIT, NOW).chosen is None


def test_a_campaign_shows_only_on_the_devices_it_names() -> None:
    phones = campaign("phones", targeting={"devices": ["mobile"]})
    assert decide(state(device="mobile"), [phones], EXIT, NOW).chosen is not None
    for device, detail in (("desktop", "device desktop not targeted"),
                           ("", "device unknown not targeted")):  # fmt: skip
        refused = decide(state(device=device), [phones], EXIT, NOW)
        assert refused.chosen is None
        assert refused.rejections == (Rejection("phones", Reason.TARGETING, detail),)


def test_arm_probe_reports_when_time_thresholds_will_be_met() -> None:
    c = campaign(trigger={"min_time_on_site_s": 600})
    decision = decide(state(), [c], ArmProbe(), NOW)
    assert decision.chosen is not None
    assert decision.chosen.not_before == state().started + 600


def test_assignment_is_sticky_and_follows_the_split() -> None:
    c = campaign(holdout=0.2, variants=[
        {"key": "a", "weight": 1, "offer": {"kind": "message", "headline": "A"}},
        {"key": "b", "weight": 3, "offer": {"kind": "message", "headline": "B"}},
    ])  # fmt: skip
    visitors = [f"visitor-{i}" for i in range(20_000)]
    arms = [assign(c, v) for v in visitors]
    assert arms == [assign(c, v) for v in visitors]  # deterministic
    share = {k: arms.count(k) / len(arms) for k in ("holdout", "a", "b")}
    assert abs(share["holdout"] - 0.2) < 0.015
    assert abs(share["a"] - 0.2) < 0.015 and abs(share["b"] - 0.6) < 0.015
    new_version = c.model_copy(update={"experiment_version": 2})
    moved = sum(assign(new_version, v) != a for v, a in zip(visitors, arms, strict=True))
    assert moved > 5000  # a new experiment version is a fresh assignment
    assert 0 <= bucket("c", 1, "x") < 1


# --- properties ------------------------------------------------------------------------------

kinds = st.sampled_from(["top_edge", "back_button", "scroll_up", "tab_switch", "keyboard", "idle"])
page_types = st.sampled_from(
    ["home", "category", "product", "cart", "checkout", "payment", "other"]
)
signals = st.one_of(
    kinds.map(ExitIntentSignal),
    st.builds(HesitationSignal, st.floats(0, 600), page_types),
    st.builds(ScrollSignal, st.integers(0, 100)),
    st.builds(TimeOnPageSignal, st.integers(0, 3600)),
    st.just(ArmProbe()),
)
campaign_specs = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["active", "active", "paused", "draft"]),
        "priority": st.integers(0, 5),
        "holdout": st.sampled_from([0.0, 0.1, 0.5]),
        "trigger": st.fixed_dictionaries(
            {"exit_intent": st.lists(kinds, min_size=1, unique=True),
             "min_cart_value": st.sampled_from([0, 20, 100]),
             "min_pages": st.integers(0, 4)},
            optional={"hesitation": st.dictionaries(page_types, st.integers(1, 120), max_size=2),
                      "scroll_depth": st.integers(1, 100), "time_on_page": st.integers(1, 3600)},
        ),
        "caps": st.fixed_dictionaries(
            {"per_session": st.integers(0, 2), "per_visitor_day": st.integers(0, 3),
             "quiet_days_after_purchase": st.integers(0, 10)}
        ),
    }
)  # fmt: skip
states = st.builds(
    lambda pt, cart, pages, visits, shown, purchase_ago: state(
        page_type=pt, cart_value=cart, pages=pages, visits=visits,
        shown_in_session={"c0": shown}, last_purchase=None if purchase_ago is None
        else NOW - purchase_ago),
    page_types, st.floats(0, 500), st.integers(0, 10), st.integers(1, 5), st.integers(0, 3),
    st.none() | st.floats(0, 30 * 86400),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(campaign_specs, min_size=1, max_size=5), states, signals)
def test_every_campaign_is_chosen_or_has_a_reason(
    specs: list[dict[str, Any]], s: VisitorState, signal: Any
) -> None:
    campaigns = [campaign(f"c{i}", **spec) for i, spec in enumerate(specs)]
    decision = decide(s, campaigns, signal, NOW)
    again = decide(s, campaigns, signal, NOW)
    assert decision == again  # deterministic
    explained = {r.campaign_id for r in decision.rejections}
    chosen = decision.chosen.campaign.id if decision.chosen else None
    for c in campaigns:
        assert c.id == chosen or c.id in explained, (c.id, decision)
    for r in decision.rejections:
        assert isinstance(r.reason, Reason)
    if decision.chosen is not None:
        c = decision.chosen.campaign
        quiet = c.caps.quiet_days_after_purchase * 86400
        assert s.last_purchase is None or not quiet or NOW - s.last_purchase >= quiet
        assert not (c.caps.per_session and s.shown_in_session.get(c.id, 0) >= c.caps.per_session)
        assert not (c.caps.never_on_payment and s.page_type == "payment")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(campaign_specs, st.booleans()), min_size=1, max_size=5),
    st.lists(states, min_size=1, max_size=6),
    signals | st.sampled_from([LiveSignal("c0"), LiveSignal("c1")]),
)
def test_deciding_for_many_visitors_at_once_decides_as_one_by_one(
    specs: list[tuple[dict[str, Any], bool]], visitors: list[VisitorState], signal: Any
) -> None:
    """A live offer judges what does not depend on the visitor once per batch (prejudge);
    every visitor's decision, trace included, is the one they would get alone."""
    campaigns = [
        campaign(f"c{i}", **{**spec, "trigger": {**spec["trigger"], "live": live}})
        for i, (spec, live) in enumerate(specs)
    ]
    once = prejudge(campaigns, signal, NOW)
    for n, visitor in enumerate(visitors):
        alone = replace(visitor, visitor=f"v{n}")
        assert decide(alone, campaigns, signal, NOW, prejudged=once) == decide(
            alone, campaigns, signal, NOW
        )


def reference_decision(
    s: VisitorState, campaigns: tuple[Campaign, ...], signal: Any, now: float, site: SitePolicy
) -> Decision:
    """The decision as its rules read, one check after another for every campaign, with
    nothing worked out ahead or kept between calls."""
    eligible: list[Candidate] = []
    rejections: list[Rejection] = []
    live = isinstance(signal, LiveSignal)
    for c in campaigns:
        outcome: Candidate | Rejection | None = _refusal_for_all(c, signal, now)
        if c.status == "active" and in_schedule(c, now):
            triggered = _triggered(c, signal)
            if triggered is not None:
                assert (outcome is None) == triggered, (c.trigger, signal, outcome)
        not_before, miss = _thresholds(s, c, now, signal)
        if outcome is None and miss:
            outcome = Rejection(c.id, Reason.THRESHOLD, miss)
        if outcome is None and targeting_miss(s, c):
            outcome = Rejection(c.id, Reason.TARGETING, targeting_miss(s, c))
        outcome = outcome or _cap_rejection(s, c, now)
        if outcome is None and s.cart_value < c.min_cart_value:
            detail = f"cart {s.cart_value:g} < {c.min_cart_value:g}"
            outcome = Rejection(c.id, Reason.MIN_CART, detail)
        if outcome is None and site.frequency.limits:
            limit = site_limit(s, live, offers_discount(c), site.frequency, site.timezone, now)
            outcome = Rejection(c.id, *limit) if limit else None
        if outcome is None:
            eligible.append(Candidate(c, assign(c, s.visitor), not_before))
        else:
            assert isinstance(outcome, Rejection)
            rejections.append(outcome)
    eligible.sort(key=lambda e: (-e.campaign.priority, -e.campaign.expected_value, e.campaign.id))
    rejections += [Rejection(e.campaign.id, Reason.LOWER_PRIORITY) for e in eligible[1:]]
    chosen = eligible[0] if eligible else None
    if chosen is not None and chosen.variant == HOLDOUT:
        rejections.append(Rejection(chosen.campaign.id, Reason.HOLDOUT, "control group"))
    elif chosen is not None and live:
        held = holding_out(s.visitor, campaigns, chosen.campaign.id)
        if held is not None:
            rejections.append(Rejection(chosen.campaign.id, Reason.EXPERIMENT_HOLDOUT, held))
            return Decision(None, (), tuple(rejections))
    return Decision(chosen, tuple(eligible), tuple(rejections))


def _triggered(c: Campaign, signal: Any) -> bool | None:
    """Whether a campaign's trigger fires for a scroll-depth, time-on-page or exit signal (None
    for the others), as the marketer set it: the threshold reached, the kind ticked."""
    t = c.trigger
    if isinstance(signal, ScrollSignal):
        return t.scroll_depth is not None and signal.percent >= t.scroll_depth
    if isinstance(signal, TimeOnPageSignal):
        return t.time_on_page is not None and signal.seconds >= t.time_on_page
    if isinstance(signal, ExitIntentSignal):
        return signal.kind in t.exit_intent
    return None


full_specs = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["active", "active", "paused"]),
        "priority": st.integers(0, 3),
        "expected_value": st.sampled_from([0.0, 1.0]),
        "holdout": st.sampled_from([0.0, 0.3]),
        "trigger": st.fixed_dictionaries(
            {"exit_intent": st.lists(kinds, unique=True), "live": st.booleans(),
             "hesitation": st.dictionaries(page_types, st.integers(1, 120), max_size=2),
             "min_time_on_site_s": st.sampled_from([0, 0, 120, 900]),
             "min_time_on_page_s": st.sampled_from([0, 0, 90]),
             "min_cart_value": st.sampled_from([0, 20]),
             "min_pages": st.sampled_from([0, 0, 4]),
             "scroll_depth": st.sampled_from([None, None, 1, 50, 100]),
             "time_on_page": st.sampled_from([None, None, 1, 20, 3600])},
        ).filter(lambda t: t["exit_intent"] or t["live"] or t["hesitation"] or t["scroll_depth"]
                 or t["time_on_page"]),
        "schedule": st.sampled_from([{}, {"hours": [9, 17]}, {"weekdays": [0, 1, 2]}]),
        "caps": st.fixed_dictionaries(
            {"per_session": st.integers(0, 2), "per_visitor_day": st.integers(0, 2),
             "per_visitor_week": st.integers(0, 3), "dismiss_cooldown_minutes": st.integers(0, 60),
             "quiet_days_after_purchase": st.integers(0, 10),
             "never_on_payment": st.booleans()}
        ),
        "targeting": st.sampled_from([
            {}, {"any": [{"all": [{"field": "url", "op": "not_matches", "value": "*/sale/*"}]}]},
            {"devices": ["mobile"]},
            {"devices": ["desktop", "tablet"],
             "any": [{"all": [{"field": "viewed_count", "op": "gte", "value": 1}]}]},
            {"any": [{"all": [{"field": "device", "op": "is", "value": "mobile"}]},
                     {"all": [{"field": "viewed_count", "op": "gte", "value": 2}]}]},
        ]),
        "variants": st.sampled_from([
            [{"key": "a", "offer": {"kind": "message", "headline": "Hi"}}],
            [{"key": "a", "offer": {"kind": "message", "headline": "Hi"}},
             {"key": "b", "offer": {"kind": "discount", "headline": "10%"},
              "discount": {"type": "percent", "amount": 10, "code_strategy": "static",
                           "static_code": "TEN",
                           "min_cart_value": 10}}],
        ]),
    }
)  # fmt: skip
visits = st.builds(
    lambda n, pt, url, device, cart, pages, viewed, since, shown, seen_ago, dismissed, bought,
    site_seen: state(
        visitor=f"v{n}", page_type=pt, page_url=url, device=device, cart_value=cart,
        pages=pages, viewed_count=viewed, started=NOW - since, page_started=NOW - since / 2,
        shown_in_session={"c0": shown, "c1": shown},
        shown_at={"c0": (NOW - seen_ago,), "c2": (NOW - seen_ago, NOW - 2 * seen_ago)},
        dismissals={"c1": (dismissed, NOW - 600)} if dismissed else {},
        last_purchase=None if bought is None else NOW - bought,
        site_overlays=site_seen, site_live=site_seen, site_day="20261123",
        site_day_overlays=site_seen, site_day_live=site_seen,
        site_discount_at=NOW - 86400 * site_seen),
    st.integers(0, 3), page_types, st.sampled_from(["https://shop.test/sale/1", "https://s.t/p"]),
    st.sampled_from(["mobile", "desktop"]), st.sampled_from([0.0, 15.0, 80.0]),
    st.integers(0, 5), st.integers(0, 3), st.sampled_from([30.0, 600.0, 3600.0]),
    st.integers(0, 2), st.sampled_from([60.0, 3 * 86400.0]), st.integers(0, 2),
    st.none() | st.sampled_from([3600.0, 20 * 86400.0]), st.integers(0, 2),
)  # fmt: skip
policies = st.builds(
    lambda per_session, per_day, discount_days, live: SitePolicy(
        Frequency(per_session=per_session, per_day=per_day, discount_days=discount_days,
                  live_per_session=live, live_per_day=live), "Europe/Berlin"),
    st.integers(0, 2), st.integers(0, 2), st.sampled_from([0, 1, 7]), st.integers(0, 2),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(full_specs, min_size=1, max_size=5),
    st.lists(
        st.tuples(visits, signals | st.sampled_from([LiveSignal("c0"), LiveSignal("c1")]),
                  st.sampled_from([0, 600, 8 * 3600, 3 * 86400]), policies),
        min_size=1, max_size=6,
    ),
)  # fmt: skip
def test_a_decision_is_the_one_its_rules_give_one_check_after_another(
    specs: list[dict[str, Any]], calls: list[tuple[VisitorState, Any, int, SitePolicy]]
) -> None:
    """What the decision works out once per campaign and keeps between calls (what each
    campaign answers every visitor, compiled targeting, the arm of recent visitors, the
    site's limits once per call) never changes a decision or its reasons: visitors, signals,
    times and site policies one after another on the same campaigns, as a node decides."""
    campaigns = tuple(campaign(f"c{i}", **spec) for i, spec in enumerate(specs))
    for s, signal, later, site in calls:
        now = NOW + later
        assert decide(s, campaigns, signal, now, site) == reference_decision(
            s, campaigns, signal, now, site
        )


texts = st.sampled_from(
    [
        "",
        "Shoes",
        "shoes",
        "https://shop.test/p/1",
        "*/p/*",
        "S[h]oe?",
        "DE",
        "de",
        "new",
        "yes",
        "bags*",
        "[!a]*",
        "Ümlaut",
        "ümlaut",
    ]
)
text_fields = st.sampled_from(
    [
        "url",
        "page_type",
        "device",
        "visitor",
        "identified",
        "utm_source",
        "referrer",
        "landing_url",
        "country",
        "cart_category",
        "cart_brand",
        "cart_product",
        "viewed_count",
    ]
)
single_ops = st.sampled_from(
    ["is", "is_not", "contains", "not_contains", "matches", "not_matches", "gte", "lte"]
)


def _condition(field: str, op: str, value: Any) -> Condition | None:
    """The condition, or None where the campaign form would refuse it (gte on text...)."""
    try:
        return Condition(field=field, op=op, value=value)  # type: ignore[arg-type]
    except ValidationError:
        return None


conditions = st.one_of(
    st.builds(
        _condition, text_fields, st.sampled_from(["in", "not_in"]), st.lists(texts, max_size=3)
    ),
    st.builds(_condition, text_fields, single_ops, texts | st.integers(-1, 5).map(float)),
).filter(lambda c: c is not None)
visitors_for_targeting = st.builds(
    lambda url, country, cats, visits, viewed, ident: state(
        page_url=url, country=country, cart_categories=frozenset(cats), visits=visits,
        viewed_count=viewed, identified=ident, cart_brands=frozenset(cats[:1]),
        cart_products=frozenset(cats[1:])),
    texts, texts, st.lists(texts, max_size=3), st.integers(1, 3), st.integers(0, 5),
    st.booleans(),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(conditions, visitors_for_targeting)
def test_a_compiled_condition_holds_exactly_when_the_rule_does(
    condition: Condition, s: VisitorState
) -> None:
    assert compiled(condition)(s) == condition_holds(s, condition)


def test_a_live_offer_skips_the_holdout_of_a_running_experiment() -> None:
    """The control group of an A/B test sees nothing from the product, live offers included."""
    experiment = campaign("ab", holdout=0.5)
    live = campaign("flash", trigger={"exit_intent": [], "live": True})
    held = next(
        v for v in (f"visitor-{i}" for i in range(1000)) if assign(experiment, v) == HOLDOUT
    )
    decision = decide(state(visitor=held), [experiment, live], LiveSignal("flash"), NOW)
    assert decision.chosen is None and decision.eligible == ()
    assert (Reason.EXPERIMENT_HOLDOUT, "ab") in {
        (r.reason, r.detail) for r in decision.rejections if r.campaign_id == "flash"
    }
    treated = next(
        v for v in (f"visitor-{i}" for i in range(1000)) if assign(experiment, v) != HOLDOUT
    )
    chosen = decide(state(visitor=treated), [experiment, live], LiveSignal("flash"), NOW).chosen
    assert chosen is not None and chosen.campaign.id == "flash"
    # A paused experiment holds no one out; an exit intent is not a live offer.
    paused = campaign("ab", holdout=0.5, status="paused")
    assert decide(state(visitor=held), [paused, live], LiveSignal("flash"), NOW).chosen is not None


@settings(max_examples=200, deadline=None)
@given(st.floats(0.05, 0.5), st.integers(0, 10_000))
def test_no_live_offer_ever_reaches_a_holdout_visitor(share: float, n: int) -> None:
    experiment = campaign("ab", holdout=share)
    live = campaign("flash", trigger={"exit_intent": [], "live": True})
    visitor = f"v{n}"
    chosen = decide(state(visitor=visitor), [experiment, live], LiveSignal("flash"), NOW).chosen
    assert (chosen is None) == (assign(experiment, visitor) == HOLDOUT)


@settings(max_examples=500, deadline=None)
@given(
    st.floats(datetime(1980, 1, 1, tzinfo=UTC).timestamp(),
              datetime(2100, 1, 1, tzinfo=UTC).timestamp()),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "America/St_Johns",
                     "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kolkata"]),
)  # fmt: skip
def test_cap_periods_are_the_local_day_and_iso_week_of_the_moment(
    moment: float, timezone: str
) -> None:
    """Keys are worked out once per quarter of an hour; every moment still gets its own local
    day and week, across changes of offset (half-hour and 45-minute zones included)."""
    local = datetime.fromtimestamp(moment, ZoneInfo(timezone))
    year, week, _ = local.isocalendar()
    assert period_keys(moment, timezone) == (local.strftime("%Y%m%d"), f"{year}w{week:02d}")
