"""Connection limits of one server node: per client address, per site and in all. Pure.

The node counts its own sockets: a limit per node is what protects the node (memory, file
descriptors, the event loop) whatever the other nodes hold, and needs no shared state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ADDRESS = "address"
SITE = "site"
NODE = "node"


@dataclass(slots=True)
class ConnectionLimits:
    """``0`` means no limit."""

    per_address: int
    per_site: int
    per_node: int
    _by_address: dict[str, int] = field(default_factory=dict)
    _by_site: dict[str, int] = field(default_factory=dict)
    _total: int = 0

    def admit(self, address: str) -> str | None:
        """Count a new socket from ``address``; None, or the limit it would pass (then nothing
        is counted)."""
        if self.per_node and self._total >= self.per_node:
            return NODE
        held = self._by_address.get(address, 0)
        if self.per_address and held >= self.per_address:
            return ADDRESS
        self._by_address[address] = held + 1
        self._total += 1
        return None

    def join_site(self, site: str) -> str | None:
        """Count an admitted socket's site (at its hello); None, or :data:`SITE`."""
        held = self._by_site.get(site, 0)
        if self.per_site and held >= self.per_site:
            return SITE
        self._by_site[site] = held + 1
        return None

    def leave(self, address: str, site: str | None) -> None:
        """Forget a socket admitted from ``address`` (and counted for ``site``, if given)."""
        self._total -= 1
        _decrement(self._by_address, address)
        if site is not None:
            _decrement(self._by_site, site)

    def count(self, address: str | None = None) -> int:
        return self._total if address is None else self._by_address.get(address, 0)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
