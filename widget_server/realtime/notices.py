"""What a node does when another node broadcasts a change: campaigns edited, a live offer
started. Runs for the sockets this node holds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import cast

from ..offers.engine import OfferSocket
from ..wire import nodes
from .services import Services

_FAN_OUT_BATCH = 200
_pauses = 0  # live offers going out now (the collector is paused while any is)
_BATCHES_AT_ONCE = 3


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a live offer goes out. A full collection walks every
    object of every connection (measured: 120-140 ms with 2,000 connections, and it grows with
    them), and the fan-out allocates enough to set one off; what it allocates is freed by
    reference counting, and the collector runs again as soon as the offer is out."""
    global _pauses
    _pauses += 1
    if _pauses == 1:
        gc.disable()
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0:
            gc.enable()


class Notices:
    def __init__(self) -> None:
        self.services: Services | None = None

    async def handle(self, notice: nodes.Notice) -> None:
        services = self.services
        if services is None:
            return
        if isinstance(notice, nodes.CampaignsChanged):
            services.offers.campaigns.invalidate(notice.site)
            await self._for_each_socket(services, notice.site, "refresh_offers")
        elif isinstance(notice, nodes.LiveStarted):
            # Just started: no session can have claimed it yet, so no look for earlier claims
            # (should one have, the same broadcast stopped and started again, the claim script
            # refuses a second claim). Each batch of connections is claimed in a few pipelines;
            # a few batches are under way at once, so that the store works on one while this
            # process decides and sends another.
            services.offers.live_started(notice.site)
            sockets = [cast(OfferSocket, s) for s in services.hub.local_sockets(notice.site)]
            under_way = asyncio.Semaphore(_BATCHES_AT_ONCE)

            async def one_batch(batch: list[OfferSocket]) -> None:
                async with under_way:
                    await services.offers.offer_live_many(batch, notice.campaign)

            with collector_paused():
                await asyncio.gather(*(
                    one_batch(sockets[start : start + _FAN_OUT_BATCH])
                    for start in range(0, len(sockets), _FAN_OUT_BATCH)
                ))  # fmt: skip

    async def catch_up(self) -> None:
        """What another node may have broadcast while this one was not listening: campaigns and
        sites are read again, and running live offers go to sockets that have not had them
        (a visitor's claim is replayed, never doubled)."""
        services = self.services
        if services is None:
            return
        now = time.time()
        for site in services.hub.local_sites():
            services.sites.invalidate(site)
            services.offers.campaigns.invalidate(site)
            services.offers.live_started(site)
            await self._for_each_socket(services, site, "refresh_offers")
            for campaign in await services.offers.active_live(site, now):
                await self._for_each_socket(services, site, "offer_live", campaign)

    async def _for_each_socket(
        self, services: Services, site: str, method: str, *args: str
    ) -> None:
        from .connection import VisitorConnection

        sockets = [cast(VisitorConnection, s) for s in services.hub.local_sockets(site)]
        for start in range(0, len(sockets), _FAN_OUT_BATCH):
            batch = sockets[start : start + _FAN_OUT_BATCH]
            await asyncio.gather(
                *(getattr(sock, method)(*args) for sock in batch), return_exceptions=True
            )
