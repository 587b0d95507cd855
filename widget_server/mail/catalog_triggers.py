"""Emails a feed import starts: price drops, back in stock, low stock, new in a category.

A feed import with :class:`CatalogTriggers` counts what changed (``catalog/changes.py``, with the
thresholds of the site's flows: ``min_drop_percent`` of the ``price_drop`` flow, default 5 %,
and ``low_stock_quantity`` of the ``low_stock`` flow, default 5 units) and then hands the
changes here:

- a product whose price dropped, that is back in stock or running low goes to the visitors who
  viewed or carted it in the last 30 days (``catalog/interest.py``), the latest
  :data:`PER_PRODUCT` of them;
- new products (absent from the catalog before the import) go to the visitors whose favourite
  categories include theirs: among the last 50 distinct products the visitor viewed (their
  profile's ``viewed``), the :data:`TOP_CATEGORIES` categories with the most products, ties
  going to the one viewed last. Candidates come from the category's interest set.

Every visitor gets one email per import: the flow of the highest priority among their changes
(:data:`~widget_server.mail.flows.KIND_PRIORITY`, or the flow's ``priority``), showing up to
three of its products (biggest price drop first; else in feed order). It is scheduled with
:meth:`~widget_server.mail.jobs.MailScheduler.schedule_flow`, which checks the address, the
consent, suppressions and both holdouts and counts the exposure in the flow's report; the
worker then applies the budget, the quiet hours and priorities, and shows only products still
available. Once-only: each email's occurrence names its products and their change (the new
price; the import for stock changes), so the same change imported twice emails no one twice.
At most :data:`PER_IMPORT` visitors per import get one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..catalog.changes import (
    CHANGE_KINDS,
    ChangeKind,
    ChangeRules,
    ImportChanges,
    ProductChange,
    category_of,
)
from ..catalog.feeds import Product
from ..catalog.interest import InterestIndex
from ..catalog.store import CatalogStore
from ..errors import StoreUnavailable
from ..store.keys import Keys
from ..store.replies import reply_text
from .context import MailContext
from .flows import Flow
from .jobs import MailScheduler

log = logging.getLogger("widget_server.mail")
PER_PRODUCT = 200
PER_IMPORT = 5000
TOP_CATEGORIES = 3
EMAIL_PRODUCTS = 3
_MAX_OCCURRENCE = 120


@dataclass(slots=True)
class _Plan:
    """What one visitor could be emailed about after one import, by kind."""

    changes: dict[ChangeKind, list[ProductChange]] = field(default_factory=dict)

    def add(self, change: ProductChange) -> None:
        found = self.changes.setdefault(change.kind, [])
        if all(c.product_id != change.product_id for c in found):
            found.append(change)


def occurrence(kind: str, changes: Sequence[ProductChange], at: float) -> str:
    """The once-only name of an email about ``changes``: ``id@price`` for a price drop,
    ``id@import`` for stock changes, ``id`` for a new product (new once); several joined by
    ``+``, or a digest when that is long or has a ``:``."""
    parts = []
    for change in changes:
        if kind == "price_drop":
            parts.append(f"{change.product_id}@{change.mark}")
        elif kind == "category_interest":
            parts.append(change.product_id)
        else:
            parts.append(f"{change.product_id}@{int(at)}")
    text = "+".join(sorted(parts))
    if len(text) > _MAX_OCCURRENCE or ":" in text:
        return "h" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
    return text


class CatalogTriggers:
    """The :class:`~widget_server.catalog.changes.ImportTriggers` of a feed import: thresholds
    from the site's flows before, emails after."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scheduler: MailScheduler,
        *,
        interest: InterestIndex | None = None,
        catalog: CatalogStore | None = None,
        clock: Callable[[], float] = time.time,
        per_product: int = PER_PRODUCT,
        per_import: int = PER_IMPORT,
    ) -> None:
        self._redis = redis
        self._keys = keys
        catalog = catalog or CatalogStore(redis, keys)
        interest = interest or InterestIndex(redis, keys, catalog)
        self._scheduler = scheduler
        self._interest = interest
        self._catalog = catalog
        self._clock = clock
        self._per_product = per_product
        self._per_import = per_import

    async def rules(self, site: str) -> ChangeRules:
        """The thresholds of the site's enabled flows (the defaults for flows that are off).
        Raises StoreUnavailable."""
        try:
            config = await self._scheduler.flows.get(site)
        except RedisError as exc:
            raise StoreUnavailable(f"could not read the email flows: {exc}") from exc
        drop, low = config.enabled_flow("price_drop"), config.enabled_flow("low_stock")
        defaults = ChangeRules()
        return ChangeRules(
            min_drop_percent=drop.min_drop_percent if drop else defaults.min_drop_percent,
            low_stock_quantity=low.low_stock_quantity if low else defaults.low_stock_quantity,
        )

    async def after_import(self, site: str, changes: ImportChanges, *, at: float) -> int:
        """Schedule the emails of an import's changes; returns the visitors scheduled for (the
        ones in a flow's holdout are counted in its report, not here). Store failures are
        logged: the import itself is done."""
        try:
            return await self._schedule(site, changes, at)
        except (RedisError, StoreUnavailable) as exc:
            log.warning("emails after a feed import failed", extra={"error": str(exc)})
            return 0

    async def _schedule(self, site: str, changes: ImportChanges, at: float) -> int:
        config = await self._scheduler.flows.get(site)
        flows = {k: f for k in CHANGE_KINDS if (f := config.enabled_flow(k)) is not None}
        if not flows:
            return 0
        now = self._clock()
        plans: dict[str, _Plan] = {}
        for kind in ("price_drop", "back_in_stock", "low_stock"):
            if kind not in flows:
                continue
            for change in changes.kept[kind]:
                visitors = await self._interest.interested(
                    site, change.product_id, now=now, limit=self._per_product
                )
                self._add(plans, visitors, [change])
        if "category_interest" in flows:
            await self._category_plans(site, changes.kept["category_interest"], plans, now)
        scheduled = 0
        for visitor, plan in plans.items():
            kind, chosen = _choice(plan, flows)
            result = await self._scheduler.schedule_flow(
                site, visitor, kind,
                now=now,
                products=[c.product_id for c in chosen],
                occurrence=occurrence(kind, chosen, at),
            )  # fmt: skip
            scheduled += result.outcome == "scheduled"
        return scheduled

    def _add(
        self, plans: dict[str, _Plan], visitors: Sequence[str], found: Sequence[ProductChange]
    ) -> None:
        for visitor in visitors:
            if visitor not in plans and len(plans) >= self._per_import:
                continue
            plan = plans.setdefault(visitor, _Plan())
            for change in found:
                plan.add(change)

    async def _category_plans(
        self, site: str, new: Sequence[ProductChange], plans: dict[str, _Plan], now: float
    ) -> None:
        by_category: dict[str, list[ProductChange]] = {}
        for change in new:
            if change.category:
                by_category.setdefault(change.category, []).append(change)
        known: dict[str, Product] = {}
        favourites: dict[str, list[str]] = {}
        for category, products in by_category.items():
            candidates = await self._interest.interested_in_category(
                site, category, now=now, limit=self._per_product
            )
            liked = []
            for visitor in candidates:
                if visitor not in favourites:
                    favourites[visitor] = await self.favourite_categories(site, visitor, known)
                if category in favourites[visitor]:
                    liked.append(visitor)
            self._add(plans, liked, products)

    async def favourite_categories(
        self, site: str, visitor: str, known: dict[str, Product] | None = None
    ) -> list[str]:
        """The visitor's :data:`TOP_CATEGORIES` categories (see the module docstring), lower
        case. ``known`` caches catalog products across calls."""
        cache = {} if known is None else known
        raw = await self._redis.hget(self._keys.profile(site, visitor), "viewed")
        try:
            viewed = [str(v) for v in json.loads(reply_text(raw))] if raw else []
        except (ValueError, TypeError):
            viewed = []
        missing = [pid for pid in dict.fromkeys(viewed) if pid not in cache]
        if missing:
            cache.update(await self._catalog.get(site, missing))
        counts: dict[str, int] = {}
        last_seen: dict[str, int] = {}
        for position, pid in enumerate(viewed):
            product = cache.get(pid)
            category = category_of(product) if product is not None else ""
            if category:
                counts[category] = counts.get(category, 0) + 1
                last_seen[category] = position
        ranked = sorted(counts, key=lambda c: (-counts[c], -last_seen[c]))
        return ranked[:TOP_CATEGORIES]


def _choice(plan: _Plan, flows: dict[ChangeKind, Flow]) -> tuple[ChangeKind, list[ProductChange]]:
    """The kind of the visitor's one email (the highest-ranked flow) and its products."""
    kind = max(plan.changes, key=lambda k: (flows[k].rank, -CHANGE_KINDS.index(k)))
    changes = plan.changes[kind]
    if kind == "price_drop":
        changes = sorted(changes, key=lambda c: -c.weight)
    return kind, changes[:EMAIL_PRODUCTS]


def catalog_triggers(ctx: MailContext, interest: InterestIndex | None = None) -> CatalogTriggers:
    """The triggers of feed imports for the email feature ``ctx``."""
    return CatalogTriggers(
        ctx.redis, ctx.keys, ctx.scheduler, interest=interest, catalog=ctx.catalog
    )
