"""The campaign model: every mistake comes back as a field-level error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from widget_server.offers.campaigns import CampaignInvalid, parse_campaign
from widget_server.shipped import EXAMPLES_DIR

ROOT = Path(__file__).resolve().parents[2]


def base(**overrides: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "id": "c1",
        "name": "Test",
        "status": "active",
        "variants": [{"key": "a", "offer": {"kind": "message", "headline": "Hi"}}],
    }
    campaign.update(overrides)
    return campaign


def errors_of(data: Any) -> dict[str, str]:
    with pytest.raises(CampaignInvalid) as info:
        parse_campaign(data)
    return {e.path: e.message for e in info.value.errors}


def test_example_campaigns_are_valid() -> None:
    examples = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())
    kinds = {parse_campaign(c).variants[0].offer.kind for c in examples}
    assert kinds == {
        "discount",
        "similar_products",
        "free_shipping_progress",
        "email_capture",
        "message",
    }


def test_defaults_are_sensible() -> None:
    campaign = parse_campaign(base())
    assert campaign.caps.per_session == 1
    assert campaign.caps.never_on_payment
    assert "top_edge" in campaign.trigger.exit_intent
    assert campaign.attribution_days == 7


def test_every_invalid_field_is_reported_with_its_path() -> None:
    errors = errors_of(
        base(
            id="Bad Id!",
            priority=-1,
            holdout=0.9,
            variants=[
                {"key": "a", "offer": {"kind": "discount", "headline": ""}},
                {
                    "key": "b",
                    "offer": {"kind": "message", "headline": "x", "cta_url": "javascript:alert(1)"},
                },
            ],
        )
    )
    assert "id" in errors and "priority" in errors and "holdout" in errors
    assert "variants.0.offer.headline" in errors
    assert "variants.1.offer.cta_url" in errors
    assert "http(s)" in errors["variants.1.offer.cta_url"]


@pytest.mark.parametrize(
    ("overrides", "path", "fragment"),
    [
        ({"schedule": {"timezone": "Mars/Olympus"}}, "schedule.timezone", "unknown time zone"),
        (
            {"schedule": {"start": "2026-02-01T00:00:00", "end": "2026-01-01T00:00:00"}},
            "schedule",
            "end must be after start",
        ),
        (
            {"trigger": {"exit_intent": [], "hesitation": {}, "live": False}},
            "trigger",
            "needs exit_intent",
        ),
        ({"trigger": {"exit_intent": ["telepathy"]}}, "trigger.exit_intent.0", "Input should be"),
        (
            {"targeting": {"any": [{"all": [{"field": "url", "op": "in", "value": "x"}]}]}},
            "targeting.any.0.all.0",
            "needs a list",
        ),
        (
            {"variants": [{"key": "a", "offer": {"kind": "discount", "headline": "x"}}]},
            "variants.0",
            "needs a discount",
        ),
        (
            {
                "variants": [
                    {
                        "key": "a",
                        "offer": {"kind": "discount", "headline": "x"},
                        "discount": {"type": "percent", "amount": 150},
                    }
                ]
            },
            "variants.0.discount",
            "between 0 and 100",
        ),
        (
            {
                "variants": [
                    {
                        "key": "a",
                        "offer": {"kind": "discount", "headline": "x"},
                        "discount": {
                            "type": "fixed",
                            "amount": 5,
                            "code_strategy": "generated",
                            "code_format": "SAVE-{XX}",
                        },
                    }
                ]
            },
            "variants.0.discount",
            "random part",
        ),
        (
            {
                "variants": [
                    {"key": "a", "offer": {"kind": "message", "headline": "x"}},
                    {"key": "a", "offer": {"kind": "message", "headline": "y"}},
                ]
            },
            "campaign",
            "unique",
        ),
        (
            {
                "variants": [
                    {
                        "key": "a",
                        "offer": {"kind": "message", "headline": "x", "theme": {"accent": "red"}},
                    }
                ]
            },
            "variants.0.offer.theme.accent",
            "colour",
        ),
        ({"unknown_field": 1}, "unknown_field", "Extra inputs"),
    ],
)
def test_specific_field_errors(overrides: dict[str, Any], path: str, fragment: str) -> None:
    errors = errors_of(base(**overrides))
    assert path in errors, errors
    assert fragment in errors[path]


def test_layouts_and_the_two_step_question() -> None:
    old = parse_campaign(base())  # stored before layouts existed: the popup, no question
    assert old.variants[0].offer.layout == "popup" and old.variants[0].offer.two_step is None
    capture = {"kind": "email_capture", "headline": "Want 10% off?", "layout": "slide_in",
               "two_step": {"yes_label": "Yes!"}}  # fmt: skip
    offer = parse_campaign(base(variants=[{"key": "a", "offer": capture}])).variants[0].offer
    assert offer.layout == "slide_in"
    assert offer.two_step is not None
    assert (offer.two_step.yes_label, offer.two_step.no_label) == ("Yes!", "No, thanks")
    errors = errors_of(
        base(variants=[
            {"key": "a", "offer": {"kind": "message", "headline": "x", "layout": "fullscreen"}},
            {"key": "b", "offer": {**capture, "two_step": {"no_label": "n" * 41}}},
            {"key": "c", "offer": {"kind": "message", "headline": "x", "two_step": {}}},
        ])
    )  # fmt: skip
    assert errors["variants.0.offer.layout"] == (
        "Input should be 'popup', 'slide_in', 'bar_top' or 'bar_bottom'"
    )
    assert "at most 40 characters" in errors["variants.1.offer.two_step.no_label"]
    assert "for email capture offers" in errors["variants.2.offer"]


def test_json_text_and_garbage() -> None:
    assert parse_campaign(json.dumps(base())).id == "c1"
    assert errors_of("{not json")
    assert errors_of([1, 2, 3])
