"""The buyers of one experiment version, for revenue capping and the regression adjustment.

``lua/offer_attribute.lua`` keeps one record per attributed buyer, under a random id (never
the visitor's): the arm, the covariates frozen at exposure, and the buyer's revenue total at
the end of each day they ordered. From these, every look of the report (the cumulative counts
at the end of a day) gets

- revenue per visitor capped at the report's cap (winsorised: ``Σmin(y, C)`` and
  ``Σmin(y, C)²``), the cap being a percentile of the control's buyers' revenue;
- the covariates' sums with the outcomes, ``Σx`` over the visitors who converted and
  ``Σx·y`` with their (capped) revenue, which :mod:`.adjust` needs.

The sums are exact at every look, as a buyer's total at a look is the last one of a day up to
it. A look whose number of buyers in an arm is not its conversions (records missing: the
version started before they were kept) gets neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..store.replies import reply_text
from .adjust import RevenueCap, percentile
from .stats import Counts, VariantCounts


@dataclass(frozen=True, slots=True)
class Buyer:
    arm: str
    x: tuple[float, ...] | None  # the covariates at exposure (None: not kept)
    totals: tuple[tuple[str, float], ...]  # (day key, revenue total at its end), oldest first


def parse_buyers(raw: Mapping[Any, Any]) -> list[Buyer]:
    """The records of a buyers hash (bytes or text); malformed ones are left out."""
    out = []
    for value in raw.values():
        try:
            record = json.loads(reply_text(value))
            days = sorted((str(day), float(total)) for day, total in dict(record["d"]).items())
            text = str(record.get("x") or "")
            x = tuple(float(part) for part in text.split(",")) if text else None
            out.append(Buyer(str(record["a"]), x, tuple(days)))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def revenue_cap(
    buyers: Iterable[Buyer],
    control: str,
    at_percentile: float,
    min_buyers: int,
    conversions: int | None = None,
) -> RevenueCap:
    """The ``at_percentile`` percentile of the control's buyers' revenue totals (buyers with
    revenue above 0, at their last day), or no cap while the control has fewer than
    ``min_buyers`` of them, or when its records are fewer than its ``conversions`` (a version
    that started before they were kept)."""
    mine = [b for b in buyers if b.arm == control and b.totals]
    if conversions is not None and len(mine) < conversions:
        return RevenueCap(at_percentile, None, len(mine),
                          reason="the buyers' revenue was not kept for every buyer of this"
                                 " experiment version (it started before it was)")  # fmt: skip
    totals = [t for t in (b.totals[-1][1] for b in mine) if t > 0]
    if len(totals) < max(1, min_buyers):
        return RevenueCap(at_percentile, None, len(totals),
                          reason=f"the control has {len(totals)} of the {min_buyers} buyers"
                                 " a cap is computed from")  # fmt: skip
    return RevenueCap(at_percentile, percentile(totals, at_percentile), len(totals))


def with_buyers(
    series: Sequence[tuple[str, Counts]], buyers: Iterable[Buyer], cap: float | None
) -> tuple[list[tuple[str, dict[str, VariantCounts]]], int]:
    """``series`` (cumulative looks, oldest first) with each arm's capped revenue and the
    covariates' sums with the outcomes, where the buyers' records are complete; and how many
    buyers the cap reached at the last look."""
    buyers_list = list(buyers)
    events = sorted(
        (day, n, total) for n, buyer in enumerate(buyers_list) for day, total in buyer.totals
    )
    state: dict[str, _Arm] = {}
    current: dict[int, float] = {}
    out: list[tuple[str, dict[str, VariantCounts]]] = []
    i = 0
    for day, counts in series:
        while i < len(events) and events[i][0] <= day:
            _, n, total = events[i]
            buyer = buyers_list[n]
            state.setdefault(buyer.arm, _Arm()).move(buyer, current.get(n), total, cap)
            current[n] = total
            i += 1
        look = {}
        for arm, c in counts.items():
            sums = state.get(arm, _Arm())
            look[arm] = sums.applied(c, cap) if sums.buyers == c.conversions else c
        out.append((day, look))
    reached = sum(1 for total in current.values() if cap is not None and total > cap)
    return out, reached


class _Arm:
    """Running sums of an arm's buyers at a look."""

    def __init__(self) -> None:
        self.buyers = 0
        self.revenue = 0.0
        self.revenue_sq = 0.0
        self.xc: list[float] | None = []
        self.xr: list[float] | None = []

    def move(self, buyer: Buyer, before: float | None, after: float, cap: float | None) -> None:
        """A buyer's total goes from ``before`` (None: not a buyer yet) to ``after``."""
        old = 0.0 if before is None else (before if cap is None else min(before, cap))
        new = after if cap is None else min(after, cap)
        self.revenue += new - old
        self.revenue_sq += new * new - old * old
        if before is None:
            self.buyers += 1
        if buyer.x is None or self.xc is None or self.xr is None:
            self.xc = self.xr = None  # one buyer without covariates: no sums for the arm
            return
        if not self.xc:
            self.xc, self.xr = [0.0] * len(buyer.x), [0.0] * len(buyer.x)
        if len(buyer.x) != len(self.xc):
            self.xc = self.xr = None
            return
        for j, value in enumerate(buyer.x):
            if before is None:
                self.xc[j] += value
            self.xr[j] += value * (new - old)

    def applied(self, counts: VariantCounts, cap: float | None) -> VariantCounts:
        out = counts
        if cap is not None:
            out = replace(out, capped_revenue=self.revenue, capped_revenue_sq=self.revenue_sq)
        moments = counts.moments
        if moments is not None and self.xc is not None and self.xr is not None:
            k = moments.k
            xc = tuple(self.xc) if self.xc else (0.0,) * k
            xr = tuple(self.xr) if self.xr else (0.0,) * k
            if len(xc) == k:
                out = replace(out, moments=replace(moments, xc=xc, xr=xr))
        return out


def capped_series(
    series: Sequence[tuple[str, Counts]],
    buyers: list[Buyer],
    control: str,
    at_percentile: float | None,
    min_buyers: int,
) -> tuple[list[tuple[str, dict[str, VariantCounts]]], RevenueCap | None]:
    """``series`` as the tests take it (:func:`with_buyers`), revenue capped at the
    ``at_percentile`` percentile of the control's buyers (None: not capped), and the cap."""
    cap = None
    if at_percentile is not None:
        last = series[-1][1].get(control) if series else None
        converted = last.conversions if last is not None else 0
        cap = revenue_cap(buyers, control, at_percentile, min_buyers, converted)
    tested, reached = with_buyers(series, buyers, cap.cap if cap is not None else None)
    return tested, replace(cap, capped=reached) if cap is not None else None
