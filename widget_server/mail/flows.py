"""Email flow configuration of a site: which emails follow an abandoned cart or browse, and when.

A site's configuration is one JSON document in Redis (see :class:`MailConfig`); a site without one
uses :data:`DEFAULT_CONFIG`: cart abandonment after 1 h, 24 h and 72 h, browse abandonment after
2 h, checkout abandonment off (the cart flow covers it).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from redis.asyncio import Redis

from ..errors import WidgetServerError
from ..sms.text import sms_text_problem
from ..store.keys import Keys

FlowKind = Literal[
    "cart", "checkout", "browse", "welcome", "cross_sell", "review", "replenishment", "winback",
    "price_drop", "back_in_stock", "low_stock", "category_interest",
]  # fmt: skip
# The flows a visitor leaving schedules: one of them at a time, each replacing the others.
ABANDONMENT: frozenset[str] = frozenset({"cart", "checkout", "browse"})
# The flows an order schedules; the order that started them does not stop them.
AFTER_ORDER: frozenset[str] = frozenset({"cross_sell", "review", "replenishment"})
# The flows a visitor coming back cancels (with ``cancel_on_return``): the others are not about
# the visit.
RETURN_CANCELS: frozenset[str] = ABANDONMENT | {"winback"}
# When several of a visitor's emails are due at once, the highest priority goes first and the
# others wait for the budget (a flow's ``priority`` overrides its kind's).
KIND_PRIORITY: dict[str, int] = {
    "checkout": 90, "cart": 80, "price_drop": 70, "back_in_stock": 65, "low_stock": 60,
    "welcome": 55, "browse": 50, "replenishment": 45, "review": 40, "cross_sell": 35,
    "category_interest": 30, "winback": 20,
}  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
MAX_DELAY_MINUTES = 60 * 24 * 60
# The words of an email a step may set per locale, over the template's own (messages.json
# keys ``<template>_<name>``); the text may break lines, the others are one line.
STEP_TEXTS = ("preheader", "heading", "intro", "cta")
TEXT_LIMITS = {"preheader": 200, "heading": 200, "intro": 600, "cta": 60}
TEXT_NAMES = {"preheader": "preheader", "heading": "heading", "intro": "text", "cta": "button"}
_WORD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LINE_BREAKS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\u2028\u2029]")


class MailConfigError(WidgetServerError):
    """An email flow configuration that cannot be used; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def text_problem(name: str, text: str) -> str:
    """What is wrong with an email's word ``name`` (see :data:`STEP_TEXTS`), or ""."""
    word = TEXT_NAMES.get(name, name)
    if not text.strip():
        return f"the {word} is empty"
    if len(text) > TEXT_LIMITS[name]:
        return f"the {word} is at most {TEXT_LIMITS[name]} characters"
    if name != "intro" and _CONTROL.search(text):
        return f"the {word} is one line"
    if _LINE_BREAKS.search(text):
        return f"the {word} has a control character"
    return ""


class FlowStep(_Model):
    """One message of a flow, sent ``delay_minutes`` after the visitor left: an email (with a
    subject), or with ``channel`` ``sms`` a text message of ``sms_text`` (per locale) to the
    visitor's confirmed phone (see :mod:`widget_server.mail.sms_steps`)."""

    delay_minutes: Annotated[float, Field(ge=0, le=MAX_DELAY_MINUTES)]
    template: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")] = "cart"
    subject: dict[str, str] | str = ""
    channel: Literal["email", "sms"] = "email"
    # The SMS per locale: {"en": "Your cart at {shop} is waiting: {link}"}.
    sms_text: dict[str, str] = Field(default_factory=dict)
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    code_valid_hours: Annotated[int, Field(ge=1, le=24 * 365)] | None = None
    # The email's words per locale, over the template's (see STEP_TEXTS): {"de": {"heading": ...}}.
    texts: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("texts")
    @classmethod
    def _texts(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for locale, words in value.items():
            if not _LOCALE.match(locale):
                raise ValueError(f"text locale {locale!r} must look like en or de-CH")
            for name, text in words.items():
                if name not in TEXT_LIMITS:
                    raise ValueError(f"{name!r} is not one of {', '.join(STEP_TEXTS)}")
                problem = text_problem(name, text)
                if problem:
                    raise ValueError(problem)
        return value

    @field_validator("sms_text")
    @classmethod
    def _sms_text(cls, value: dict[str, str]) -> dict[str, str]:
        for locale, text in value.items():
            if not _LOCALE.match(locale):
                raise ValueError(f"SMS text locale {locale!r} must look like en or de-CH")
            if problem := sms_text_problem(text):
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _channel(self) -> FlowStep:
        if self.channel == "sms" and not self.sms_text:
            raise ValueError("an SMS step needs its text (sms_text)")
        if self.channel == "email" and not self.subject:
            raise ValueError("an email step needs a subject")
        return self

    def sms_text_for(self, locale: str) -> str:
        """The SMS text in ``locale`` (then its language, then English, then any)."""
        for candidate in (locale, locale.split("-")[0], "en"):
            if candidate in self.sms_text:
                return self.sms_text[candidate]
        return next(iter(self.sms_text.values()), "")

    def texts_for(self, locale: str) -> dict[str, str]:
        """The step's own words in ``locale`` (then its language); none in another language:
        a German visitor gets the template's German words, not this step's English ones."""
        for candidate in (locale, locale.split("-")[0]):
            if candidate in self.texts:
                return self.texts[candidate]
        return {}

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: dict[str, str] | str) -> dict[str, str] | str:
        if value == "":  # none: an SMS step (an email step must have one, see _channel)
            return value
        subjects = value if isinstance(value, dict) else {"": value}
        for locale, text in subjects.items():
            if locale and not _LOCALE.match(locale):
                raise ValueError(f"subject locale {locale!r} must look like en or de-CH")
            if not text.strip() or len(text) > 200 or _CONTROL.search(text):
                raise ValueError("subjects are 1-200 characters without line breaks")
        return value

    def subject_for(self, locale: str) -> str:
        """The subject in ``locale`` (then its language, then English, then any)."""
        if isinstance(self.subject, str):
            return self.subject
        for candidate in (locale, locale.split("-")[0], "en"):
            if candidate in self.subject:
                return self.subject[candidate]
        return next(iter(self.subject.values()))


