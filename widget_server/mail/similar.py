"""Similar products for emails: the catalog's similarity index around the email's own products.

:class:`MailSimilarProducts` is the ``similar`` source of
:func:`~widget_server.mail.context.build_mail_context`. Given the product ids an email shows
(the cart's lines, or the viewed products of a browse email), it picks up to four in-stock
catalog products like them, with co-view and co-cart counts as the behaviour signal, as the
live "similar products" offer does. The email's own products, their variants (item group),
products without a title, link or price, and products priced in another currency than the
site's never come back. A site without a catalog, or a catalog that
cannot be read, gives none: the email then goes out without its "You might also like" section.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.exceptions import RedisError

from ..catalog.recommend import behaviour_weights
from ..catalog.similar import SimilarProducts
from ..errors import StoreUnavailable
from ..store.sites import SiteRegistry
from .flows import MailFlowStore
from .message import MailProduct
from .tokens import absolute
from .worker import default_shop_url

log = logging.getLogger("widget_server.mail")
EMAIL_SIMILAR = 4


class MailSimilarProducts:
    """Up to ``limit`` catalog products for an email, best first.

    Links are returned as the catalog has them (the worker makes them absolute and tracked);
    images are made absolute against the shop URL the email's links use (the flow
    configuration's ``shop_url``, else the site's first exact origin), since a relative image
    cannot be shown in a mailbox.
    """

    def __init__(
        self,
        similar: SimilarProducts,
        sites: SiteRegistry,
        flows: MailFlowStore,
        *,
        limit: int = EMAIL_SIMILAR,
    ) -> None:
        self._similar = similar
        self._sites = sites
        self._flows = flows
        self._limit = limit

    async def __call__(self, site: str, product_ids: Sequence[str]) -> list[MailProduct]:
        ids = list(dict.fromkeys(product_ids))
        if not ids or self._limit <= 0:
            return []
        try:
            index = await self._similar.indexes.get(site)
            if len(index) == 0:
                return []
            counts = await self._similar.store.co_counts(site, ids[:3])
        except StoreUnavailable as exc:
            log.warning("similar products left out of an email", extra={"error": str(exc)})
            return []
        scored = index.similar_for_session(
            ids,
            ids,
            k=self._limit * 2,  # room for the ones dropped below
            exclude=ids,
            behaviour=behaviour_weights(counts.coview, counts.cocart),
        )
        base, currency = await self._shop(site)
        found = [
            MailProduct(
                id=product.id,
                title=product.title,
                price=product.effective_price,
                image=absolute(product.image_link, base) if product.image_link else "",
                url=product.link,
            )
            for product in (s.product for s in scored)
            if product.title.strip()
            and product.link
            and product.effective_price > 0
            and product.currency in ("", currency)
        ]
        return found[: self._limit]

    async def _shop(self, site: str) -> tuple[str, str]:
        """The shop URL the email's links use, and the currency its prices are shown in."""
        try:
            config = await self._flows.get(site)
            known = await self._sites.get(site)
        except RedisError:
            return "", ""
        shop_url = config.shop_url or (default_shop_url(known) if known is not None else "")
        return shop_url, known.currency if known is not None else ""
