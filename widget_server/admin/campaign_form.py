"""The campaign editor's form, as pure functions (no I/O).

Every input is named after the field's path in the campaign model (``variants.0.offer.headline``),
so a validation error's path leads straight to its input. A *form state* is the nested structure
of what the user typed (strings, booleans for checkboxes); it is what the editor renders, and it
becomes campaign data for validation with :func:`campaign_data`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, get_args
from zoneinfo import ZoneInfo

from ..offers.audience import FIELD_WORDS, OP_WORDS
from ..offers.campaigns import (
    ALL_DEVICES,
    ALL_EXIT_KINDS,
    Campaign,
    Caps,
    ConditionField,
    ConditionOp,
    Schedule,
    Theme,
    Trigger,
)
from ..wire.protocol import PageType
from .form import Form

State = dict[str, Any]
PAGE_TYPES: tuple[str, ...] = get_args(PageType)
EXIT_KINDS: tuple[str, ...] = tuple(ALL_EXIT_KINDS)
CONDITION_FIELDS: tuple[str, ...] = get_args(ConditionField)
CONDITION_OPS: tuple[str, ...] = get_args(ConditionOp)
# The editor's names for the targeting fields and operators (the values stay the model's).
FIELD_LABELS = {name: words[0] for name, words in FIELD_WORDS.items()}
OP_LABELS = {**OP_WORDS, "matches": "looks like (wildcards)"}
# Values the value field suggests: page types, devices, new/returning, yes/no.
KNOWN_VALUES = (*PAGE_TYPES, "desktop", "tablet", "mobile", "new", "returning", "yes", "no")
# What the value field suggests for each targeting field (value, label); the cart's categories
# and brands come from the site's catalog.
COUNTRIES = (
    ("AT", "Austria"), ("AU", "Australia"), ("BE", "Belgium"), ("BG", "Bulgaria"),
    ("BR", "Brazil"), ("CA", "Canada"), ("CH", "Switzerland"), ("CN", "China"),
    ("CY", "Cyprus"), ("CZ", "Czechia"), ("DE", "Germany"), ("DK", "Denmark"),
    ("EE", "Estonia"), ("ES", "Spain"), ("FI", "Finland"), ("FR", "France"),
    ("GB", "United Kingdom"), ("GR", "Greece"), ("HR", "Croatia"), ("HU", "Hungary"),
    ("IE", "Ireland"), ("IN", "India"), ("IS", "Iceland"), ("IT", "Italy"), ("JP", "Japan"),
    ("LI", "Liechtenstein"), ("LT", "Lithuania"), ("LU", "Luxembourg"), ("LV", "Latvia"),
    ("MT", "Malta"), ("MX", "Mexico"), ("NL", "Netherlands"), ("NO", "Norway"),
    ("NZ", "New Zealand"), ("PL", "Poland"), ("PT", "Portugal"), ("RO", "Romania"),
    ("RS", "Serbia"), ("SE", "Sweden"), ("SI", "Slovenia"), ("SK", "Slovakia"),
    ("TR", "Turkey"), ("UA", "Ukraine"), ("US", "United States"), ("ZA", "South Africa"),
)  # fmt: skip
TRAFFIC_SOURCES = ("google", "bing", "facebook", "instagram", "tiktok", "pinterest",
                   "youtube", "linkedin", "x", "newsletter", "email", "chatgpt.com", "idealo",
                   "awin")  # fmt: skip
TRAFFIC_MEDIUMS = ("cpc", "organic", "email", "social", "paid_social", "referral", "affiliate",
                   "display", "sms", "push")  # fmt: skip


def value_choices(
    categories: Sequence[str] = (), brands: Sequence[str] = ()
) -> dict[str, list[tuple[str, str]]]:
    """The value pickers' suggestions by targeting field: ``(value, label)``."""

    def same(values: Sequence[str]) -> list[tuple[str, str]]:
        return [(v, "") for v in values]

    return {
        "page_type": same(PAGE_TYPES),
        "device": [("desktop", "Desktop"), ("tablet", "Tablet"), ("mobile", "Phone")],
        "visitor": [("new", "New visitor"), ("returning", "Returning visitor")],
        "identified": [("yes", "Known by email"), ("no", "Not known")],
        "country": list(COUNTRIES),
        "utm_source": same(TRAFFIC_SOURCES),
        "utm_medium": same(TRAFFIC_MEDIUMS),
        "cart_category": same(categories),
        "cart_brand": same(brands),
    }