CATEGORY_NAME_LIMIT = 200
MAX_REMINDER_DAYS = 365
CategoryName = Annotated[str, Field(min_length=1, max_length=CATEGORY_NAME_LIMIT)]
ReminderDays = Annotated[int, Field(ge=1, le=MAX_REMINDER_DAYS)]


class Flow(_Model):
    """A sequence of emails for one kind of abandonment.

    ``holdout`` is the share of visitors (assigned by a stable hash) who get none of the flow's
    emails, to measure what the flow adds; ``sms_holdout`` the share of the others who could get
    texts that get the emails but none of the texts, to measure what the texts add; orders
    within ``attribution_days`` of the visitor
    qualifying count for the flow's report (see :mod:`widget_server.mail.experiments`).
    ``daily_cap`` bounds the emails a visitor gets from the site per UTC day, counted over all
    flows. With ``cancel_on_return`` a visitor coming back
    cancels the pending steps; they are scheduled again when the visitor leaves again.
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")]
    kind: FlowKind
    steps: Annotated[list[FlowStep], Field(min_length=1, max_length=5)]
    enabled: bool = True
    holdout: Annotated[float, Field(ge=0, le=0.9)] = 0.0
    sms_holdout: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    daily_cap: Annotated[int, Field(ge=1, le=20)] = 2
    cancel_on_return: bool = True
    attribution_days: Annotated[int, Field(ge=1, le=90)] = 7
    priority: Annotated[int, Field(ge=0, le=100)] | None = None
    # replenishment: days after an order of a product in the category (by the catalog's
    # product_type or category), when to remind; categories not listed are learned from the
    # shop's repeat orders (see MailScheduler.after_order).
    categories: dict[CategoryName, ReminderDays] = Field(default_factory=dict)
    # price_drop: the least drop of the effective price, in percent, a feed import announces;
    # low_stock: the units in stock (the feed's quantity) at or below which a product runs low.
    min_drop_percent: Annotated[float, Field(ge=0.1, le=90)] = 5.0
    low_stock_quantity: Annotated[int, Field(ge=1, le=10_000)] = 5

    @property
    def rank(self) -> int:
        """The priority that decides between emails due at once."""
        return self.priority if self.priority is not None else KIND_PRIORITY.get(self.kind, 0)

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[FlowStep]) -> list[FlowStep]:
        delays = [step.delay_minutes for step in steps]
        if delays != sorted(delays):
            raise ValueError("step delays must not decrease")
        return steps


class Budget(_Model):
    """How many marketing messages one visitor may get, over every flow: at most ``per_day`` in
    a day of their time zone and ``per_week`` in any 7 days, and none in ``quiet_hours`` (from
    the first hour to the second, in their time zone; ``None``: any hour). A message held back
    goes out when the budget or the hour allows it, up to :data:`MAX_HOLD_S` after it was due,
    else not at all. Confirmation and reward emails, which the visitor asked for, are outside
    the budget."""

    per_day: Annotated[int, Field(ge=1, le=20)] = 1
    per_week: Annotated[int, Field(ge=1, le=50)] = 3
    quiet_hours: (
        tuple[Annotated[int, Field(ge=0, le=23)], Annotated[int, Field(ge=0, le=23)]] | None
    ) = (21, 8)

    @model_validator(mode="after")
    def _sizes(self) -> Budget:
        if self.per_week < self.per_day:
            raise ValueError("the weekly budget must be at least the daily one")
        if self.quiet_hours is not None and self.quiet_hours[0] == self.quiet_hours[1]:
            raise ValueError("quiet hours must start and end at different hours")
        return self

    def quiet(self, hour: int) -> bool:
        """Whether ``hour`` (0-23, the visitor's local time) is a quiet one."""
        if self.quiet_hours is None:
            return False
        start, end = self.quiet_hours
        return start <= hour < end if start < end else hour >= start or hour < end


# A message the budget or quiet hours hold back is dropped when it would go out later than this
# after it was due: reminders that late are no longer about what the visitor did.
MAX_HOLD_S = 3 * 24 * 3600


class MailConfig(_Model):
    """The email flows of one site and what their links point to.

    ``shop_url`` is where links lead (default: the site's first exact origin); the cart-restore
    link redirects to ``shop_url + restore_path`` with ``items=ID:QTY,...`` (and ``code``), which
    the shop turns back into a cart.

    With ``double_opt_in`` a consent given from then on is pending until the visitor clicks the
    link in a confirmation email; until then the address gets no flow emails. Consents recorded
    before it was turned on keep their status, and turning it off does not release pending ones.
    """

    flows: Annotated[list[Flow], Field(max_length=20)]
    double_opt_in: bool = False
    browse_min_views: Annotated[int, Field(ge=1, le=100)] = 2
    shop_url: Annotated[str, Field(max_length=300, pattern=r"^(https?://[^\s/?#]+)?$")] = ""
    restore_path: Annotated[str, Field(max_length=200, pattern=r"^/[^\s]*$")] = "/cart"
    utm_source: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] = "abandonment"
    # The site's own words over the templates' (messages.json keys) per locale, in every email
    # and page: {"de": {"footer": "..."}}; a step's own words come on top (FlowStep.texts).
    words: dict[str, dict[str, str]] = Field(default_factory=dict)
    utm_medium: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] = "email"
    sender_name: Annotated[str, Field(max_length=100)] = ""
    budget: Budget = Budget()

    @model_validator(mode="after")
    def _unique(self) -> MailConfig:
        names = [flow.name for flow in self.flows]
        if len(names) != len(set(names)):
            raise ValueError("flow names must be unique")
        kinds = [flow.kind for flow in self.flows if flow.enabled]
        if len(kinds) != len(set(kinds)):
            raise ValueError("at most one enabled flow per kind")
        return self

    @field_validator("words")
    @classmethod
    def _words(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for locale, words in value.items():
            if not _LOCALE.match(locale):
                raise ValueError(f"word locale {locale!r} must look like en or de-CH")
            for key, text in words.items():
                if not _WORD_KEY.match(key):
                    raise ValueError(f"{key!r} is not a word of the email templates")
                if not text.strip() or len(text) > 600 or _LINE_BREAKS.search(text):
                    raise ValueError(f"the words for {key} are 1-600 characters")
        return value

    def words_for(self, locale: str) -> dict[str, str]:
        """The site's own words in ``locale``: its language's, then the locale's on top."""
        return {**self.words.get(locale.split("-")[0], {}), **self.words.get(locale, {})}

    def flow(self, name: str) -> Flow | None:
        return next((flow for flow in self.flows if flow.name == name), None)

    def enabled_flow(self, kind: FlowKind) -> Flow | None:
        return next((f for f in self.flows if f.kind == kind and f.enabled), None)

    def flow_for(self, *, has_cart: bool, product_views: int, checkout: bool) -> Flow | None:
        """The flow for a visitor who left: checkout (if enabled and they reached it with a
        cart), else cart for a non-empty cart, else browse after ``browse_min_views`` views."""
        if has_cart:
            if checkout and (flow := self.enabled_flow("checkout")) is not None:
                return flow
            return self.enabled_flow("cart")
        if product_views >= self.browse_min_views:
            return self.enabled_flow("browse")
        return None


def _flow(kind: FlowKind, steps: list[tuple[float, dict[str, str]]]) -> Flow:
    """A default flow of ``kind`` (named after it, off), its template named after it too."""
    return Flow(
        name=kind,
        kind=kind,
        enabled=False,
        steps=[FlowStep(delay_minutes=d, template=kind, subject=subject) for d, subject in steps],
    )


def _catalog_flow(kind: FlowKind, en: str, de: str) -> Flow:
    """A flow a feed import starts (catalog/changes.py): off until the site turns it on."""
    step = FlowStep(delay_minutes=0, template=kind, subject={"en": en, "de": de})
    return Flow(name=kind, kind=kind, enabled=False, steps=[step])


CATALOG_FLOWS = [
    _catalog_flow("price_drop", "Now cheaper: {product}", "Jetzt günstiger: {product}"),
    _catalog_flow("back_in_stock", "Back in stock: {product}", "Wieder da: {product}"),
    _catalog_flow("low_stock", "Only a few left: {product}", "Nur noch wenige: {product}"),
    _catalog_flow("category_interest", "New at {shop} for you", "Neu bei {shop} für Sie"),
]

DEFAULT_CONFIG = MailConfig(
    flows=[
        Flow(
            name="cart",
            kind="cart",
            steps=[
                FlowStep(
                    delay_minutes=60,
                    template="cart",
                    subject={"en": "You left something in your cart", "de": "Ihr Warenkorb wartet"},
                ),
                FlowStep(
                    delay_minutes=24 * 60,
                    template="cart",
                    subject={
                        "en": "Your cart at {shop} is still waiting",
                        "de": "Ihr Warenkorb bei {shop} ist noch da",
                    },
                ),
                FlowStep(
                    delay_minutes=72 * 60,
                    template="cart",
                    subject={
                        "en": "Last reminder: your cart at {shop}",
                        "de": "Letzte Erinnerung: Ihr Warenkorb bei {shop}",
                    },
                ),
            ],
        ),
        Flow(
            name="checkout",
            kind="checkout",
            enabled=False,
            steps=[
                FlowStep(
                    delay_minutes=30,
                    template="cart",
                    subject={
                        "en": "Complete your order",
                        "de": "Schließen Sie Ihre Bestellung ab",
                    },
                )
            ],
        ),
        Flow(
            name="browse",
            kind="browse",
            steps=[
                FlowStep(
                    delay_minutes=120,
                    template="browse",
                    subject={
                        "en": "Still thinking about {product}?",
                        "de": "Noch Interesse an {product}?",
                    },
                )
            ],
        ),
        # Off until the shop turns them on: a site without a configuration keeps sending what
        # it sent before these existed.
        _flow("welcome", [(0, {"en": "Welcome to {shop}", "de": "Willkommen bei {shop}"}),
                          (3 * 24 * 60, {"en": "Our favourites at {shop}",
                                         "de": "Unsere Lieblinge bei {shop}"})]),
        _flow("cross_sell", [(3 * 24 * 60, {"en": "Picked to go with {product}",
                                            "de": "Passend zu {product}"})]),
        _flow("review", [(10 * 24 * 60, {"en": "How do you like {product}?",
                                         "de": "Wie gefällt Ihnen {product}?"})]),
        _flow("replenishment", [(0, {"en": "Time to stock up on {product}?",
                                     "de": "Zeit, {product} nachzukaufen?"})]),
        _flow("winback", [(30 * 24 * 60, {"en": "We miss you at {shop}",
                                          "de": "Wir vermissen Sie bei {shop}"}),
                          (60 * 24 * 60, {"en": "Still here for you at {shop}",
                                          "de": "Wir sind noch für Sie da: {shop}"})]),
        *CATALOG_FLOWS,
    ]
)  # fmt: skip


def load_config(raw: str | bytes) -> MailConfig:
    """Parse a configuration JSON document (``{"flows": [...], ...}``); raise MailConfigError."""
    try:
        return MailConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}"
            for error in exc.errors()
        )
        raise MailConfigError(problems) from None


def in_holdout(site: str, visitor: str, flow: Flow) -> bool:
    """Whether the visitor is in the flow's holdout: stable per (site, visitor, flow)."""
    if flow.holdout <= 0:
        return False
    digest = hashlib.sha256(f"{site}\x00{visitor}\x00{flow.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < flow.holdout


def in_sms_holdout(site: str, visitor: str, flow: Flow) -> bool:
    """Whether the visitor gets none of the flow's texts (its ``sms_holdout``): stable per
    (site, visitor, flow), and independent of :func:`in_holdout`."""
    if flow.sms_holdout <= 0:
        return False
    digest = hashlib.sha256(f"{site}\x00{visitor}\x00{flow.name}\x00sms".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < flow.sms_holdout


class MailFlowStore:
    """Reads and saves the flow configuration of a site."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, site: str) -> MailConfig:
        """The site's configuration, or :data:`DEFAULT_CONFIG` when it has none."""
        raw = await self._redis.get(self._keys.mail_flows(site))
        return load_config(raw) if raw else DEFAULT_CONFIG

    async def save(self, site: str, config: MailConfig) -> None:
        await self._redis.set(self._keys.mail_flows(site), config.model_dump_json())
