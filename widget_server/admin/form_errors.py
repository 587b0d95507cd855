"""Where the campaign editor shows validation errors, and what it calls each field.

An error's path (``variants.0.offer.theme.accent``, ``schedule.hours.1``, ``targeting.any.0``) is
shown at the longest prefix the editor has an input or a fieldset for; the summary at the top of
the form names every error in words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..offers.campaigns import WORD_FIELDS, Caps, FieldError
from .campaign_form import PAGE_TYPES, TOP_LEVEL, State, as_dict, as_list

SCHEDULE_FIELDS = ("start", "end", "weekdays", "hours", "timezone")
TRIGGER_FIELDS = ("exit_intent", "hesitation", "scroll_depth", "time_on_page", "live",
                  "min_time_on_site_s", "min_time_on_page_s",
                  "min_pages", "min_cart_value", "max_cart_value", "min_cart_items",
                  "left_checkout", "returning_visitor")  # fmt: skip
CAPS_FIELDS = tuple(Caps.model_fields)
OFFER_FIELDS = ("kind", "headline", "body", "cta_label", "cta_url", "free_shipping_threshold",
                "theme", "theme.accent", "theme.background", "theme.text",
                "theme.radius", "privacy_url", "consent_label", "thanks", "layout", "two_step",
                "two_step.yes_label", "two_step.no_label", "translations")  # fmt: skip
DISCOUNT_FIELDS = ("type", "amount", "min_cart_value", "valid_minutes", "code_strategy",
                   "static_code", "code_format")  # fmt: skip
CONDITION_PARTS = ("field", "op", "value")

LABELS = {
    "id": "Campaign id", "name": "Name", "status": "Status", "priority": "Priority",
    "holdout": "Holdout share", "attribution_days": "Attribution window (days)",
    "expected_value": "Expected value", "experiment_version": "Experiment version",
    "decision_rule": "Decision rule", "planned_exposures": "Planned exposures per arm",
    "variance_reduction": "Adjust for what was known before the offer",
    "revenue_cap_percentile": "Cap revenue per visitor at percentile",
    "devices": "Devices",
    "goal": "Goal", "schedule": "Schedule", "start": "Starts", "end": "Ends",
    "weekdays": "Weekdays", "hours": "Hours", "timezone": "Time zone", "trigger": "Trigger",
    "exit_intent": "Exit-intent signals", "hesitation": "Hesitation (seconds idle)",
    "scroll_depth": "Scrolled down the page (%)", "time_on_page": "Seconds on the page",
    "live": "Live broadcast", "min_time_on_site_s": "Minimum seconds on the site",
    "min_time_on_page_s": "Minimum seconds on the page", "min_pages": "Minimum pages viewed",
    "min_cart_value": "Minimum cart value", "max_cart_value": "Maximum cart value",
    "min_cart_items": "Minimum cart items", "left_checkout": "Only after leaving checkout",
    "returning_visitor": "Visitors", "targeting": "Targeting", "caps": "Frequency caps",
    "per_session": "Per session", "per_visitor_day": "Per visitor per day",
    "per_visitor_week": "Per visitor per week",
    "dismiss_cooldown_minutes": "Pause after a dismissal (minutes)",
    "global_max_impressions": "Stop after this many impressions",
    "quiet_days_after_purchase": "Quiet days after a purchase",
    "never_on_payment": "Never on the payment step", "variants": "Variants", "key": "Key",
    "weight": "Weight", "offer": "Offer", "kind": "Kind", "headline": "Headline",
    "privacy_url": "Privacy policy link", "consent_label": "Consent sentence", "thanks": "Thanks",
    "layout": "Layout", "two_step": "Ask first (yes/no)", "yes_label": "Yes button",
    "no_label": "No button",
    "translations": "Other languages",
    "body": "Text", "cta_label": "Button label", "cta_url": "Button link",
    "free_shipping_threshold": "Free shipping from", "theme": "Theme", "accent": "Accent colour",
    "background": "Background colour", "text": "Text colour", "radius": "Corner radius (px)",
    "discount": "Discount", "type": "Discount type", "amount": "Amount",
    "valid_minutes": "Valid for (minutes)", "code_strategy": "Codes",
    "static_code": "Static code", "code_format": "Code format", "field": "Field",
    "op": "Operator", "value": "Value", "campaign": "Campaign",
}  # fmt: skip


# --- errors next to their fields ----------------------------------------------------------------


def anchors(state: State) -> set[str]:
    """Every path the editor shows errors at: inputs and the fieldsets around them."""
    found = {"campaign", "schedule", "trigger", "targeting", "targeting.any", "caps", "variants"}
    found.update(name for name in TOP_LEVEL if name not in found)
    found.update(f"schedule.{name}" for name in SCHEDULE_FIELDS)
    found.update(f"trigger.{name}" for name in TRIGGER_FIELDS)
    found.update(f"trigger.hesitation.{page}" for page in PAGE_TYPES)
    found.update(f"caps.{name}" for name in CAPS_FIELDS)
    for g, group in enumerate(as_list(as_dict(state.get("targeting")).get("any"))):
        found.update((f"targeting.any.{g}", f"targeting.any.{g}.all"))
        for r, _ in enumerate(as_list(as_dict(group).get("all"))):
            found.update(f"targeting.any.{g}.all.{r}.{part}" for part in CONDITION_PARTS)
            found.add(f"targeting.any.{g}.all.{r}")
    for v, variant in enumerate(as_list(state.get("variants"))):
        prefix = f"variants.{v}"
        found.update((prefix, f"{prefix}.key", f"{prefix}.weight", f"{prefix}.offer"))
        found.update(f"{prefix}.offer.{name}" for name in OFFER_FIELDS)
        offer = as_dict(as_dict(variant).get("offer"))
        for name in ("consent_label", "thanks"):  # by language
            found.update(f"{prefix}.offer.{name}.{code}" for code in as_dict(offer.get(name)))
        for code in as_dict(offer.get("translations")):
            if re.fullmatch(r"[a-z]{2}(-[A-Za-z]{2})?", code):  # the editor has inputs for it
                found.add(f"{prefix}.offer.translations.{code}")
                found.update(f"{prefix}.offer.translations.{code}.{name}" for name in WORD_FIELDS)
        found.add(f"{prefix}.discount")
        found.update(f"{prefix}.discount.{name}" for name in DISCOUNT_FIELDS)
    return found


def place_errors(
    errors: Iterable[FieldError], state: State
) -> tuple[dict[str, list[str]], list[tuple[str, str, str]]]:
    """Errors by the path they are shown at, and a summary of (path, label, message)."""
    known = anchors(state)
    placed: dict[str, list[str]] = {}
    summary: list[tuple[str, str, str]] = []
    for error in errors:
        parts = error.path.split(".")
        anchor = next(
            (p for p in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if p in known),
            "campaign",
        )
        message = plain_message(error.message)
        placed.setdefault(anchor, []).append(message)
        summary.append((anchor, describe(anchor), message))
    return placed, summary


def plain_message(message: str) -> str:
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def describe(path: str) -> str:
    """A person's name for a field path: ``variants.1.offer.headline`` → Variant 2: Headline."""
    parts = path.split(".")
    if parts[0] == "variants" and len(parts) > 1 and parts[1].isdigit():
        rest = [p for p in parts[2:] if p not in ("offer",)]
        where = f"Variant {int(parts[1]) + 1}" + (f": {label(rest[-1])}" if rest else "")
        if rest[:1] == ["translations"] and len(rest) == 3:
            where += f" ({rest[1]})"  # Variant 1: Headline (de)
        return where
    if parts[:2] == ["targeting", "any"] and len(parts) > 2:
        where = f"Targeting group {int(parts[2]) + 1}"
        if len(parts) > 4:
            where += f", condition {int(parts[4]) + 1}"
        return where + (f": {label(parts[5])}" if len(parts) > 5 else "")
    if parts[0] == "trigger" and len(parts) == 3 and parts[1] == "hesitation":
        return f"Hesitation on {parts[2].replace('_', ' ')} pages"
    return label(parts[-1])


def label(name: str) -> str:
    return LABELS.get(name.rsplit(".", 1)[-1], name)
