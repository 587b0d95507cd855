"""Messages between server nodes over pub/sub: deliveries and broadcast notices. Pure.

Each node listens on two channels (``store/keys.py`` names them):

- its own node channel, which carries :class:`Delivery` envelopes: a message for some of the
  sockets this node holds. The hub builds one per node from the connection ids in the
  visitor's connections hash;
- the broadcast channel, which carries one :data:`Notice`, tagged by ``kind``, for every node.

Whatever arrives is decoded into these types; a message that does not decode
(:class:`msgspec.DecodeError`, of which :class:`msgspec.ValidationError` is one) is not ours to
act on, and the receiver drops it. Unknown fields are ignored, so a newer node can add some.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec
from msgspec import Struct

from .protocol import Push


class Erased(Struct, frozen=True, gc=False, kw_only=True, tag="erased", tag_field="type"):
    """Relayed to a visitor's sockets when the visitor is erased: each withdraws every offer and
    closes. A node instruction, never sent to a widget."""


Relayed: TypeAlias = Push | Erased


class Delivery(Struct, frozen=True, gc=False, kw_only=True):
    """A message for some sockets of one node (``{"to": [connection ids], "msg": ...}``)."""

    to: list[str]
    msg: Relayed


class CampaignsChanged(
    Struct, frozen=True, kw_only=True, tag="campaigns_changed", tag_field="kind"
):
    """A site's campaigns changed: drop the cached ones, re-arm the site's sockets."""

    site: str


class SiteChanged(
    Struct, frozen=True, gc=False, kw_only=True, tag="site_changed", tag_field="kind"
):
    """A site's settings changed: drop the cached site. Published by ``store/sites.py``, which
    sits below this layer and writes the same JSON itself."""

    site: str


class LiveStarted(Struct, frozen=True, gc=False, kw_only=True, tag="live", tag_field="kind"):
    """A live broadcast of a campaign started: offer it to the site's sockets."""

    site: str
    campaign: str


class SitePush(Struct, frozen=True, gc=False, kw_only=True, tag="push", tag_field="kind"):
    """A push for every socket of a site."""

    site: str
    msg: Push


Notice: TypeAlias = CampaignsChanged | SiteChanged | LiveStarted | SitePush

_encoder = msgspec.json.Encoder()
_delivery = msgspec.json.Decoder(Delivery)
_notice = msgspec.json.Decoder(Notice)


def encode(message: Notice | Relayed | Delivery) -> bytes:
    """The JSON of a notice to publish, or of a delivery (or the message it relays)."""
    return _encoder.encode(message)


def decode_delivery(data: bytes | str) -> Delivery:
    """A node channel's message; raises :class:`msgspec.DecodeError` if it is not one."""
    return _delivery.decode(data)


def decode_notice(data: bytes | str) -> Notice:
    """A broadcast channel's message; raises :class:`msgspec.DecodeError` if it is not one."""
    return _notice.decode(data)