LIST_OPS = ("in", "not_in")
NUMBER_OPS = ("gte", "lte")
MULTI_VALUED = ("schedule.weekdays", "trigger.exit_intent", "targeting.devices")
CHECKBOXES = ("trigger.live", "trigger.left_checkout", "caps.never_on_payment",
              "variance_reduction")  # fmt: skip
TOP_LEVEL = ("id", "name", "status", "priority", "schedule", "trigger", "targeting", "variants",
             "holdout", "caps", "goal", "attribution_days", "expected_value",
             "experiment_version", "decision_rule", "planned_exposures",
             "variance_reduction", "revenue_cap_percentile")  # fmt: skip
MAX_FIELDS = 3000
MAX_VARIANTS = 10
MAX_GROUPS = 20
MAX_CONDITIONS = 20
# A name's parts: lower-case words and indices; a locale with a region (``de-AT``) also.
_NAME = re.compile(r"^[a-z_]+(\.[a-z0-9_]+(-[A-Za-z]{2})?){0,6}$")
_LOCALE = re.compile(r"[a-z]{2}(-[A-Za-z]{2})?")
_INDEX = re.compile(r"^\d{1,3}$")
_ACTION = re.compile(
    r"^(add:(variants|targeting\.any|targeting\.any\.\d{1,2}\.all)"
    r"|remove:(variants\.\d{1,2}|targeting\.any\.\d{1,2}|targeting\.any\.\d{1,2}\.all\.\d{1,2}))$"
)

# --- building a state --------------------------------------------------------------------------


def blank_condition() -> State:
    return {"field": "", "op": "is", "value": ""}


def blank_discount(kind: str = "") -> State:
    return {"type": kind, "amount": "10" if kind else "", "min_cart_value": "",
            "valid_minutes": "30", "code_strategy": "generated", "static_code": "",
            "code_format": "SAVE-{XXXXXX}"}  # fmt: skip


def blank_two_step() -> State:
    """No yes/no question: both labels empty (either one filled asks first)."""
    return {"yes_label": "", "no_label": ""}


def blank_variant(key: str) -> State:
    return {
        "key": key,
        "weight": "1",
        "offer": {
            "kind": "discount",
            "layout": "popup",
            "headline": "",
            "body": "",
            "cta_label": "",
            "cta_url": "",
            "free_shipping_threshold": "",
            "theme": Theme().model_dump(),
            "translations": {},
            "consent_label": {},
            "thanks": {},
            "privacy_url": "",
            "two_step": blank_two_step(),
        },
        "discount": blank_discount("percent"),
    }


def blank_state() -> State:
    """A new campaign: a draft with one discount variant and the model's defaults."""
    state: State = {
        "id": "", "name": "", "status": "draft", "priority": "100", "holdout": "0",
        "attribution_days": "7", "expected_value": "0", "experiment_version": "1",
        "decision_rule": "sequential", "planned_exposures": "", "goal": "purchase",
        "variance_reduction": True, "revenue_cap_percentile": "99",
        "targeting": {"devices": list(ALL_DEVICES), "any": []},
        "variants": [blank_variant("a")],
    }  # fmt: skip
    state["schedule"] = _schedule_state(json.loads(Schedule().model_dump_json()))
    state["trigger"] = _trigger_state(json.loads(Trigger().model_dump_json()))
    state["caps"] = {k: ("" if v is None else v) for k, v in Caps().model_dump().items()}
    return state


