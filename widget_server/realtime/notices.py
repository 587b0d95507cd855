"""What a node does when another node broadcasts a change: campaigns edited, a live offer
started. Runs for the sockets this node holds."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from .services import Services

_FAN_OUT_BATCH = 200


class Notices:
    def __init__(self) -> None:
        self.services: Services | None = None

    async def handle(self, envelope: dict[str, Any]) -> None:
        services = self.services
        if services is None:
            return
        kind, site = envelope.get("kind"), str(envelope.get("site", ""))
        if kind == "campaigns_changed":
            services.offers.campaigns.invalidate(site)
            await self._for_each_socket(services, site, "refresh_offers")
        elif kind == "live":
            services.offers.live_started(site)
            campaign = str(envelope.get("campaign", ""))
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
