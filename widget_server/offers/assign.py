"""Experiment assignment: a deterministic, sticky hash of (campaign, experiment version, visitor).

The same visitor gets the same arm in every process and every session; changing a campaign's split
means a new ``experiment_version`` (a new experiment), never a silent reshuffle.
"""

from __future__ import annotations

import hashlib

from .campaigns import Campaign

HOLDOUT = "holdout"


def bucket(campaign_id: str, experiment_version: int, visitor: str) -> float:
    """A number in [0, 1), uniform over visitors, fixed for (campaign, version, visitor)."""
    digest = hashlib.blake2b(
        f"{campaign_id}:{experiment_version}:{visitor}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


# The site-wide holdout's bucket name: no campaign id can be it (ids start with a letter or a
# digit), so its assignment is independent of every campaign's.
SITE_EXPERIMENT = "@site"


def in_site_holdout(site: str, version: int, share: float, visitor: str) -> bool:
    """Whether ``visitor`` is in ``site``'s site-wide holdout (sees no overlay and no message)
    for the holdout's ``version``: sticky, like a campaign's arm."""
    return share > 0 and bucket(f"{SITE_EXPERIMENT}:{site}", version, visitor) < share


def assign(campaign: Campaign, visitor: str) -> str:
    """The variant key for ``visitor``, or ``holdout`` for the control group that sees nothing."""
    u = bucket(campaign.id, campaign.experiment_version, visitor)
    if u < campaign.holdout:
        return HOLDOUT
    u = (u - campaign.holdout) / (1.0 - campaign.holdout)
    total = sum(v.weight for v in campaign.variants)
    edge = 0.0
    for variant in campaign.variants:
        edge += variant.weight / total
        if u < edge:
            return variant.key
    return campaign.variants[-1].key
