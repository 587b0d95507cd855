"""A campaign's audience and trigger in one plain sentence, for marketers:
"Shown to new visitors on product pages, on phones, when leaving with a cart over €30."

Pure: built from the campaign alone (no field names or operator codes in it), shown on the
campaign's page and in the editor.
"""

from __future__ import annotations

from collections.abc import Sequence

from .campaigns import Campaign, Condition, Trigger

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
_DEVICES = {"mobile": "phones", "desktop": "desktops", "tablet": "tablets"}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Each targeting field's name in the editor and in a sentence; each operator in words.
FIELD_WORDS: dict[str, tuple[str, str]] = {
    "url": ("Page address", "the page address"), "page_type": ("Page type", "the page type"),
    "device": ("Device (desktop, tablet, phone)", "the device"),
    "visitor": ("New or returning", "the visitor"),
    "identified": ("Known by email (yes or no)", "known by email"),
    "utm_source": ("Traffic source", "the traffic source"),
    "utm_medium": ("Traffic medium", "the traffic medium"),
    "utm_campaign": ("Ad campaign", "the ad campaign"),
    "referrer": ("Referring site", "the referring site"),
    "landing_url": ("Landing page", "the landing page"),
    "cart_category": ("Category in the cart", "a category in the cart"),
    "cart_brand": ("Brand in the cart", "a brand in the cart"),
    "cart_product": ("Product in the cart", "a product in the cart"),
    "viewed_count": ("Products viewed", "the products viewed"),
    "country": ("Country", "the country"),
}  # fmt: skip
OP_WORDS = {
    "is": "is", "is_not": "is not", "contains": "contains", "not_contains": "does not contain",
    "matches": "looks like", "not_matches": "does not look like", "in": "is one of",
    "not_in": "is none of", "gte": "is at least", "lte": "is at most",
}  # fmt: skip


def money(amount: float, currency: str = "") -> str:
    """``€30``, ``$12.50``, ``30 CHF``: whole amounts without decimals."""
    number = f"{amount:,.0f}" if float(amount).is_integer() else f"{amount:,.2f}"
    symbol = _SYMBOLS.get(currency.upper())
    if symbol:
        return symbol + number
    return f"{number} {currency}".strip()


def audience_sentence(campaign: Campaign, currency: str = "") -> str:
    """Who sees the campaign and when, in words."""
    groups = [list(group.all) for group in campaign.targeting.any]
    common = groups[0] if len(groups) == 1 else []
    who = _who(campaign.trigger, common)
    devices = [] if campaign.targeting.every_device else campaign.targeting.devices
    folded, rest = _folded(common, devices)
    parts = [f"Shown to {who}{folded}"]
    parts.append(_when(campaign.trigger, currency))
    if rest:
        parts.append("if " + " and ".join(_condition(c) for c in rest))
    if len(groups) > 1:
        options = ["(" + " and ".join(_condition(c) for c in group) + ")" for group in groups]
        parts.append("if any of: " + " or ".join(options))
    schedule = _schedule(campaign)
    if schedule:
        parts.append(schedule)
    return ", ".join(part for part in parts if part) + "."


def _who(trigger: Trigger, conditions: Sequence[Condition]) -> str:
    returning = trigger.returning_visitor
    for c in conditions:
        if c.field == "visitor" and c.op in ("is", "is_not") and isinstance(c.value, str):
            wants_returning = c.value.lower() == "returning"
            returning = wants_returning if c.op == "is" else not wants_returning
    who = {None: "visitors", True: "returning visitors", False: "new visitors"}[returning]
    for c in conditions:
        if c.field == "identified" and c.op in ("is", "is_not") and isinstance(c.value, str):
            known = (c.value.lower() == "yes") == (c.op == "is")
            who += " known by email" if known else " not known by email"
    if trigger.left_checkout:
        who += " who left the checkout"
    return who


def _folded(conditions: Sequence[Condition], devices: Sequence[str]) -> tuple[str, list[Condition]]:
    """Page types, devices and countries said the way people say them ("on product pages, on
    phones, in DE"); the other conditions are left for :func:`_condition`. ``devices``: the
    campaign's own choice of devices, when not all of them."""
    words: list[str] = []
    rest: list[Condition] = []
    if devices:
        words.append("on " + _either([_DEVICES[d] for d in devices]))
    for c in conditions:
        values = _values(c)
        positive = c.op in ("is", "in")
        if c.field == "page_type" and values and c.op in ("is", "in", "is_not", "not_in"):
            pages = _either([v.replace("_", " ") for v in values]) + " pages"
            words.append(("on " if positive else "except on ") + pages)
        elif c.field == "device" and values and c.op in ("is", "in", "is_not", "not_in"):
            kinds = _either([_DEVICES.get(v.lower(), v) for v in values])
            words.append(("on " if positive else "except on ") + kinds)
        elif c.field == "country" and values and c.op in ("is", "in", "is_not", "not_in"):
            words.append(("in " if positive else "outside ") + _either([v.upper() for v in values]))
        elif c.field in ("visitor", "identified") and c.op in ("is", "is_not"):
            continue  # said in who they are
        else:
            rest.append(c)
    return "".join(" " + w if i == 0 else ", " + w for i, w in enumerate(words)), rest


def _when(trigger: Trigger, currency: str) -> str:
    moments = []
    if trigger.exit_intent:
        moments.append("when leaving")
    for page, seconds in trigger.hesitation.items():
        moments.append(f"after {seconds} s without a move on {page.replace('_', ' ')} pages")
    if trigger.scroll_depth:
        moments.append(f"after scrolling {trigger.scroll_depth}% of the page")
    if trigger.time_on_page:
        seconds = trigger.time_on_page
        moments.append(f"after {seconds} second{'' if seconds == 1 else 's'} on the page")
    if trigger.live:
        moments.append("when a live offer starts")
    text = " or ".join(moments)
    low, high = trigger.min_cart_value, trigger.max_cart_value
    if low and high is not None:
        text += f" with a cart between {money(low, currency)} and {money(high, currency)}"
    elif high is not None:
        text += (
            " with an empty cart" if high == 0 else f" with a cart up to {money(high, currency)}"
        )
    elif low:
        text += f" with a cart over {money(low, currency)}"
    if trigger.min_cart_items:
        text += f", with at least {trigger.min_cart_items} item(s) in the cart"
    if trigger.min_pages:
        text += f", after at least {trigger.min_pages} page(s)"
    if trigger.min_time_on_site_s:
        text += f", after {trigger.min_time_on_site_s} s on the site"
    if trigger.min_time_on_page_s:
        text += f", after {trigger.min_time_on_page_s} s on the page"
    return text


def _schedule(campaign: Campaign) -> str:
    sched = campaign.schedule
    out = []
    if len(sched.weekdays) < 7:
        out.append("on " + ", ".join(_DAYS[d] for d in sorted(set(sched.weekdays))))
    if sched.hours is not None:
        out.append(f"from {sched.hours[0]}:00 to {sched.hours[1]}:00 ({sched.timezone})")
    return " ".join(out)


def _condition(c: Condition) -> str:
    said = f"{FIELD_WORDS[c.field][1]} {OP_WORDS[c.op]}"
    if isinstance(c.value, int | float):  # a count
        return f"{said} {c.value:g}"
    return f"{said} {_either(_values(c), quoted=True)}"


def _values(c: Condition) -> list[str]:
    if isinstance(c.value, list):
        return [str(v) for v in c.value]
    return [str(c.value)]


def _either(values: Sequence[str], quoted: bool = False) -> str:
    shown = [f"“{v}”" if quoted else v for v in values]
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + " or " + shown[-1]
