"""What a feed import changed that shoppers care about: lower prices, products back in stock or
running low, and new products, found by comparing each stored product with the one imported.

Only products whose content changed are compared (:meth:`CatalogStore.upsert` hands them over
with the stored product, read in the round trip that writes the new one), so an import of an
unchanged feed costs nothing here. The thresholds come from the site's email flows
(:class:`ChangeRules`); the counts go into the import report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .feeds import Product

ChangeKind = Literal["price_drop", "back_in_stock", "low_stock", "category_interest"]
CHANGE_KINDS: tuple[ChangeKind, ...] = (
    "price_drop",
    "back_in_stock",
    "low_stock",
    "category_interest",
)
# Products of one kind kept per import for the emails (all are counted): an import that
# changes more than this (a site-wide sale) announces the first ones in feed order.
MAX_KEPT = 5000
DEFAULT_MIN_DROP_PERCENT = 5.0
DEFAULT_LOW_STOCK_QUANTITY = 5


@dataclass(frozen=True, slots=True)
class ChangeRules:
    """When a change counts: a price lowered by at least ``min_drop_percent`` of the old
    effective price; low stock at ``low_stock_quantity`` units or fewer (the feed's
    ``quantity``). New products count only when the feed had products before (a site's first
    import is not a wave of new arrivals)."""

    min_drop_percent: float = DEFAULT_MIN_DROP_PERCENT
    low_stock_quantity: int = DEFAULT_LOW_STOCK_QUANTITY
    new_products: bool = True


@dataclass(frozen=True, slots=True)
class ProductChange:
    """One product one import changed in a way of ``kind``; ``mark`` names this change (the
    new price of a price drop), so the same change imported again is not a new one."""

    kind: ChangeKind
    product_id: str
    category: str = ""
    mark: str = ""
    weight: float = 0.0  # what orders the products of an email: the share of a price drop


def category_of(product: Product) -> str:
    """The category a product counts under for category interest: its ``product_type`` (the
    shop's own), else its Google product category, lower-cased; "" without either."""
    return (product.product_type or product.google_product_category).strip().lower()


def low_stock(product: Product, rules: ChangeRules) -> bool:
    """In stock with a known count of at most ``low_stock_quantity`` (and more than none)."""
    quantity = product.quantity
    return (
        product.availability == "in_stock"
        and quantity is not None
        and 0 < quantity <= rules.low_stock_quantity
    )


def detect(before: Product | None, after: Product, rules: ChangeRules) -> list[ProductChange]:
    """The changes from ``before`` (the stored feed product, None when the feed did not have
    it) to ``after``. Out of stock -> available is ``back_in_stock`` (and then not also low
    stock); available -> low stock is ``low_stock``; a lower effective price, by at least the
    threshold, of a product still available is ``price_drop``."""
    if before is None:
        if not rules.new_products or not after.available:
            return []
        return [ProductChange("category_interest", after.id, category_of(after))]
    found: list[ProductChange] = []
    category = category_of(after)
    if not before.available and after.available:
        found.append(ProductChange("back_in_stock", after.id, category))
    elif after.available and low_stock(after, rules) and not low_stock(before, rules):
        quantity = str(after.quantity)
        found.append(ProductChange("low_stock", after.id, category, quantity))
    old, new = before.effective_price, after.effective_price
    same_currency = before.currency == after.currency or "" in (before.currency, after.currency)
    dropped = old > 0 and new > 0 and (old - new) * 100 >= old * rules.min_drop_percent
    if after.available and same_currency and dropped:
        found.append(
            ProductChange("price_drop", after.id, category, f"{new:.2f}", (old - new) / old)
        )
    return found


@dataclass(slots=True)
class ImportChanges:
    """The changes of one import: counted per kind, the first :data:`MAX_KEPT` of each kept."""

    rules: ChangeRules = field(default_factory=ChangeRules)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    kept: dict[str, list[ProductChange]] = field(
        default_factory=lambda: {kind: [] for kind in CHANGE_KINDS}
    )

    def observe(self, pairs: Sequence[tuple[Product | None, Product]]) -> None:
        """Compare the products an upsert changed (a :data:`ChangeObserver`)."""
        for before, after in pairs:
            for change in detect(before, after, self.rules):
                self.counts[change.kind] += 1
                if len(self.kept[change.kind]) < MAX_KEPT:
                    self.kept[change.kind].append(change)

    def any(self) -> bool:
        return any(self.counts.values())


class ImportTriggers(Protocol):
    """What a feed import asks before it starts (the thresholds of the site's flows) and tells
    when it is done (its changes, to schedule emails; returns how many visitors get one)."""

    async def rules(self, site: str) -> ChangeRules: ...

    async def after_import(self, site: str, changes: ImportChanges, *, at: float) -> int: ...
