"""A campaign's audience in one sentence: in words a marketer uses, never in field codes."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from widget_server.offers.audience import audience_sentence, money
from widget_server.offers.campaigns import ConditionField, ConditionOp, parse_campaign
from widget_server.shipped import EXAMPLES_DIR


def campaign(**overrides: Any) -> Any:
    data: dict[str, Any] = {"id": "c", "name": "c", "status": "active",
                            "variants": [{"key": "a", "offer": {"kind": "message",
                                                                "headline": "Hi"}}]}  # fmt: skip
    data.update(overrides)
    return parse_campaign(data)


def test_the_sentence_says_who_where_and_when() -> None:
    rule = {"any": [{"all": [{"field": "page_type", "op": "is", "value": "product"},
                             {"field": "device", "op": "is", "value": "mobile"}]}]}  # fmt: skip
    new_on_phones = campaign(trigger={"returning_visitor": False, "min_cart_value": 30},
                             targeting=rule)  # fmt: skip
    assert audience_sentence(new_on_phones, "EUR") == (
        "Shown to new visitors on product pages, on phones, when leaving with a cart over €30."
    )
    examples = [parse_campaign(c) for c in json.loads((EXAMPLES_DIR / "demo-campaigns.json")
                                                      .read_text())]  # fmt: skip
    assert [audience_sentence(c, "EUR") for c in examples] == [
        "Shown to visitors except on thank you or payment pages, when leaving with a cart over"
        " €30.",
        "Shown to visitors on product pages, when leaving.",
        "Shown to visitors, after 20 s without a move on cart pages with a cart up to €49.99,"
        " with at least 1 item(s) in the cart.",
        "Shown to new visitors not known by email, when leaving with an empty cart, after at least"
        " 2 page(s).",
        "Shown to visitors, when a live offer starts.",
    ]


def test_several_groups_schedules_and_other_conditions() -> None:
    source = {"field": "utm_source", "op": "is", "value": "newsletter"}
    viewed = {"field": "viewed_count", "op": "gte", "value": 3}
    country = {"field": "country", "op": "in", "value": ["DE", "AT"]}
    either = {"any": [{"all": [source]}, {"all": [viewed, country]}]}
    text = audience_sentence(
        campaign(targeting=either, trigger={"exit_intent": ["top_edge"], "left_checkout": True},
                 schedule={"weekdays": [0, 1, 2, 3, 4], "hours": [9, 18],
                           "timezone": "Europe/Berlin"}),
        "CHF",
    )  # fmt: skip
    assert text == (
        "Shown to visitors who left the checkout, when leaving, if any of: (the traffic source is"
        " “newsletter”) or (the products viewed is at least 3 and the country is one of “DE” or"
        " “AT”), on Mon, Tue, Wed, Thu, Fri from 9:00 to 18:00 (Europe/Berlin)."
    )
    assert money(30, "CHF") == "30 CHF" and money(12.5, "USD") == "$12.50"
    devices = campaign(targeting={"devices": ["mobile", "desktop"]})
    assert audience_sentence(devices) == "Shown to visitors on desktops or phones, when leaving."


def test_scroll_depth_and_time_on_page_are_said_as_moments() -> None:
    both = campaign(trigger={"exit_intent": [], "scroll_depth": 50, "time_on_page": 20})
    assert audience_sentence(both) == (
        "Shown to visitors, after scrolling 50% of the page or after 20 seconds on the page."
    )
    also_leaving = campaign(trigger={"scroll_depth": 75})
    assert audience_sentence(also_leaving) == (
        "Shown to visitors, when leaving or after scrolling 75% of the page."
    )


FIELDS: tuple[str, ...] = get_args(ConditionField)
OPS: tuple[str, ...] = get_args(ConditionOp)
# Field and operator codes that must never show; the plain words among them may.
PLAIN = {"is", "in", "contains", "matches", "url", "device", "country", "visitor", "referrer",
         "identified"}  # fmt: skip
CODES = {*FIELDS, *OPS, "min_cart_value", "max_cart_value", "returning_visitor", "exit_intent",
         "page_type", "thank_you", "left_checkout", "scroll_depth",
         "time_on_page"} - PLAIN  # fmt: skip
words = st.sampled_from(["shoes", "Summer sale", "*/sale/*", "DE", "mobile", "new", "yes"])
conditions = st.builds(
    lambda field, op, value, many: {"field": field, "op": op,
                                    "value": 2 if op in ("gte", "lte") else
                                    (many if op in ("in", "not_in") else value)},
    st.sampled_from(FIELDS), st.sampled_from(OPS), words, st.lists(words, min_size=1, max_size=3),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(conditions, min_size=1, max_size=3), max_size=3),
    st.fixed_dictionaries({}, optional={
        "returning_visitor": st.booleans(), "min_cart_value": st.sampled_from([0, 25.5]),
        "min_pages": st.integers(0, 3), "left_checkout": st.booleans(),
        "hesitation": st.dictionaries(st.sampled_from(["cart", "thank_you"]), st.integers(1, 60),
                                      max_size=1),
        "scroll_depth": st.integers(1, 100), "time_on_page": st.integers(1, 3600),
        "live": st.booleans()}),
)  # fmt: skip
def test_any_campaign_reads_as_one_sentence_without_field_codes(
    groups: list[list[dict[str, Any]]], trigger: dict[str, Any]
) -> None:
    try:
        c = campaign(targeting={"any": [{"all": g} for g in groups]}, trigger=trigger)
    except Exception:  # a trigger that never fires is refused by the model: not a campaign
        return
    text = audience_sentence(c, "EUR")
    assert text.startswith("Shown to ") and text.endswith(".") and "\n" not in text
    tokens = set(re.findall(r"[a-z_]+", text.replace("“", " ").replace("”", " ")))
    assert not tokens & CODES, (tokens & CODES, text)
