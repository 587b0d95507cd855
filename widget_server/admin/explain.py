"""Decisions in plain words: what a signal was, what was shown, and why each campaign was not.

Pure functions over the trace entries that :class:`widget_server.offers.OfferEngine` records
(``{"at", "signal", "chosen", "eligible", "rejected": [{"campaign", "reason", "detail"}],
"shown"}``), so the live feed and the visitor lookup say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..offers.assign import HOLDOUT

EXIT_KINDS = {
    "top_edge": "the pointer left through the top of the window",
    "back_button": "the back button",
    "scroll_up": "a fast scroll up",
    "tab_switch": "a switch to another tab or app",
    "keyboard": "a shortcut towards the address bar or closing the tab",
    "idle": "no activity",
}

# What each reason code means; "{detail}" is what the engine noted (a cap, a threshold...).
REASONS = {
    "not_active": "not active (status: {detail})",
    "not_scheduled": "outside its schedule (dates, weekdays or hours)",
    "wrong_trigger": "does not react to this signal ({detail})",
    "trigger_threshold": "the visitor did not meet the trigger's conditions ({detail})",
    "targeting_miss": "the visitor is not in its audience (failed: {detail})",
    "payment_step": "never shown on the payment step",
    "after_purchase": "quiet period after a purchase ({detail})",
    "capped_session": "already shown in this session (cap: {detail})",
    "capped_day": "already shown today (cap: {detail})",
    "capped_week": "already shown this week (cap: {detail})",
    "dismiss_cooldown": "dismissed recently, waiting for the cooldown ({detail})",
    "below_min_cart_value": "the cart is below the discount's minimum ({detail})",
    "holdout": "the visitor is in the holdout: qualified, and shown nothing on purpose",
    "experiment_holdout": "live offers skip the holdout of a running experiment ({detail})",
    "site_holdout": "the visitor is in the site-wide holdout: no offer, no message",
    "lower_priority": "qualified, but a campaign with a higher priority came first",
    "pool_exhausted": "no codes left in its code pool",
    "global_cap": "it reached its total number of impressions",
    "code_collision": "no unique code could be issued (use a longer code format)",
    "site_session": "site limit: {detail} offer(s) per visit",
    "site_day": "site limit: {detail} offer(s) per day",
    "site_discount": "site limit: one discount per {detail} days",
    "site_live_session": "site limit: {detail} live offer(s) per visit",
    "site_live_day": "site limit: {detail} live offer(s) per day",
}


@dataclass(frozen=True, slots=True)
class CampaignLine:
    """One campaign in one decision: its name and what happened to it."""

    campaign: str
    name: str
    outcome: str
    shown: bool


def reason_text(reason: str, detail: str = "") -> str:
    """A reason code and its detail as a phrase; unknown codes are shown as they are."""
    template = REASONS.get(reason)
    if template is None:
        return f"{reason.replace('_', ' ')}" + (f" ({detail})" if detail else "")
    if "{detail}" in template and not detail:
        return template.split(" (", 1)[0]
    return template.replace("{detail}", detail)


def signal_text(signal: Mapping[str, Any] | None, names: Mapping[str, str] | None = None) -> str:
    """What the visitor did (or what the server did) to ask for a decision."""
    signal = signal or {}
    kind = signal.get("type")
    if kind == "exit_intent":
        how = str(signal.get("kind", ""))
        return f"Exit intent: {EXIT_KINDS.get(how, how.replace('_', ' '))}"
    if kind == "hesitation":
        seconds = _number(signal.get("seconds"))
        page = str(signal.get("page_type", "other")).replace("_", " ")
        return f"Hesitation: idle {seconds} s on a {page} page"
    if kind == "scroll_depth":
        return f"Scrolled {_number(signal.get('percent'))}% of the page"
    if kind == "time_on_page":
        return f"{_number(signal.get('seconds'))} s on the page"
    if kind == "live":
        campaign = str(signal.get("campaign", ""))
        return f"Live broadcast of {(names or {}).get(campaign, campaign)}"
    if kind == "seen":
        return "The widget painted the offer sent"
    return "A check of what exit intent would show"


def outcome_text(entry: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """The decision's result in one sentence."""
    names = names or {}
    shown = entry.get("shown")
    if shown:
        campaign, _, variant = str(shown).partition(".")
        return f"Showed {names.get(campaign, campaign)} (variant {variant})"
    sent = entry.get("sent")
    if sent:
        campaign, _, variant = str(sent).partition(".")
        return (
            f"Sent {names.get(campaign, campaign)} (variant {variant}); "
            "it counts once the widget has painted it"
        )
    chosen = str(entry.get("chosen") or "")
    campaign, _, variant = chosen.partition(".")
    if chosen and variant == HOLDOUT:
        return f"Nothing shown: the visitor is in the holdout of {names.get(campaign, campaign)}"
    if chosen:
        return f"Nothing shown: {names.get(campaign, campaign)} could not be claimed"
    if not entry.get("rejected"):
        return "Nothing shown: no campaign could fire"
    return "Nothing shown: every campaign was ruled out"


def campaign_lines(
    entry: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> list[CampaignLine]:
    """Every campaign the decision looked at: the shown one first, then each with its reason."""
    names = names or {}
    lines: list[CampaignLine] = []
    shown = str(entry.get("shown") or "")
    sent = str(entry.get("sent") or "")
    if shown or sent:
        campaign, _, variant = (shown or sent).partition(".")
        name = names.get(campaign, campaign)
        what = "shown" if shown else "sent, counted once painted"
        lines.append(CampaignLine(campaign, name, f"{what} (variant {variant})", bool(shown)))
    for rejection in entry.get("rejected") or []:
        campaign = str(rejection.get("campaign", ""))
        text = reason_text(str(rejection.get("reason", "")), str(rejection.get("detail", "")))
        lines.append(CampaignLine(campaign, names.get(campaign, campaign), text, False))
    return lines


def _number(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return "?"
