"""Email flows as experiments: the same counters as on-site campaigns, with ``email`` as the arm
that gets the flow's emails and ``holdout`` as the visitors who qualified and got none.

A visitor is **exposed** to a flow when they leave in a state that qualifies for it (cart, checkout
or browse abandonment, with an address, marketing consent and no suppression): at that moment the
holdout is decided by a stable hash (:func:`~widget_server.mail.flows.in_holdout`). Counting both
arms there, before any email is due, compares like with like: visitors who come back and buy
before the first email count in both arms (intent to treat).

Per flow, per UTC day and per *stage* (the holdout share; changing it starts a new comparison,
like a campaign's experiment version), one hash holds ``<metric>:<arm>`` with the metrics
``exposures``, ``conversions``, ``revenue``, ``revenue_sq`` (the report's inputs), ``sent``
(emails accepted by the relay), ``clicks`` (visitors who followed a link), ``click_conversions``
(converters who had clicked within the window before buying), ``unsubscribes``, and the
``bounces`` and ``complaints`` the relay reports (counted for the flow of the latest email sent
to the address; delivered = sent - bounces).

Per channel (``email``, ``sms``): ``recipients_<channel>`` (visitors who got at least one
message of it), ``clicks_<channel>`` and ``click_conversions_<channel>`` (by the channel of the
link followed), ``recipient_conversions_<channel>`` and ``recipient_revenue_<channel>`` (orders
of visitors after they got a message of it), and for texts ``sms_sent``, ``sms_delivered`` and
``sms_failed`` (the provider's final status). These describe recipients, who are not a random
group; the causal comparison per channel is the ``sms_reach`` segment: visitors who could get
texts when they qualified, counted in both arms (``exposures_sms_reach``,
``conversions_sms_reach``, ``revenue_sms_reach``, ``revenue_sq_sms_reach``).

Each visitor's arm, exposure, channels, clicks and revenue live in a small hash per flow, so
attribution is one atomic Lua call per flow.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from redis.asyncio import Redis

from ..offers.assign import HOLDOUT
from ..store.keys import Keys
from ..store.scripts import Scripts
from .flows import Flow, in_sms_holdout

EMAIL_ARM = "email"
# The arm of the ``sms_reach`` segment that gets the flow's emails but not its texts.
EMAIL_ONLY_ARM = "email_only"
FlowMetric = Literal["unsubscribes", "bounces", "complaints", "sms_delivered", "sms_failed"]
Channel = Literal["email", "sms"]
CHANNELS: tuple[Channel, ...] = ("email", "sms")


def flow_stage(flow: Flow) -> str:
    """The counting stage of a flow: its holdout share in per mille, and its SMS holdout's
    when it has one."""
    stage = f"h{round(flow.holdout * 1000)}"
    return f"{stage}s{round(flow.sms_holdout * 1000)}" if flow.sms_holdout > 0 else stage


def flow_day(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


def flow_arm(holdout: bool) -> str:
    return HOLDOUT if holdout else EMAIL_ARM


def reach_arm(site: str, visitor: str, flow: Flow, *, held_out: bool, sms: bool) -> str:
    """The visitor's arm in the ``sms_reach`` segment: ``""`` when they cannot get texts, else
    the holdout, :data:`EMAIL_ONLY_ARM` in the flow's SMS holdout, or :data:`EMAIL_ARM`."""
    if not sms:
        return ""
    if held_out:
        return HOLDOUT
    return EMAIL_ONLY_ARM if in_sms_holdout(site, visitor, flow) else EMAIL_ARM


class FlowExperiments:
    """Writes a site's email-flow counters; every method raises ``redis`` errors as is."""

    def __init__(self, redis: Redis, keys: Keys, *, retention_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._retention_s = retention_s
        scripts = Scripts.of(redis)
        self._expose = scripts.flow_expose
        self._sent = scripts.flow_sent
        self._click = scripts.flow_click
        self._attribute = scripts.flow_attribute

    def _stats(self, site: str, flow: Flow, now: float) -> str:
        return self._keys.flow_stats(site, flow.name, flow_stage(flow), flow_day(now))

    async def exposed(
        self, site: str, visitor: str, flow: Flow, arm: str, now: float, *, reach_arm: str = ""
    ) -> bool:
        """Record that the visitor qualified for ``flow`` in ``arm`` (``reach_arm``: their arm
        in the ``sms_reach`` segment when they could get texts then, see :func:`reach_arm`);
        True the first time."""
        first = await self._expose(
            keys=[self._keys.flow_visitor(site, flow.name, visitor), self._stats(site, flow, now)],
            args=[repr(now), flow_stage(flow), arm, self._retention_s, reach_arm],
        )
        return bool(first)

    async def count(self, site: str, flow: Flow, metric: FlowMetric, now: float) -> None:
        """Count a message event of the ``email`` arm (the holdout gets no messages)."""
        await self._redis.hincrby(self._stats(site, flow, now), f"{metric}:{EMAIL_ARM}", 1)

    async def sent(self, site: str, visitor: str, flow: Flow, channel: Channel, now: float) -> bool:
        """A message of ``flow`` went out to the visitor on ``channel``; True when the visitor
        is a new recipient of that channel."""
        first = await self._sent(
            keys=[self._keys.flow_visitor(site, flow.name, visitor), self._stats(site, flow, now)],
            args=[repr(now), flow_stage(flow), channel],
        )
        return bool(first)

    async def clicked(
        self, site: str, visitor: str, flow: Flow, now: float, *, channel: Channel = "email"
    ) -> bool:
        """The visitor followed a link of the flow's messages on ``channel``; True for their
        first click (over both channels)."""
        first = await self._click(
            keys=[self._keys.flow_visitor(site, flow.name, visitor), self._stats(site, flow, now)],
            args=[repr(now), flow_stage(flow), channel],
        )
        return bool(first)

    async def purchased(
        self, site: str, visitor: str, flows: Sequence[Flow], value: float, now: float
    ) -> list[str]:
        """Attribute a new order to every flow that exposed the visitor within its window.
        Returns the names of the flows it counted for."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for flow in flows:
                await self._attribute(
                    keys=[
                        self._keys.flow_visitor(site, flow.name, visitor),
                        self._stats(site, flow, now),
                    ],
                    args=[repr(now), flow.attribution_days * 86_400, flow_stage(flow), repr(value)],
                    client=pipe,
                )
            arms = await pipe.execute()
        return [flow.name for flow, arm in zip(flows, arms, strict=True) if arm]

    async def forget(self, site: str, visitor: str, flow_names: Sequence[str]) -> None:
        """Erase the visitor's per-flow states (the aggregate counters hold no personal data)."""
        if flow_names:
            await self._redis.delete(
                *(self._keys.flow_visitor(site, name, visitor) for name in flow_names)
            )
