"""The "similar products" offer: the catalog's similarity index fed by what visitors do.

Product views teach the catalog about products missing from the feed and count co-views; cart
adds count co-carts. That work runs beside the event (it never delays the ack), pair counts are
summed in memory and written once a second in one pipeline, and a product seen with the same
content within a minute is not looked up again. Failures only cost recommendation quality; a
node that stops loses at most the last second of pair counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..errors import StoreUnavailable
from ..offers.decide import VisitorState
from ..visitors.session_view import SessionView
from ..wire import protocol as p
from .recommend import behaviour_weights
from .store import CatalogStore, SimilarityIndexCache

log = logging.getLogger("widget_server.similar")
RECOMMENDATIONS = 8
FLUSH_EVERY_S = 1.0
LEARN_AGAIN_AFTER_S = 60.0


class SimilarProducts:
    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self.indexes = SimilarityIndexCache(store)
        self._background: set[asyncio.Task[None]] = set()
        self._pairs: dict[tuple[str, str], Counter[tuple[str, str]]] = {}
        self._flush: asyncio.Task[None] | None = None
        self._learned: dict[tuple[str, str], tuple[p.Product, float]] = {}

    async def products_for(self, site: str, state: VisitorState) -> list[p.OfferProduct]:
        """Up to 8 in-stock products like the ones the visitor viewed last, none in the cart."""
        if not state.viewed_ids:
            return []
        try:
            index = await self.indexes.get(site)
            counts = await self.store.co_counts(site, state.viewed_ids[-3:])
        except StoreUnavailable:
            return []
        scored = index.similar_for_session(
            state.viewed_ids,
            state.cart_products,
            k=RECOMMENDATIONS,
            exclude=state.cart_products,
            behaviour=behaviour_weights(counts.coview, counts.cocart),
        )
        return [
            p.OfferProduct(
                id=s.product.id,
                title=s.product.title,
                price=s.product.effective_price,
                currency=s.product.currency,
                url=s.product.link,
                image=s.product.image_link,
            )
            for s in scored
        ]

    def observe(self, site: str, message: p.ClientMessage, view: SessionView) -> None:
        """Learn from a product view or a cart add, in the background."""
        if isinstance(message, p.ProductView):
            self._count(site, "coview", view.viewed_ids)
            if self._worth_learning(site, message.product):
                self._spawn(self.store.learn_from_product_view(site, message.product))
        elif isinstance(message, p.CartAdd):
            cart = [pid for pid in view.cart_products if pid != message.item.id]
            self._count(site, "cocart", [*sorted(cart), message.item.id])

    def _worth_learning(self, site: str, product: p.Product) -> bool:
        now = time.monotonic()
        seen = self._learned.get((site, product.id))
        if seen is not None and seen[0] == product and now - seen[1] < LEARN_AGAIN_AFTER_S:
            return False
        if len(self._learned) > 50_000:
            self._learned.clear()
        self._learned[(site, product.id)] = (product, now)
        return True

    def _count(self, site: str, kind: str, product_ids: Any) -> None:
        pairs = self.store.pairs(product_ids)
        if not pairs:
            return
        self._pairs.setdefault((site, kind), Counter()).update(pairs)
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_EVERY_S)
        batches, self._pairs, self._flush = self._pairs, {}, None
        for (site, kind), counts in batches.items():
            key: Callable[[str, str], str] = (
                self.store.keys.coview if kind == "coview" else self.store.keys.cocart
            )
            await self._quietly(self.store.add_pair_counts(site, key, counts))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(self._quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, work: Any) -> None:
        try:
            await work
        except StoreUnavailable as exc:
            log.warning("catalog learning skipped", extra={"error": str(exc)})
