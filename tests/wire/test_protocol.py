"""The wire protocol is pure: every frame parses to a typed message or a typed ProtocolError."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widget_server.errors import ProtocolError
from widget_server.wire import protocol as p


def frame(**fields: object) -> str:
    return json.dumps({"id": "m1", **fields})


def test_hello_parses_with_page_and_consent() -> None:
    message = p.parse_client_message(
        frame(
            type="hello",
            v=1,
            site="shop_1",
            visitor="visitor-123",
            page={"url": "https://shop.test/p/1", "page_type": "product"},
            consent={"analytics": True},
            device="mobile",
        )
    )
    assert isinstance(message, p.Hello)
    assert message.page is not None and message.page.page_type == "product"
    assert message.consent.analytics and not message.consent.marketing
    assert message.device == "mobile"


@pytest.mark.parametrize(
    ("fields", "cls"),
    [
        ({"type": "event", "name": "page_view", "url": "https://s.test/"}, p.PageView),
        ({"type": "event", "name": "product_view", "product": {"id": "P1"}}, p.ProductView),
        ({"type": "event", "name": "cart_add", "item": {"id": "P1", "price": 3}}, p.CartAdd),
        ({"type": "event", "name": "cart_remove", "item": {"id": "P1"}}, p.CartRemove),
        ({"type": "event", "name": "cart_update", "items": []}, p.CartUpdate),
        ({"type": "event", "name": "checkout_start"}, p.CheckoutStart),
        ({"type": "event", "name": "purchase", "order_id": "o1", "value": 10}, p.Purchase),
        ({"type": "event", "name": "identify", "email": "a@b.co", "consent": True}, p.Identify),
        ({"type": "signal", "name": "exit_intent", "kind": "top_edge"}, p.ExitIntent),
        ({"type": "signal", "name": "hesitation", "seconds": 12.5}, p.Hesitation),
        ({"type": "signal", "name": "scroll_depth", "percent": 60}, p.ScrollDepth),
        ({"type": "signal", "name": "time_on_page", "seconds": 20}, p.TimeOnPage),
        ({"type": "offer_shown", "offer": "o-1"}, p.OfferShown),
        ({"type": "offer_clicked", "offer": "o-1", "action": "code_copy"}, p.OfferClicked),
        ({"type": "offer_dismissed", "offer": "o-1", "how": "escape"}, p.OfferDismissed),
        ({"type": "consent", "analytics": False}, p.ConsentUpdate),
        ({"type": "ping"}, p.Ping),
    ],
)
def test_every_client_message_type_parses(fields: dict[str, object], cls: type) -> None:
    message = p.parse_client_message(frame(**fields))
    assert type(message) is cls
    assert message.id == "m1"


def test_a_two_step_capture_reports_its_yes_and_its_no() -> None:
    yes = p.parse_client_message(frame(type="offer_clicked", offer="o-1", action="yes"))
    no = p.parse_client_message(frame(type="offer_dismissed", offer="o-1", how="declined"))
    assert isinstance(yes, p.OfferClicked) and yes.action == "yes"
    assert isinstance(no, p.OfferDismissed) and no.how == "declined"
    with pytest.raises(ProtocolError) as info:
        p.parse_client_message(frame(type="offer_dismissed", offer="o-1", how="maybe"))
    assert info.value.code == p.INVALID_FIELD


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    message = p.parse_client_message(frame(type="ping", future_field={"x": 1}))
    assert isinstance(message, p.Ping)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", p.BAD_JSON),
        (b"\xff\xfe", p.BAD_JSON),
        ("[]", p.BAD_MESSAGE),
        ('"hello"', p.BAD_MESSAGE),
        ('{"type": "ping"}', p.MISSING_ID),
        ('{"id": "", "type": "ping"}', p.MISSING_ID),
        ('{"id": 7, "type": "ping"}', p.MISSING_ID),
        ('{"id": "a", "type": 5}', p.BAD_MESSAGE),
        ('{"id": "a", "type": "teleport"}', p.UNKNOWN_TYPE),
        ('{"id": "a", "type": "event"}', p.BAD_MESSAGE),
        ('{"id": "a", "type": "event", "name": "explode"}', p.UNKNOWN_TYPE),
        (
            '{"id": "a", "type": "signal", "name": "exit_intent", "kind": "psychic"}',
            p.INVALID_FIELD,
        ),
        (
            '{"id": "a", "type": "event", "name": "cart_add", "item": {"id": "x", "quantity": 0}}',
            p.INVALID_FIELD,
        ),
        (
            '{"id": "a", "type": "event", "name": "purchase", "order_id": "o", "value": -1}',
            p.INVALID_FIELD,
        ),
        (
            '{"id": "a", "type": "event", "name": "identify", "email": "a@b.co\\r\\nBcc: x@y.z"}',
            p.INVALID_FIELD,
        ),
        ('{"id": "a", "type": "signal", "name": "scroll_depth"}', p.INVALID_FIELD),
        ('{"id": "a", "type": "signal", "name": "scroll_depth", "percent": 101}', p.INVALID_FIELD),
        ('{"id": "a", "type": "signal", "name": "scroll_depth", "percent": 50.5}', p.INVALID_FIELD),
        ('{"id": "a", "type": "signal", "name": "scroll_depth", "percent": "50"}', p.INVALID_FIELD),
        ('{"id": "a", "type": "signal", "name": "time_on_page", "seconds": -1}', p.INVALID_FIELD),
        (
            '{"id": "a", "type": "signal", "name": "time_on_page", "seconds": 86401}',
            p.INVALID_FIELD,
        ),
        ('{"id": "a b", "type": "ping"}', p.INVALID_FIELD),
        ('{"id": "a", "type": "hello", "site": "s", "visitor": "short"}', p.INVALID_FIELD),
        ('{"id": "a", "type": "hello", "site": "s{x}", "visitor": "visitor-1"}', p.INVALID_FIELD),
    ],
)
def test_bad_frames_raise_typed_errors(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_client_message(raw)
    assert info.value.code == code


def test_errors_echo_the_message_id_when_readable() -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_client_message('{"id": "abc", "type": "signal", "name": "exit_intent"}')
    assert info.value.message_id == "abc"
    assert "kind" in info.value.message


def test_newer_protocol_version_is_refused_with_a_close_code() -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_client_message(frame(type="hello", v=2, site="s", visitor="visitor-1"))
    assert info.value.code == p.UNSUPPORTED_VERSION
    assert info.value.close_code == 1008


def test_server_messages_encode_as_typed_json() -> None:
    assert json.loads(p.encode(p.Ack(ids=["a", "b"]))) == {"type": "ack", "ids": ["a", "b"]}
    assert json.loads(p.encode(p.Error(code="x", message="y"))) == {
        "type": "error",
        "code": "x",
        "message": "y",
    }
    welcome = json.loads(
        p.encode(
            p.Welcome(v=1, session="s" * 8, visitor="v" * 8, resumed=False, config=p.WidgetConfig())
        )
    )
    assert welcome["type"] == "welcome"
    assert welcome["config"]["exit_intent"]["min_dwell_ms"] == 3000


THEME = p.OfferTheme(accent="#0a7d5a", background="#ffffff", text="#1f1f1f", radius=12)


def offer_body(**fields: object) -> p.OfferBody:
    base: dict[str, object] = {
        "id": "ten.a",
        "campaign": "ten",
        "variant": "a",
        "kind": "discount",
        "headline": "Wait",
        "body": "",
        "cta": p.OfferCta(label="Back to my cart", url=""),
        "theme": THEME,
    }
    return p.OfferBody(**{**base, **fields})  # type: ignore[arg-type]


def test_an_offer_without_optional_fields_leaves_them_out() -> None:
    assert p.encode(p.Offer(offer=offer_body())) == (
        '{"type":"offer","offer":{"id":"ten.a","campaign":"ten","variant":"a","kind":"discount",'
        '"headline":"Wait","body":"","cta":{"label":"Back to my cart","url":""},'
        '"theme":{"accent":"#0a7d5a","background":"#ffffff","text":"#1f1f1f","radius":12}}}'
    )


def test_arm_carries_kinds_and_not_before_but_no_code() -> None:
    armed = p.Arm(
        offer=offer_body(
            discount=p.OfferDiscount(type="percent", amount=10.0),
            kinds=["top_edge", "back_button"],
            not_before=0,
        )
    )
    assert json.loads(p.encode(armed)) == {
        "type": "arm",
        "offer": {
            "id": "ten.a",
            "campaign": "ten",
            "variant": "a",
            "kind": "discount",
            "headline": "Wait",
            "body": "",
            "cta": {"label": "Back to my cart", "url": ""},
            "theme": {"accent": "#0a7d5a", "background": "#ffffff", "text": "#1f1f1f",
                      "radius": 12},
            "discount": {"type": "percent", "amount": 10.0},
            "kinds": ["top_edge", "back_button"],
            "not_before": 0,  # zero is a value, not an absent field
        },
    }  # fmt: skip


def test_offer_carries_code_expiry_products_and_free_shipping_when_set() -> None:
    product = p.OfferProduct(id="SKU-1", title="Hoodie", price=89.0, currency="EUR",
                             url="https://shop.test/p/1", image="")  # fmt: skip
    offer = p.Offer(
        offer=offer_body(
            kind="similar_products",
            free_shipping=p.FreeShipping(threshold=60.0, remaining=17.5),
            products=[product],
            code="STAY10-4KQ9",
            expires_at=1767225600000,
        )
    )
    body = json.loads(p.encode(offer))["offer"]
    assert body["code"] == "STAY10-4KQ9" and body["expires_at"] == 1767225600000
    assert body["free_shipping"] == {"threshold": 60.0, "remaining": 17.5}
    assert body["products"] == [
        {"id": "SKU-1", "title": "Hoodie", "price": 89.0, "currency": "EUR",
         "url": "https://shop.test/p/1", "image": ""}
    ]  # fmt: skip
    assert "discount" not in body and "kinds" not in body and "not_before" not in body
    # A similar-products offer with nothing to recommend still says so: an empty list.
    empty = json.loads(p.encode(p.Offer(offer=offer_body(products=[]))))["offer"]
    assert empty["products"] == []


def test_withdraw_names_one_offer_or_every_offer() -> None:
    assert p.encode(p.Withdraw(offer="ten.a")) == '{"type":"withdraw","offer":"ten.a"}'
    assert p.encode(p.Withdraw(offer=p.ALL_OFFERS)) == '{"type":"withdraw","offer":"*"}'


texts = st.text(max_size=30)
floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
offer_products = st.builds(
    p.OfferProduct, id=texts, title=texts, price=floats, currency=texts, url=texts, image=texts
)
offer_bodies = st.builds(
    p.OfferBody,
    id=texts,
    campaign=texts,
    variant=texts,
    kind=texts,
    headline=texts,
    body=texts,
    cta=st.builds(p.OfferCta, label=texts, url=texts),
    theme=st.builds(p.OfferTheme, accent=texts, background=texts, text=texts, radius=ints),
    discount=st.none() | st.builds(p.OfferDiscount, type=texts, amount=floats),
    free_shipping=st.none() | st.builds(p.FreeShipping, threshold=floats, remaining=floats),
    products=st.none() | st.lists(offer_products, max_size=3),
    code=st.none() | texts,
    expires_at=st.none() | ints,
    kinds=st.none() | st.lists(texts, max_size=6),
    not_before=st.none() | ints,
    two_step=st.none() | st.builds(p.OfferTwoStep, yes=texts, no=texts),
    layout=st.none() | st.sampled_from(["slide_in", "bar_top", "bar_bottom"]),
)
server_message = msgspec.json.Decoder(p.ServerMessage)


@settings(max_examples=300, deadline=None)
@given(offer_bodies, st.sampled_from([p.Arm, p.Offer]))
def test_any_offer_body_encodes_and_decodes_round_trip(
    body: p.OfferBody, push: type[p.Arm | p.Offer]
) -> None:
    message = push(offer=body)
    text = p.encode(message)
    assert server_message.decode(text) == message
    # Exactly the fields that are set are on the wire: an absent one is never null.
    sent = json.loads(text)["offer"]
    assert set(sent) == {f for f, v in msgspec.structs.asdict(body).items() if v is not None}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([("scroll_depth", "percent", 100), ("time_on_page", "seconds", 86_400)]),
    st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none(),
)
def test_scroll_depth_and_time_on_page_take_whole_numbers_in_their_range(
    signal: tuple[str, str, int], value: object
) -> None:
    name, field, top = signal
    raw = frame(type="signal", name=name, **{field: value})
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and 0 <= value <= top:  # type: ignore[operator]
        assert getattr(p.parse_client_message(raw), field) == value
    else:
        with pytest.raises(ProtocolError) as info:
            p.parse_client_message(raw)
        assert info.value.code == p.INVALID_FIELD and info.value.message_id == "m1"
        assert f"`$.{field}`" in info.value.message or field in info.value.message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_a_protocol_error(data: bytes) -> None:
    try:
        p.parse_client_message(data)
    except ProtocolError as exc:
        assert exc.code


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=70) | st.integers(),
            "type": st.sampled_from(
                [
                    "hello",
                    "event",
                    "signal",
                    "offer_shown",
                    "offer_clicked",
                    "offer_dismissed",
                    "consent",
                    "ping",
                    "other",
                ]
            ),
        },
        optional={
            "name": st.sampled_from([n for _, n in p._MESSAGE_TYPES if n] + ["zzz"]),
            "item": json_values,
            "product": json_values,
            "items": json_values,
            "kind": json_values,
            "seconds": json_values,
            "percent": json_values,
            "url": json_values,
            "order_id": json_values,
            "value": json_values,
            "email": json_values,
            "site": json_values,
            "visitor": json_values,
            "offer": json_values,
            "analytics": json_values,
            "v": json_values,
        },
    )
)
def test_structured_garbage_never_escapes_as_another_exception(raw: dict[str, object]) -> None:
    try:
        message = p.parse_client_message(json.dumps(raw))
    except ProtocolError as exc:
        assert exc.code in {
            p.BAD_JSON,
            p.BAD_MESSAGE,
            p.MISSING_ID,
            p.UNKNOWN_TYPE,
            p.INVALID_FIELD,
            p.UNSUPPORTED_VERSION,
        }
    else:
        assert message.id == raw["id"]


def test_a_hello_takes_the_browsers_time_zone_and_reads_a_bad_one_as_none() -> None:
    def hello(tz: object) -> p.Hello:
        raw = {"type": "hello", "id": "h1", "v": 1, "site": "shop", "visitor": "v" * 22, "tz": tz}
        message = p.parse_client_message(json.dumps(raw))
        assert isinstance(message, p.Hello)
        return message

    for zone in ("Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", "Etc/GMT+5"):
        assert hello(zone).tz == zone
    for bad in ("../../etc/passwd", "Europe/Berlin\n", "x" * 500, 7, None, "", "Europe//X"):
        assert hello(bad).tz == ""


@given(st.text(max_size=80))
def test_any_time_zone_text_is_kept_or_dropped_never_refused(text: str) -> None:
    cleaned = p.clean_zone(text)
    assert cleaned in ("", text)
    assert "\n" not in cleaned and ".." not in cleaned and len(cleaned) <= 64