def state_from_campaign(campaign: Campaign) -> State:
    """The editor's state for a stored campaign."""
    data: State = json.loads(campaign.model_dump_json())
    data.pop("version", None)
    data.pop("experiment_started", None)  # the store's
    if data.get("planned_exposures") is None:
        data["planned_exposures"] = ""
    if data.get("revenue_cap_percentile") is None:
        data["revenue_cap_percentile"] = ""  # not capped
    data["schedule"] = _schedule_state(data["schedule"])
    data["trigger"] = _trigger_state(data["trigger"])
    data["caps"] = {k: ("" if v is None else v) for k, v in data["caps"].items()}
    for group in data["targeting"]["any"]:
        for condition in group["all"]:
            value = condition["value"]
            condition["value"] = ", ".join(value) if isinstance(value, list) else value
    for variant in data["variants"]:
        offer = variant["offer"]
        offer["cta_url"] = offer.get("cta_url") or ""
        offer["privacy_url"] = offer.get("privacy_url") or ""
        offer["two_step"] = offer.get("two_step") or blank_two_step()
        if offer.get("free_shipping_threshold") is None:
            offer["free_shipping_threshold"] = ""
        discount = variant.get("discount")
        variant["discount"] = (
            {k: ("" if v is None else v) for k, v in discount.items()}
            if discount
            else blank_discount()
        )
    return data


def _schedule_state(schedule: State) -> State:
    zone = ZoneInfo(schedule.get("timezone") or "UTC")
    for name in ("start", "end"):
        schedule[name] = _local_minutes(schedule.get(name), zone)
    hours = schedule.get("hours") or ["", ""]
    schedule["hours"] = [str(h) for h in hours]
    return schedule


def _local_minutes(value: str | None, zone: ZoneInfo) -> str:
    """An ISO datetime as the ``datetime-local`` input shows it, in the schedule's zone."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(zone).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M")


def _trigger_state(trigger: State) -> State:
    visitors = trigger.get("returning_visitor")
    trigger["returning_visitor"] = "" if visitors is None else ("yes" if visitors else "no")
    for name in ("max_cart_value", "scroll_depth", "time_on_page"):
        if trigger.get(name) is None:
            trigger[name] = ""
    return trigger


# --- reading a submitted form ------------------------------------------------------------------


def state_from_form(form: Form) -> State:
    """The nested state of a submitted editor form; unknown or malformed names are ignored."""
    root: State = {}
    for count, (name, values) in enumerate(form.fields.items()):
        if count > MAX_FIELDS:
            break
        if not _NAME.match(name) or name.split(".")[0] not in TOP_LEVEL or name in CHECKBOXES:
            continue
        _put(root, name.split("."), list(values) if name in MULTI_VALUED else values[-1])
    for name in CHECKBOXES:
        _put(root, name.split("."), name in form.fields)
    for name in MULTI_VALUED:
        parent, _, leaf = name.partition(".")
        root.setdefault(parent, {}).setdefault(leaf, [])
    state: State = _listify(root)
    targeting = state["targeting"] = as_dict(state.get("targeting"))
    targeting["any"] = as_list(targeting.get("any"))
    if not as_list(state.get("variants")):
        state["variants"] = [blank_variant("a")]
    return state


def _put(root: State, parts: list[str], value: Any) -> None:
    node = root
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _listify(node: Any) -> Any:
    """Dicts keyed only by small numbers become lists, in numeric order (indices compact)."""
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(_INDEX.match(key) for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def normalized(state: State) -> State:
    """Without the targeting rows left blank and the groups left empty."""
    groups = []
    for group in as_list(as_dict(state.get("targeting")).get("any")):
        rows = [c for c in as_list(as_dict(group).get("all")) if _filled(c)]
        if rows:
            groups.append({"all": rows})
    return {**state, "targeting": {**as_dict(state.get("targeting")), "any": groups}}


def _filled(condition: Any) -> bool:
    c = as_dict(condition)
    return bool(str(c.get("field", "")).strip() or str(c.get("value", "")).strip())


def apply_action(state: State, action: str) -> State | None:
    """Add or remove a variant, a targeting group or a condition (the editor's buttons without
    JavaScript). None when ``action`` is not one."""
    if not _ACTION.match(action):
        return None
    verb, _, path = action.partition(":")
    parts = path.split(".")
    if verb == "remove":
        container = _walk(state, parts[:-1])
        index = int(parts[-1])
        last_variant = parts[0] == "variants" and isinstance(container, list) and len(container) < 2
        if isinstance(container, list) and index < len(container) and not last_variant:
            del container[index]
        return state
    container = _walk(state, parts)
    if isinstance(container, list):
        if path == "variants" and len(container) < MAX_VARIANTS:
            container.append(blank_variant(_free_key(container)))
        elif path == "targeting.any" and len(container) < MAX_GROUPS:
            container.append({"all": [blank_condition()]})
        elif path.endswith(".all") and len(container) < MAX_CONDITIONS:
            container.append(blank_condition())
    return state


def _walk(state: State, parts: list[str]) -> Any:
    node: Any = state
    for part in parts:
        if isinstance(node, dict):
            node = node.setdefault(part, [] if part in ("any", "all", "variants") else {})
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _free_key(variants: list[Any]) -> str:
    used = {str(as_dict(v).get("key", "")) for v in variants}
    return next(k for k in "abcdefghijklmnop" if k not in used)


LOCALIZED = ("consent_label", "thanks", "translations")


def text_locales(state: State, site_locale: str, languages: Sequence[str] = ()) -> list[str]:
    """The languages the editor offers for the localized texts: the site's, English, the other
    languages the shop sells in (``languages``), and any a variant already has (plain language
    codes: a form field name holds no region). The site's comes first."""
    own = site_locale.split("-")[0]
    found = {own, "en", *(code for code in languages if re.fullmatch(r"[a-z]{2}", code))}
    for variant in as_list(state.get("variants")):
        offer = as_dict(as_dict(variant).get("offer"))
        for field in LOCALIZED:
            found.update(k for k in as_dict(offer.get(field)) if re.fullmatch(r"[a-z]{2}", k))
    return sorted(found, key=lambda code: (code != own, code))


