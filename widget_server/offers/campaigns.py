"""The campaign model: what to show, to whom, when, how often, and in which A/B variants.

Validated with pydantic so that every mistake comes back as a list of field-level errors
(``FieldError(path, message)``) that the CLI prints and the admin shows next to each field.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ..errors import WidgetServerError
from ..links import safe_link
from ..wire.protocol import Device, ExitIntentKind, PageType
from .texts import Locale, Localized, pick_word

CampaignStatus = Literal["draft", "active", "paused", "ended"]
OfferKind = Literal[
    "discount",
    "similar_products",
    "email_capture",
    "free_shipping_progress",
    "message",
    "sms_capture",
]
# How the offer is drawn: a centred modal popup, a corner card, a bar at the top or the bottom of
# the page (the last three leave the page usable). On phones the popup and the card become a
# sheet at the bottom of the screen.
OfferLayout = Literal["popup", "slide_in", "bar_top", "bar_bottom"]
CAMPAIGN_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,47}$"
VARIANT_KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,15}$"
ALL_EXIT_KINDS: list[ExitIntentKind] = [
    "top_edge", "back_button", "scroll_up", "tab_switch", "keyboard", "idle"
]  # fmt: skip
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class FieldError(WidgetServerError):
    """One invalid field: ``path`` like ``variants.0.offer.headline``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class CampaignInvalid(WidgetServerError):
    """A campaign that cannot be saved; ``errors`` lists every invalid field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _http_url(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    assert value is not None
    if safe_link(value) is None:
        raise ValueError("must be an http(s) URL or a path starting with / (no backslashes)")
    return value


class Schedule(_Model):
    start: datetime | None = None
    end: datetime | None = None
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: list(range(7)), description="0 = Monday … 6 = Sunday"
    )
    hours: tuple[Annotated[int, Field(ge=0, le=24)], Annotated[int, Field(ge=0, le=24)]] | None = (
        None
    )
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.hours and self.hours[0] == self.hours[1]:
            raise ValueError("hours must be a non-empty range like [9, 18]")
        return self


class Trigger(_Model):
    exit_intent: list[ExitIntentKind] = Field(default_factory=lambda: list(ALL_EXIT_KINDS))
    hesitation: dict[PageType, Annotated[int, Field(ge=1, le=3600)]] = Field(default_factory=dict)
    live: bool = False
    # Show once the visitor has scrolled this far down the page (percent), or has had the page
    # in view this long (seconds). Triggers, like hesitation; min_time_on_page_s is a condition.
    scroll_depth: Annotated[int, Field(ge=1, le=100)] | None = None
    time_on_page: Annotated[int, Field(ge=1, le=3600)] | None = None
    min_time_on_site_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    min_time_on_page_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    min_pages: Annotated[int, Field(ge=0, le=1000)] = 0
    min_cart_value: Annotated[float, Field(ge=0)] = 0.0
    max_cart_value: Annotated[float, Field(ge=0)] | None = None
    min_cart_items: Annotated[int, Field(ge=0, le=1000)] = 0
    left_checkout: bool = False
    returning_visitor: bool | None = None

    @model_validator(mode="after")
    def _fires_somehow(self) -> Trigger:
        if not (self.exit_intent or self.hesitation or self.live or self.scroll_depth
                or self.time_on_page):  # fmt: skip
            raise ValueError(
                "a trigger needs exit_intent kinds, hesitation pages, scroll_depth, time_on_page"
                " or live"
            )
        if self.max_cart_value is not None and self.max_cart_value < self.min_cart_value:
            raise ValueError("max_cart_value must be at least min_cart_value")
        return self


ConditionField = Literal[
    "url", "page_type", "device", "visitor", "identified", "utm_source", "utm_medium",
    "utm_campaign", "referrer", "landing_url", "cart_category", "cart_brand", "cart_product",
    "viewed_count", "country",
]  # fmt: skip
ConditionOp = Literal[
    "is", "is_not", "contains", "not_contains", "matches", "not_matches", "in", "not_in",
    "gte", "lte",
]  # fmt: skip


class Condition(_Model):
    """One rule. ``matches`` uses shell-style wildcards (``*/sale/*``); ``in`` takes a list."""

    field: ConditionField
    op: ConditionOp
    value: str | float | list[str]

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"'{self.op}' needs a list of values")
        if self.op in ("gte", "lte") and not isinstance(self.value, int | float):
            raise ValueError(f"'{self.op}' needs a number")
        if self.op not in ("in", "not_in") and isinstance(self.value, list):
            raise ValueError(f"'{self.op}' needs a single value, not a list")
        return self


class ConditionGroup(_Model):
    """All conditions of a group must hold (AND)."""

    all: Annotated[list[Condition], Field(min_length=1, max_length=20)]


ALL_DEVICES: list[Device] = ["desktop", "tablet", "mobile"]


class Targeting(_Model):
    """The devices it shows on, and any group may hold (OR of ANDs; no groups: everyone)."""

    devices: Annotated[list[Device], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: list(ALL_DEVICES)
    )
    any: Annotated[list[ConditionGroup], Field(max_length=20)] = Field(default_factory=list)

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, value: list[Device]) -> list[Device]:
        return [d for d in ALL_DEVICES if d in value]  # one each, in a fixed order

    @property
    def every_device(self) -> bool:
        return len(self.devices) == len(ALL_DEVICES)


class Theme(_Model):
    accent: str = "#1a73e8"
    background: str = "#ffffff"
    text: str = "#1f1f1f"
    radius: Annotated[int, Field(ge=0, le=32)] = 12

    @field_validator("accent", "background", "text")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _COLOR.match(value):
            raise ValueError("must be a colour like #1a73e8")
        return value


class TwoStep(_Model):
    """An email capture that asks first: the headline is the question, with a yes and a no
    button; yes opens the email form, no dismisses the offer."""

    yes_label: Annotated[str, Field(min_length=1, max_length=40)] = "Yes, please"
    no_label: Annotated[str, Field(min_length=1, max_length=40)] = "No, thanks"


class OfferWords(_Model):
    """An offer's words in one more language; an empty field reads as the base text."""

    headline: Annotated[str, Field(max_length=120)] = ""
    body: Annotated[str, Field(max_length=500)] = ""
    cta_label: Annotated[str, Field(max_length=40)] = ""
    # The buttons of a two-step question (``Offer.two_step``).
    yes_label: Annotated[str, Field(max_length=40)] = ""
    no_label: Annotated[str, Field(max_length=40)] = ""

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Stored and exported with the words given only: an empty one reads as the base."""
        return {name: text for name, text in handler(self).items() if text}


WORD_FIELDS = ("headline", "body", "cta_label", "yes_label", "no_label")


class Offer(_Model):
    kind: OfferKind
    layout: OfferLayout = "popup"
    # The base texts, in the site's language: every other language falls back to them.
    headline: Annotated[str, Field(min_length=1, max_length=120)]
    body: Annotated[str, Field(max_length=500)] = ""
    cta_label: Annotated[str, Field(max_length=40)] = ""
    # The same texts in other languages, by locale (``de``, ``de-AT``): see :meth:`words`.
    translations: Annotated[dict[Locale, OfferWords], Field(max_length=30)] = Field(
        default_factory=dict
    )
    cta_url: str | None = None
    free_shipping_threshold: Annotated[float, Field(gt=0)] | None = None
    theme: Theme = Theme()
    # email_capture, sms_capture: texts by locale (offers/texts.py; empty: the defaults).
    consent_label: Localized = Field(default_factory=dict)
    thanks: Localized = Field(default_factory=dict)
    privacy_url: str | None = None
    two_step: TwoStep | None = None  # email_capture only

    @field_validator("cta_url", "privacy_url")
    @classmethod
    def _safe_cta(cls, value: str | None) -> str | None:
        return _http_url(value)

    @model_validator(mode="after")
    def _complete(self) -> Offer:
        if self.kind == "free_shipping_progress" and self.free_shipping_threshold is None:
            raise ValueError("free_shipping_progress needs free_shipping_threshold")
        if self.two_step is not None and self.kind != "email_capture":
            raise ValueError("a yes/no question first (two_step) is for email capture offers")
        return self

    def words(self, locale: str) -> OfferWords:
        """Headline, body, button label and the two-step question's buttons for a visitor in
        ``locale``: each the translation for the locale, else for its language, else the base
        text (offers/texts.py)."""
        base = OfferWords(
            headline=self.headline,
            body=self.body,
            cta_label=self.cta_label,
            yes_label=self.two_step.yes_label if self.two_step else "",
            no_label=self.two_step.no_label if self.two_step else "",
        )
        if not self.translations or not locale:
            return base
        return OfferWords(
            **{
                field: pick_word(
                    {loc: getattr(w, field) for loc, w in self.translations.items()},
                    getattr(base, field),
                    locale,
                )
                for field in WORD_FIELDS
            }
        )


class Discount(_Model):
    type: Literal["percent", "fixed", "free_shipping"]
    amount: Annotated[float, Field(ge=0, le=100_000)] = 0.0
    min_cart_value: Annotated[float, Field(ge=0)] = 0.0
    valid_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)] = 30
    code_strategy: Literal["static", "pool", "generated"] = "generated"
    static_code: Annotated[str, Field(max_length=64)] | None = None
    code_format: Annotated[str, Field(max_length=40)] = "SAVE-{XXXXXX}"

    @model_validator(mode="after")
    def _consistent(self) -> Discount:
        if self.type == "percent" and not 0 < self.amount <= 100:
            raise ValueError("a percent discount needs an amount between 0 and 100")
        if self.type == "fixed" and self.amount <= 0:
            raise ValueError("a fixed discount needs a positive amount")
        if self.code_strategy == "static" and not self.static_code:
            raise ValueError("the static code strategy needs static_code")
        if self.code_strategy == "generated" and not re.search(r"\{[X9]{4,}\}", self.code_format):
            raise ValueError("code_format needs a random part of 4+ characters, like {XXXXXX}")
        return self


class Caps(_Model):
    per_session: Annotated[int, Field(ge=0, le=100)] = 1
    per_visitor_day: Annotated[int, Field(ge=0, le=100)] = 2
    per_visitor_week: Annotated[int, Field(ge=0, le=1000)] = 5
    dismiss_cooldown_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 30)] = 60
    global_max_impressions: Annotated[int, Field(ge=1)] | None = None
    quiet_days_after_purchase: Annotated[int, Field(ge=0, le=365)] = 7
    never_on_payment: bool = True


class Variant(_Model):
    key: Annotated[str, Field(pattern=VARIANT_KEY_PATTERN)]
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    offer: Offer
    discount: Discount | None = None

    @model_validator(mode="after")
    def _discount_when_needed(self) -> Variant:
        if self.offer.kind == "discount" and self.discount is None:
            raise ValueError("a discount offer needs a discount")
        return self


class Campaign(_Model):
    id: Annotated[str, Field(pattern=CAMPAIGN_ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=120)]
    status: CampaignStatus = "draft"
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    schedule: Schedule = Schedule()
    trigger: Trigger = Trigger()
    targeting: Targeting = Targeting()
    variants: Annotated[list[Variant], Field(min_length=1, max_length=10)]
    holdout: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    caps: Caps = Caps()
    goal: Literal["purchase"] = "purchase"
    attribution_days: Annotated[int, Field(ge=1, le=90)] = 7
    expected_value: Annotated[float, Field(ge=0)] = 0.0
    experiment_version: Annotated[int, Field(ge=1)] = 1
    # How the experiment is judged, chosen before it starts (docs/statistics.md): look any day
    # (sequential, always-valid) or once at a planned number of exposures per arm.
    decision_rule: Literal["sequential", "fixed_horizon"] = "sequential"
    planned_exposures: Annotated[int, Field(ge=100, le=100_000_000)] | None = None
    # Also fixed before it starts: the decision's figures adjusted by what was known of each
    # visitor before the offer (CUPED), and revenue per visitor capped at this percentile of
    # the control's buyers (None: not capped).
    variance_reduction: bool = True
    revenue_cap_percentile: Annotated[float, Field(ge=50, le=99.99)] | None = 99.0
    # When this experiment version started (unix seconds; set by the campaign store).
    experiment_started: float | None = None
    version: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _unique_variants(self) -> Campaign:
        keys = [v.key for v in self.variants]
        if len(set(keys)) != len(keys):
            raise ValueError("variant keys must be unique")
        if "holdout" in keys:
            raise ValueError("'holdout' is reserved for the control group")
        if self.id == "templates":
            raise ValueError("'templates' is reserved: the admin's gallery has that address")
        if self.decision_rule == "fixed_horizon" and self.planned_exposures is None:
            raise ValueError(
                "a fixed-horizon test needs planned_exposures: the exposures per arm it is"
                " decided at"
            )
        return self

    def variant(self, key: str) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)

    @property
    def uses_pool(self) -> bool:
        """Whether any variant hands out codes from the uploaded pool."""
        return any(v.discount is not None and v.discount.code_strategy == "pool"
                   for v in self.variants)  # fmt: skip

    @property
    def min_cart_value(self) -> float:
        """The cart value every arm needs: the highest minimum of the variants' discounts.

        Eligibility must not depend on the arm a visitor is assigned to, or the arms would
        compare different visitors; so a campaign reaches only carts that meet every variant's
        minimum, the holdout included."""
        return max((v.discount.min_cart_value for v in self.variants if v.discount), default=0.0)


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "campaign"


def parse_campaign(data: Any) -> Campaign:
    """Validate ``data`` (a dict or JSON text); raise CampaignInvalid listing every field error."""
    try:
        if isinstance(data, str | bytes):
            return Campaign.model_validate_json(data)
        return Campaign.model_validate(data)
    except ValidationError as exc:
        raise CampaignInvalid(
            [FieldError(_path(err["loc"]), err["msg"]) for err in exc.errors()]
        ) from None


def campaign_json(campaign: Campaign) -> str:
    return campaign.model_dump_json(exclude_defaults=False)
