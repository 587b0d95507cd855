"""Messages between nodes: each notice and the delivery envelope as JSON, and what does not decode
raises msgspec.DecodeError, nothing else."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widget_server.wire import nodes
from widget_server.wire import protocol as p


@pytest.mark.parametrize(
    ("notice", "wire"),
    [
        (nodes.CampaignsChanged(site="s1"), '{"kind":"campaigns_changed","site":"s1"}'),
        (nodes.SiteChanged(site="s1"), '{"kind":"site_changed","site":"s1"}'),
        (nodes.LiveStarted(site="s1", campaign="c"), '{"kind":"live","site":"s1","campaign":"c"}'),
        (
            nodes.SitePush(site="s1", msg=p.Withdraw(offer="*")),
            '{"kind":"push","site":"s1","msg":{"type":"withdraw","offer":"*"}}',
        ),
    ],
)  # fmt: skip
def test_notices_encode_and_decode(notice: nodes.Notice, wire: str) -> None:
    assert nodes.encode(notice) == wire.encode()
    assert nodes.decode_notice(wire) == notice


def test_the_site_registry_json_is_a_site_changed_notice() -> None:
    # store/sites.py sits below wire/ and writes this JSON itself.
    raw = msgspec.json.encode({"kind": "site_changed", "site": "s1"})
    assert nodes.decode_notice(raw) == nodes.SiteChanged(site="s1")


def test_erased_is_relayed_as_before() -> None:
    assert nodes.encode(nodes.Erased()) == b'{"type":"erased"}'


@pytest.mark.parametrize(
    "message", [nodes.Erased(), p.Withdraw(offer="ten.a"), p.Arm(offer=p.OfferBody(
        id="ten.a", campaign="ten", variant="a", kind="discount", headline="Wait", body="",
        cta=p.OfferCta(label="", url=""),
        theme=p.OfferTheme(accent="#000000", background="#ffffff", text="#000000", radius=0),
        kinds=["top_edge"], not_before=1767225600000))],
)  # fmt: skip
def test_a_delivery_round_trips(message: nodes.Relayed) -> None:
    delivery = nodes.Delivery(to=["c1", "c2"], msg=message)
    assert nodes.decode_delivery(nodes.encode(delivery)) == delivery
    assert json.loads(nodes.encode(delivery))["to"] == ["c1", "c2"]


def test_unknown_fields_from_a_newer_node_are_ignored() -> None:
    raw = '{"kind":"campaigns_changed","site":"s1","by":"someone"}'
    assert nodes.decode_notice(raw) == nodes.CampaignsChanged(site="s1")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff",
        b"null",
        b"[]",
        b'{"kind":"campaigns_changed"}',
        b'{"kind":"other","site":"s1"}',
        b'{"kind":"push","site":"s1","msg":{"type":"welcome"}}',
        b'{"kind":"push","site":"s1","msg":{"type":"erased"}}',
        b'{"to":["c1"],"msg":{"type":"withdraw","offer":"*"}}',
    ],
)
def test_malformed_notices_raise_decode_errors(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        nodes.decode_notice(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=15,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["campaigns_changed", "site_changed", "live", "push", "x"]),
        "site": json_values,
        "campaign": json_values,
        "to": json_values | st.lists(st.text(max_size=5), max_size=3),
        "msg": json_values
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["arm", "offer", "withdraw", "erased", "ack"])},
            optional={"offer": json_values},
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | envelopes.map(lambda e: json.dumps(e).encode()))
def test_anything_on_the_bus_decodes_or_raises_a_decode_error(raw: bytes) -> None:
    for decode in (nodes.decode_notice, nodes.decode_delivery):
        with contextlib.suppress(msgspec.DecodeError):
            decode(raw)