def translation_locales(state: State, locales: Sequence[str], site_locale: str) -> list[str]:
    """The locales a variant's headline, body and button label can be translated into: all of
    :func:`text_locales` but the site's own language (its texts are the base fields), and any
    locale a variant has a translation into already (``de-AT`` too, so it is kept on save)."""
    own = site_locale.split("-")[0]
    offered = [code for code in locales if code != own]
    found = {
        code
        for variant in as_list(state.get("variants"))
        for code in as_dict(as_dict(as_dict(variant).get("offer")).get("translations"))
        if _LOCALE.fullmatch(code)
    }
    return offered + sorted(found - set(offered))


# --- from state to campaign data ----------------------------------------------------------------


def campaign_data(state: State) -> dict[str, Any]:
    """What :func:`~widget_server.offers.campaigns.parse_campaign` validates: empty inputs fall back
    to the model's defaults, ``in`` values are split at commas, numeric comparisons get numbers."""
    data: dict[str, Any] = _drop_empty(state)
    if "revenue_cap_percentile" in state and _empty(state["revenue_cap_percentile"]):
        data["revenue_cap_percentile"] = None  # an empty cap: revenue is not capped
    trigger = data.setdefault("trigger", {})
    visitors = trigger.pop("returning_visitor", "")
    if visitors in ("yes", "no"):
        trigger["returning_visitor"] = visitors == "yes"
    schedule = data.setdefault("schedule", {})
    if not schedule.get("hours"):
        schedule.pop("hours", None)
    for group in as_list(as_dict(data.get("targeting")).get("any")):
        for condition in as_list(as_dict(group).get("all")):
            if isinstance(condition, dict):
                condition["value"] = _condition_value(condition)
    for variant in as_list(data.get("variants")):
        if isinstance(variant, dict) and not as_dict(variant.get("discount")).get("type"):
            variant.pop("discount", None)
        offer = as_dict(as_dict(variant).get("offer"))
        if "two_step" in offer and not offer["two_step"]:
            offer.pop("two_step")  # both labels empty: no question first
        if isinstance(offer.get("translations"), dict):  # a language left blank: none
            offer["translations"] = {k: v for k, v in offer["translations"].items() if v}
    return data


def _condition_value(condition: dict[str, Any]) -> Any:
    raw = str(condition.get("value", "")).strip()
    op = condition.get("op")
    if op in LIST_OPS:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if op in NUMBER_OPS:
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _drop_empty(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_empty(v) for k, v in node.items() if not _empty(v)}
    if isinstance(node, list):
        return [_drop_empty(v) for v in node if not _empty(v)]
    return node.strip() if isinstance(node, str) else node


def _empty(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
