"""Wire protocol v1: parse, validate and encode messages. Pure: no I/O, no clocks.

Every client frame is one JSON object ``{"id": ..., "type": ..., ...}``; events and signals add a
``name``. :func:`parse_client_message` turns any ``str``/``bytes`` into a typed message or raises
:class:`~widget_server.errors.ProtocolError` with a documented code; nothing else escapes.
Unknown fields are ignored so that a newer widget keeps working against an older server.

Server frames are Structs tagged by ``type`` (:data:`ServerMessage`): ``welcome``, ``ack``,
``error``, ``pong`` and the offer engine's pushes ``arm``, ``offer``, ``withdraw``
(:data:`Push`); :func:`encode` writes any of them. See ``docs/protocol.md`` for the full reference.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeAlias, cast

import msgspec
from msgspec import Meta, Struct

from ..errors import CLOSE_POLICY_VIOLATION, ProtocolError

PROTOCOL_VERSION = 1

# Error codes (each documented in docs/protocol.md).
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
MISSING_ID = "missing_id"
UNKNOWN_TYPE = "unknown_type"
INVALID_FIELD = "invalid_field"
UNSUPPORTED_VERSION = "unsupported_version"
HELLO_REQUIRED = "hello_required"
HELLO_REPEATED = "hello_repeated"
UNKNOWN_SITE = "unknown_site"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"
FRAME_TOO_LARGE = "frame_too_large"
BINARY_NOT_SUPPORTED = "binary_not_supported"
RATE_LIMITED = "rate_limited"
FLOOD = "flood"
UNAVAILABLE = "unavailable"
OVER_CAPACITY = "over_capacity"

# --- field types -------------------------------------------------------------------------------

MessageId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
SiteKey = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
VisitorId = Annotated[str, Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
SessionId = Annotated[str, Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ProductId = Annotated[str, Meta(min_length=1, max_length=128)]
Url = Annotated[str, Meta(max_length=2048)]
ShortText = Annotated[str, Meta(max_length=300)]
Currency = Annotated[str, Meta(max_length=3, pattern=r"^([A-Z]{3})?$")]
Money = Annotated[float, Meta(ge=0, le=1_000_000_000)]
Quantity = Annotated[int, Meta(ge=1, le=10_000)]
Email = Annotated[
    str, Meta(max_length=254, pattern=r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")
]

PageType: TypeAlias = Literal[
    "home", "category", "product", "search", "cart", "checkout", "payment", "thank_you", "other"
]
Device: TypeAlias = Literal["desktop", "mobile", "tablet"]
ExitIntentKind: TypeAlias = Literal[
    "top_edge", "back_button", "scroll_up", "tab_switch", "keyboard", "idle"
]
# "declined": the "no" of a two-step email capture; "yes" is its "yes" (the email form opens).
DismissHow: TypeAlias = Literal[
    "close_button", "escape", "backdrop", "timeout", "navigation", "declined"
]
ClickAction: TypeAlias = Literal["cta", "code_copy", "product", "email_submit", "yes"]
# Who asked for the email consent: the widget's own email-capture overlay, or the shop's page
# (its own code, or a tag manager reading the data layer).
ConsentSource: TypeAlias = Literal["widget", "datalayer", "shop"]
# The version of the consent text the visitor saw, as the shop names it (``2026-10-newsletter``).
ConsentWording = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Country = Annotated[str, Meta(max_length=2, pattern=r"^([A-Z]{2})?$")]
LANG_PATTERN = r"^([a-z]{2}(-[A-Za-z]{2})?)?$"
Lang = Annotated[str, Meta(max_length=5, pattern=LANG_PATTERN)]
_LANG = re.compile(r"[a-z]{2}(-[A-Za-z]{2})?")


def clean_lang(value: object) -> str:
    """A visitor's locale as the widget sends it (``data-locale`` or ``<html lang>``): ``de``
    or ``de-AT``; anything else (``en_US``, ``../``, control characters, 500 characters, not a
    string) is ``""``, the site's locale. Never an error: the visitor just gets the site's
    texts."""
    if isinstance(value, str) and len(value) <= 5 and _LANG.fullmatch(value):
        return value
    return ""


TimeZone = Annotated[str, Meta(max_length=64)]
_ZONE = re.compile(r"[A-Za-z]+(?:/[A-Za-z0-9_+-]+){0,2}")


def clean_zone(value: object) -> str:
    """A visitor's IANA time zone as the browser reports it (``Europe/Berlin``); anything else
    is ``""`` (the site's time zone applies). Never an error."""
    if isinstance(value, str) and len(value) <= 64 and _ZONE.fullmatch(value):
        return value
    return ""


# Every struct of the protocol is plain data that never refers back to itself: gc=False keeps
# them out of the cyclic garbage collector (tens of them per message, otherwise all tracked).
class _Message(Struct, frozen=True, gc=False, kw_only=True):
    id: MessageId


class PageContext(Struct, frozen=True, gc=False, kw_only=True):
    url: Url
    title: ShortText = ""
    referrer: Url = ""
    page_type: PageType = "other"


class Consent(Struct, frozen=True, gc=False, kw_only=True):
    analytics: bool = False
    marketing: bool = False


class Product(Struct, frozen=True, gc=False, kw_only=True):
    id: ProductId
    title: ShortText = ""
    price: Money | None = None
    currency: Currency = ""
    category: ShortText = ""
    brand: ShortText = ""
    url: Url = ""
    image: Url = ""


class CartItem(Struct, frozen=True, gc=False, kw_only=True):
    id: ProductId
    quantity: Quantity = 1
    price: Money = 0.0
    title: ShortText = ""
    category: ShortText = ""
    brand: ShortText = ""


class CartItemRef(Struct, frozen=True, gc=False, kw_only=True):
    id: ProductId
    quantity: Quantity | None = None  # None removes the whole line


# --- client -> server --------------------------------------------------------------------------


class Hello(_Message, frozen=True, kw_only=True):
    v: int = PROTOCOL_VERSION
    site: SiteKey
    visitor: VisitorId
    session: SessionId | None = None
    page: PageContext | None = None
    consent: Consent | None = None  # None: unchanged
    device: Device | None = None
    # The visitor's locale (the script tag's data-locale, else <html lang>), for offer texts;
    # a malformed one is read as "" (the site's locale), never refused: see clean_lang.
    lang: Lang = ""
    # The browser's time zone (Intl), for quiet hours and the email budget's day; a malformed
    # one is read as "" (the site's time zone), never refused: see clean_zone.
    tz: TimeZone = ""


class PageView(_Message, frozen=True, kw_only=True):
    url: Url
    title: ShortText = ""
    referrer: Url = ""
    page_type: PageType = "other"


class ProductView(_Message, frozen=True, kw_only=True):
    product: Product


class CartAdd(_Message, frozen=True, kw_only=True):
    item: CartItem


class CartRemove(_Message, frozen=True, kw_only=True):
    item: CartItemRef


class CartUpdate(_Message, frozen=True, kw_only=True):
    items: Annotated[list[CartItem], Meta(max_length=100)]


class CheckoutStart(_Message, frozen=True, kw_only=True):
    step: Annotated[int, Meta(ge=1, le=20)] = 1


class Purchase(_Message, frozen=True, kw_only=True):
    order_id: Annotated[str, Meta(min_length=1, max_length=128)]
    value: Money
    currency: Currency = ""
    items: Annotated[list[CartItem], Meta(max_length=100)] = []
    coupon: Annotated[str, Meta(max_length=64)] | None = None


class Identify(_Message, frozen=True, kw_only=True):
    email: Email
    consent: bool = False
    source: ConsentSource = "shop"
    wording: ConsentWording | None = None


class RecordedIdentify(Identify, frozen=True, kw_only=True):
    """An ``identify`` as the server records it: the client's message plus what only the server
    knows. Never parsed from a frame (a client cannot set these): ``country`` comes from the
    trusted proxy header, ``confirm`` from the site's double opt-in setting."""

    country: Country = ""
    confirm: bool = False


class ExitIntent(_Message, frozen=True, kw_only=True):
    kind: ExitIntentKind


class Hesitation(_Message, frozen=True, kw_only=True):
    seconds: Annotated[float, Meta(ge=0, le=86_400)]
    page_type: PageType = "other"


class ScrollDepth(_Message, frozen=True, kw_only=True):
    """The visitor has scrolled this far down the page (percent of its height), reported once
    the first of the thresholds the welcome asked for (``config.scroll_depth``) is reached."""

    percent: Annotated[int, Meta(ge=0, le=100)]


class TimeOnPage(_Message, frozen=True, kw_only=True):
    """The page has been in view this many seconds, reported at the thresholds the welcome
    asked for (``config.time_on_page``)."""

    seconds: Annotated[int, Meta(ge=0, le=86_400)]


class OfferShown(_Message, frozen=True, kw_only=True):
    """The widget painted a claimed offer (``claim``: the token its ``offer`` message carried).
    Only this counts an impression and spends the caps; see docs/protocol.md."""

    offer: MessageId
    claim: Annotated[str, Meta(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")] = ""


class OfferCapture(_Message, frozen=True, kw_only=True):
    """An address submitted in an ``email_capture`` offer that was painted (``claim``): the
    server records it with the consent given (an ``identify``), counts the capture, and answers
    with a ``reward`` (the campaign's code, if it has one)."""

    offer: MessageId
    claim: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    email: Email
    consent: bool = False


class PhoneCapture(_Message, frozen=True, kw_only=True):
    """A phone number for texts, with its own SMS consent (separate from email consent): the
    server texts a 6-digit code to it and answers with a ``phone_result`` (``code_sent``, or
    ``withdrawn`` when ``consent`` is false). ``offer``: the ``sms_capture`` offer it came from."""

    phone: Annotated[str, Meta(min_length=1, max_length=40)]
    consent: bool = False
    offer: Annotated[str, Meta(max_length=64)] = ""


class PhoneConfirm(_Message, frozen=True, kw_only=True):
    """The code the visitor typed; answered with a ``phone_result`` (``confirmed`` or an
    error such as ``wrong_code``)."""

    code: Annotated[str, Meta(min_length=1, max_length=12)]


class OfferClicked(_Message, frozen=True, kw_only=True):
    offer: MessageId
    action: ClickAction = "cta"


class OfferDismissed(_Message, frozen=True, kw_only=True):
    offer: MessageId
    how: DismissHow = "close_button"
    visible_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 0


class ConsentUpdate(_Message, frozen=True, kw_only=True):
    analytics: bool
    marketing: bool = False


class Ping(_Message, frozen=True, kw_only=True):
    pass


EventMessage: TypeAlias = (
    PageView | ProductView | CartAdd | CartRemove | CartUpdate | CheckoutStart | Purchase | Identify
)
SignalMessage: TypeAlias = ExitIntent | Hesitation | ScrollDepth | TimeOnPage
# The signals that ask for an offer, for isinstance checks.
SIGNALS = (ExitIntent, Hesitation, ScrollDepth, TimeOnPage)
OfferMessage: TypeAlias = OfferShown | OfferClicked | OfferDismissed | OfferCapture
PhoneMessage: TypeAlias = PhoneCapture | PhoneConfirm
ClientMessage: TypeAlias = (
    Hello | EventMessage | SignalMessage | OfferMessage | PhoneMessage | ConsentUpdate | Ping
)

# (type, name) -> struct; ``name`` is None for types without sub-kinds.
_MESSAGE_TYPES: dict[tuple[str, str | None], type[Struct]] = {
    ("hello", None): Hello,
    ("event", "page_view"): PageView,
    ("event", "product_view"): ProductView,
    ("event", "cart_add"): CartAdd,
    ("event", "cart_remove"): CartRemove,
    ("event", "cart_update"): CartUpdate,
    ("event", "checkout_start"): CheckoutStart,
    ("event", "purchase"): Purchase,
    ("event", "identify"): Identify,
    ("signal", "exit_intent"): ExitIntent,
    ("signal", "hesitation"): Hesitation,
    ("signal", "scroll_depth"): ScrollDepth,
    ("signal", "time_on_page"): TimeOnPage,
    ("offer_shown", None): OfferShown,
    ("offer_clicked", None): OfferClicked,
    ("offer_dismissed", None): OfferDismissed,
    ("offer_capture", None): OfferCapture,
    ("phone_capture", None): PhoneCapture,
    ("phone_confirm", None): PhoneConfirm,
    ("consent", None): ConsentUpdate,
    ("ping", None): Ping,
}
_TYPES_WITH_NAME = frozenset(t for t, n in _MESSAGE_TYPES if n is not None)

# The wire name of each message class, for code that stores or reports events.
WIRE_NAME: dict[type[Struct], str] = {
    cls: (name if name is not None else type_) for (type_, name), cls in _MESSAGE_TYPES.items()
}
WIRE_NAME[RecordedIdentify] = "identify"

_json_decoder = msgspec.json.Decoder()


def parse_client_message(frame: str | bytes) -> ClientMessage:
    """Parse one client frame into a typed message.

    Guarantees: returns one of the ``ClientMessage`` structs, or raises :class:`ProtocolError`
    (``bad_json``, ``bad_message``, ``missing_id``, ``unknown_type``, ``invalid_field``,
    ``unsupported_version``). No other exception escapes, whatever the input.
    """
    try:
        raw = _json_decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(BAD_JSON, f"frame is not valid JSON: {exc}") from None
    return message_from_object(raw)


def message_from_object(raw: Any) -> ClientMessage:
    """Validate an already-decoded JSON value (one element of an HTTP batch, say)."""
    if not isinstance(raw, dict):
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object")
    msg_id = raw.get("id")
    if not isinstance(msg_id, str) or not msg_id:
        raise ProtocolError(MISSING_ID, "every message needs a non-empty string 'id'")
    echo_id = msg_id[:64]
    type_ = raw.get("type")
    if not isinstance(type_, str):
        raise ProtocolError(BAD_MESSAGE, "'type' must be a string", message_id=echo_id)
    name = raw.get("name") if type_ in _TYPES_WITH_NAME else None
    if type_ in _TYPES_WITH_NAME and not isinstance(name, str):
        raise ProtocolError(
            BAD_MESSAGE, f"a '{type_}' message needs a string 'name'", message_id=echo_id
        )
    cls = _MESSAGE_TYPES.get((type_, name))
    if cls is None:
        what = f"{type_}/{name}" if name is not None else type_
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {what[:80]!r}", message_id=echo_id)
    if cls is Hello and "lang" in raw:
        raw = {**raw, "lang": clean_lang(raw["lang"])}  # a malformed locale: the site's
    if cls is Hello and "tz" in raw:
        raw = {**raw, "tz": clean_zone(raw["tz"])}  # a malformed time zone: the site's
    try:
        message = cast(ClientMessage, msgspec.convert(raw, cls))
    except msgspec.ValidationError as exc:
        raise ProtocolError(INVALID_FIELD, str(exc), message_id=echo_id) from None
    if isinstance(message, Hello) and message.v != PROTOCOL_VERSION:
        raise ProtocolError(
            UNSUPPORTED_VERSION,
            f"protocol version {message.v} is not supported; this server speaks {PROTOCOL_VERSION}",
            close_code=CLOSE_POLICY_VIOLATION,
            message_id=echo_id,
        )
    return message


# --- server -> client --------------------------------------------------------------------------


class ExitIntentConfig(Struct, frozen=True, gc=False, kw_only=True):
    """Thresholds the widget uses to detect exit intent (sent in ``welcome``)."""

    min_dwell_ms: int = 3000
    top_edge_px: int = 8
    min_upward_speed: float = 0.3  # px per ms over the pointer trail
    scroll_guard_ms: int = 600
    scroll_up_speed: float = 2.5  # px per ms, touch devices
    back_button: bool = True
    tab_switch: bool = True


class HesitationConfig(Struct, frozen=True, gc=False, kw_only=True):
    """Idle seconds per page type before the widget reports hesitation."""

    product: int = 20
    cart: int = 25
    checkout: int = 40


class WidgetConfig(Struct, frozen=True, gc=False, kw_only=True):
    exit_intent: ExitIntentConfig = ExitIntentConfig()
    hesitation: HesitationConfig = HesitationConfig()
    # The thresholds of the site's active campaigns the widget reports, in ascending order:
    # scroll depth in percent, seconds of the page in view (empty: report none).
    scroll_depth: list[int] = []
    time_on_page: list[int] = []
    heartbeat_s: int = 25
    max_frame_bytes: int = 16384


class Welcome(Struct, frozen=True, gc=False, kw_only=True, tag="welcome", tag_field="type"):
    v: int
    session: str
    visitor: str
    resumed: bool
    config: WidgetConfig


class Ack(Struct, frozen=True, gc=False, kw_only=True, tag="ack", tag_field="type"):
    ids: list[str]


class Error(
    Struct, frozen=True, gc=False, kw_only=True, tag="error", tag_field="type", omit_defaults=True
):
    code: str
    message: str
    id: str | None = None


class Pong(Struct, frozen=True, gc=False, kw_only=True, tag="pong", tag_field="type"):
    id: str


# --- server -> client: offer pushes ------------------------------------------------------------
# The offer object of ``arm`` and ``offer`` (docs/protocol.md, section 4). Fields that are always
# sent have no default; the optional ones default to None and are left out of the JSON when None
# (``omit_defaults``), so an absent field means "not part of this offer", never null.


class OfferCta(Struct, frozen=True, gc=False, kw_only=True):
    label: str
    url: str  # "" when the call to action only closes the overlay


class OfferTheme(Struct, frozen=True, gc=False, kw_only=True):
    accent: str
    background: str
    text: str
    radius: int


class OfferDiscount(Struct, frozen=True, gc=False, kw_only=True):
    type: str  # percent | fixed | free_shipping
    amount: float


class FreeShipping(Struct, frozen=True, gc=False, kw_only=True):
    threshold: float
    remaining: float  # what the cart still lacks, rounded to cents


class OfferProduct(Struct, frozen=True, gc=False, kw_only=True):
    id: str
    title: str
    price: float
    currency: str
    url: str
    image: str


class OfferReward(Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    """What an email capture gives, so the form can say what will happen: a code (shown at once,
    emailed with consent) and the button labels for both choices."""

    code: bool = False
    submit_with_email: str = ""  # the button when the consent box is ticked
    submit_on_screen: str = ""  # the button when it is not (the code on screen only)
    privacy_label: str = ""


class OfferTwoStep(Struct, frozen=True, gc=False, kw_only=True):
    """An email capture that asks first: the headline is the question, with these two buttons."""

    yes: str  # opens the email form
    no: str  # dismisses the offer ("declined")


class OfferPhone(Struct, frozen=True, gc=False, kw_only=True):
    """The words of an ``sms_capture`` form: its button, the code field, the code's button."""

    submit: str
    code: str
    confirm: str


class OfferApply(Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    """How the shop applies the offer's code (see the site's ``apply_code``)."""

    mode: str  # shopify | url | callback
    param: str = "coupon"  # url: the query parameter


class OfferBody(Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    id: str  # "<campaign>.<variant>", echoed in offer reports and matched by withdraw
    campaign: str
    variant: str
    kind: str
    headline: str
    body: str
    cta: OfferCta
    theme: OfferTheme
    discount: OfferDiscount | None = None  # variants with a discount
    free_shipping: FreeShipping | None = None  # free_shipping_progress offers
    products: list[OfferProduct] | None = None  # similar_products offers (may be empty)
    code: str | None = None  # offer: the code claimed for this visitor
    expires_at: int | None = None  # offer: unix time in milliseconds
    claim: str | None = None  # offer: the reservation's token, echoed in offer_shown
    consent_label: str | None = None  # email_capture: the consent sentence, in the page's language
    thanks: str | None = None  # email_capture: shown after submitting
    privacy_url: str | None = None  # email_capture: the shop's privacy policy
    reward: OfferReward | None = None  # email_capture: what submitting gives
    two_step: OfferTwoStep | None = None  # email_capture: a yes/no question before the form
    phone: OfferPhone | None = None  # sms_capture: the form's words
    layout: str | None = None  # slide_in | bar_top | bar_bottom; absent: popup
    apply: OfferApply | None = None  # offers with a code: how the shop applies it
    show_within: int | None = None  # offer: seconds left to paint it, else it counts nowhere
    kinds: list[str] | None = None  # arm: the exit-intent kinds that show it
    not_before: int | None = None  # arm: unix time in milliseconds
    scroll_depth: int | None = None  # arm: also shown at this scroll depth (percent)
    time_on_page: int | None = None  # arm: also shown after this many seconds on the page


class Arm(Struct, frozen=True, gc=False, kw_only=True, tag="arm", tag_field="type"):
    """Keep this offer ready; show it on the next exit intent (no code claimed yet)."""

    offer: OfferBody


class Offer(Struct, frozen=True, gc=False, kw_only=True, tag="offer", tag_field="type"):
    """Show this offer now (with the code claimed for the visitor, if any)."""

    offer: OfferBody


class Reward(Struct, frozen=True, gc=False, kw_only=True, tag="reward", tag_field="type"):
    """The answer to ``offer_capture``: the code for the address (if the campaign gives one)
    and what happens by email."""

    offer: str
    code: str | None = None
    expires_at: int | None = None  # unix time in milliseconds
    text: str = ""  # "Thank you! Here is your code:", in the page's language
    note: str = ""  # whether and when the code comes by email, in the page's language


class PhoneResult(
    Struct, frozen=True, gc=False, kw_only=True, tag="phone_result", tag_field="type",
    omit_defaults=True,
):  # fmt: skip
    """The answer to ``phone_capture`` / ``phone_confirm`` (``id`` echoes it): ``status``
    ``code_sent``, ``confirmed``, ``withdrawn`` or ``error`` with a stable ``error`` code and a
    ``message`` for the visitor."""

    id: str
    status: str
    phone: str = ""
    error: str = ""
    message: str = ""


ALL_OFFERS = "*"


class Withdraw(Struct, frozen=True, gc=False, kw_only=True, tag="withdraw", tag_field="type"):
    """Remove the offer with this id, or every offer (:data:`ALL_OFFERS`)."""

    offer: str


# The pushes of the offers engine: what may reach a visitor's sockets from any node.
Push: TypeAlias = Arm | Offer | Withdraw
ServerMessage: TypeAlias = Welcome | Ack | Error | Pong | Reward | PhoneResult | Push

_json_encoder = msgspec.json.Encoder()


def encode(message: ServerMessage) -> str:
    """Encode a server message as the text of one WebSocket frame."""
    return _json_encoder.encode(message).decode()


def error_for(exc: ProtocolError) -> Error:
    return Error(code=exc.code, message=exc.message, id=exc.message_id)
