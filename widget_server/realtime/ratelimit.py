"""Per-connection token bucket. Pure: the caller passes the clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``.

    A message over the limit is refused and also costs a token, so the balance goes negative; a
    client that keeps sending while refused reaches ``-burst`` and is a flood. A client that pauses
    earns its way back.
    """

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float) -> bool:
        """Spend one token; return False when the message is over the limit."""
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.tokens -= 1.0
        return self.tokens >= 0.0

    @property
    def flooding(self) -> bool:
        return self.tokens <= -float(self.burst)
