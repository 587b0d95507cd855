"""The "similar products" offer: the catalog's similarity index fed by what visitors do.

Product views teach the catalog about products missing from the feed and count co-views; cart
adds count co-carts. That work runs beside the event (it never delays the ack) and its failures
only cost recommendation quality.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import protocol as p
from .catalog import CatalogStore, SimilarityIndexCache
from .decide import VisitorState
from .errors import StoreUnavailable
from .recommend import behaviour_weights

log = logging.getLogger("widget_server.similar")
RECOMMENDATIONS = 8


class SimilarProducts:
    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self.indexes = SimilarityIndexCache(store)
        self._background: set[asyncio.Task[None]] = set()

    async def products_for(self, site: str, state: VisitorState) -> list[dict[str, Any]]:
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
            {
                "id": s.product.id,
                "title": s.product.title,
                "price": s.product.effective_price,
                "currency": s.product.currency,
                "url": s.product.link,
                "image": s.product.image_link,
            }
            for s in scored
        ]

    def observe(self, site: str, message: p.ClientMessage, state: VisitorState) -> None:
        """Learn from a product view or a cart add, in the background."""
        if isinstance(message, p.ProductView):
            self._spawn(self._viewed(site, message.product, state.viewed_ids))
        elif isinstance(message, p.CartAdd):
            cart = [pid for pid in state.cart_products if pid != message.item.id]
            self._spawn(self.store.record_cocart(site, [*sorted(cart), message.item.id]))

    async def _viewed(self, site: str, product: p.Product, viewed: tuple[str, ...]) -> None:
        await self.store.learn_from_product_view(site, product)
        await self.store.record_coview(site, viewed)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(self._quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, work: Any) -> None:
        try:
            await work
        except StoreUnavailable as exc:
            log.warning("catalog learning skipped", extra={"error": str(exc)})
