"""The site-wide frequency policy: how many overlays one visitor sees across every campaign.

Pure (no I/O): the site record (:mod:`widget_server.store.sites`) carries it, the decision engine
pre-checks it, and ``lua/offer_reserve.lua`` enforces it atomically on the visitor's slot.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

Count = Annotated[int, Meta(ge=0, le=100)]


class Frequency(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits on the overlays one visitor sees across every campaign (0: no limit).

    Exit-intent and hesitation offers share ``per_session`` and ``per_day`` (days in the site's
    time zone), and a discount among them is refused while the visitor's last discount is more
    recent than ``discount_days``. Live offers have their own budget (``live_per_session``,
    ``live_per_day``): a flash sale still reaches a visitor who saw an exit offer, and a
    discount it shows counts as the visitor's last discount for the rule above.
    """

    per_session: Count = 1
    per_day: Count = 2
    discount_days: Annotated[int, Meta(ge=0, le=365)] = 7
    live_per_session: Count = 1
    live_per_day: Count = 2

    @property
    def limits(self) -> bool:
        """Whether any limit is set."""
        return bool(self.per_session or self.per_day or self.discount_days
                    or self.live_per_session or self.live_per_day)  # fmt: skip

    def describe(self) -> str:
        """The policy in words, for the admin and the command line."""

        def times(n: int, what: str) -> str:
            return "no limit " + what if n == 0 else f"{n} {what}"

        parts = [
            times(self.per_session, "per visit"),
            times(self.per_day, "per day"),
            "any number of discounts"
            if self.discount_days == 0
            else f"one discount per {self.discount_days} days",
            f"live offers: {times(self.live_per_session, 'per visit')}, "
            f"{times(self.live_per_day, 'per day')}",
        ]
        return "Offers: " + ", ".join(parts)
