"""What the store knows about a visitor right after a state change, as typed values: the session
and profile hashes the Lua scripts return, read without any I/O. Pure: the decision engine and the
offer and email code read visitors through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class CartLine:
    id: str
    quantity: int
    price: float
    title: str
    category: str
    brand: str


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the store knows about a visitor right after a state change."""

    session: dict[str, str]
    profile: dict[str, str]
    duplicate: bool = False
    note: str = ""  # offer_shown: seen, forged, replayed or late (see lua/session_event.lua)
    # The JSON this view was read from, when it says exactly what the view holds.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, raw: bytes | str, duplicate: bool | None = None) -> SessionView:
        """A view from the JSON the session scripts return (``{"s": {...}, "p": {...}, "dup":
        0|1, "note": ...}``) or that :meth:`to_json` wrote."""
        data = _json.decode(raw)
        return cls(
            session=data.get("s") or {},  # hash fields are strings already
            profile=data.get("p") or {},
            duplicate=bool(data.get("dup")) if duplicate is None else duplicate,
            note=str(data.get("note") or ""),
            raw=raw if isinstance(raw, bytes) and duplicate is None else None,
        )

    def to_json(self) -> bytes:
        """The view as compact JSON (about a quarter of the memory of its dictionaries, for a
        connection that keeps its visitor's last view while idle): the JSON it was read from
        when there is one, so keeping it costs nothing."""
        if self.raw is not None:
            return self.raw
        return _encode({"s": self.session, "p": self.profile, "dup": int(self.duplicate),
                        "note": self.note})  # fmt: skip

    @property
    def viewed_ids(self) -> tuple[str, ...]:
        """The products viewed in the session, oldest first."""
        viewed = _json.decode(self.session.get("viewed") or "[]")
        if not isinstance(viewed, list):  # Lua's cjson writes an empty table as {}
            return ()
        return tuple(str(v) for v in viewed)

    @property
    def cart_products(self) -> frozenset[str]:
        return frozenset(line.id for line in self.cart)

    @property
    def session_id(self) -> str:
        return self.session.get("id", "")

    def _num(self, field: str, source: dict[str, str] | None = None) -> float:
        raw = (self.session if source is None else source).get(field, "0")
        try:
            return float(raw)
        except ValueError:
            return 0.0

    @property
    def pages(self) -> int:
        return int(self._num("pages"))

    @property
    def cart_value(self) -> float:
        return self._num("cart_value")

    @property
    def cart_items(self) -> int:
        return int(self._num("cart_items"))

    @property
    def cart(self) -> list[CartLine]:
        lines = _json.decode(self.session.get("cart", "[]") or "[]")
        if not isinstance(lines, list):  # Lua's cjson writes an empty table as {}
            return []
        return [
            CartLine(
                id=str(line.get("id", "")),
                quantity=int(line.get("quantity", 1)),
                price=float(line.get("price", 0)),
                title=str(line.get("title", "")),
                category=str(line.get("category", "")),
                brand=str(line.get("brand", "")),
            )
            for line in lines
        ]

    @property
    def purchased(self) -> bool:
        return self.session.get("purchased") == "1"

    @property
    def visits(self) -> int:
        return int(self._num("visits", self.profile))

    @property
    def purchases(self) -> int:
        return int(self._num("purchases", self.profile))

    @property
    def revenue(self) -> float:
        return self._num("revenue", self.profile)
