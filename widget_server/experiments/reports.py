"""Experiment reports from Redis: load the per-day counters, hand them to :mod:`.stats`.

Campaigns (``channel`` ``onsite``, or ``live`` for live broadcasts) and email flows (``channel``
``email``, see :mod:`.mail_experiments`) share the model: arms with exposures, conversions and
revenue per exposed visitor, compared with a control (the holdout when there is one).

The counters live in one hash per campaign and day (:meth:`Keys.campaign_stats`), with fields
``<metric>:<variant>`` written by the claim script and by purchases. Every function here reads
all the days it needs in one pipelined round trip; the statistics stay pure.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from redis.asyncio import Redis

from ..mail.experiments import CHANNELS, EMAIL_ARM, EMAIL_ONLY_ARM, flow_stage
from ..mail.flows import Flow
from ..offers.assign import HOLDOUT
from ..offers.campaigns import Campaign
from ..offers.decide import COVARIATES
from ..store.keys import Keys
from ..store.replies import reply_text
from .adjust import Moments, RevenueCap
from .buyers import capped_series, parse_buyers
from .stats import (
    ExperimentSettings,
    Interval,
    Report,
    VariantCounts,
    expected_split,
    experiment_report,
)

Series = list[tuple[str, dict[str, VariantCounts]]]
_INTEGER_METRICS = (
    "exposures",
    "conversions",
    "impressions",
    "clicks",
    "dismissals",
    "redemptions",
    "captures",
    "consented_captures",
)
_FLOAT_METRICS = ("revenue", "revenue_sq")
# The regression adjustment's sums, kept by lua/offer_claim.lua at exposure.
_MOMENTS = (
    "xn",
    *(f"x{i}" for i in range(len(COVARIATES))),
    *(f"xx{i}_{j}" for i in range(len(COVARIATES)) for j in range(i, len(COVARIATES))),
)


def counts_from_hash(
    raw: Mapping[Any, Any], aliases: Mapping[str, str] | None = None
) -> dict[str, VariantCounts]:
    """One day's hash (``{"exposures:a": "12", ...}``, bytes or text) as counts by variant;
    ``aliases`` maps a stored metric to a count (an email flow's ``sent`` are impressions).

    Unknown metrics and fields without a variant are ignored.
    """
    fields: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        metric, _, variant = reply_text(key).partition(":")
        metric = (aliases or {}).get(metric, metric)
        number = _number(value)
        if (
            variant
            and number is not None
            and (metric in _INTEGER_METRICS or metric in _FLOAT_METRICS or metric in _MOMENTS)
        ):
            fields.setdefault(variant, {})[metric] = number
    return {variant: _counts(variant, values) for variant, values in fields.items()}


def _counts(variant: str, values: dict[str, float]) -> VariantCounts:
    def whole(metric: str) -> int:
        return round(values.get(metric, 0.0))

    return VariantCounts(
        variant,
        exposures=whole("exposures"),
        conversions=whole("conversions"),
        revenue=values.get("revenue", 0.0),
        revenue_sq=values.get("revenue_sq", 0.0),
        impressions=whole("impressions"),
        clicks=whole("clicks"),
        dismissals=whole("dismissals"),
        redemptions=whole("redemptions"),
        captures=whole("captures"),
        consented_captures=whole("consented_captures"),
        moments=_moments(values),
    )


def _moments(values: dict[str, float]) -> Moments | None:
    """An arm's covariate sums of a day, or None when no covariates were kept."""
    n = round(values.get("xn", 0.0))
    if n <= 0:
        return None
    k = len(COVARIATES)
    return Moments(
        n,
        tuple(values.get(f"x{i}", 0.0) for i in range(k)),
        tuple(values.get(f"xx{i}_{j}", 0.0) for i in range(k) for j in range(i, k)),
    )


def _merged(
    a: Mapping[str, VariantCounts], b: Mapping[str, VariantCounts]
) -> dict[str, VariantCounts]:
    merged = dict(a)
    for variant, counts in b.items():
        merged[variant] = merged[variant].plus(counts) if variant in merged else counts
    return merged


async def _per_day(
    redis: Redis, keys: Keys, site: str, campaign: str, days: list[str], version: int = 1
) -> list[dict[str, VariantCounts]]:
    async with redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(keys.campaign_stats(site, campaign, day, version))
        raw = await pipe.execute()
    return [counts_from_hash(day) for day in raw]


async def load_counts(
    redis: Redis, keys: Keys, site: str, campaign: str, days: list[str], version: int = 1
) -> dict[str, VariantCounts]:
    """Counts by variant summed over ``days`` (``YYYYMMDD`` keys) of one experiment version,
    in one round trip."""
    totals: dict[str, VariantCounts] = {}
    for counts in await _per_day(redis, keys, site, campaign, days, version):
        totals = _merged(totals, counts)
    return totals


async def daily_series(
    redis: Redis, keys: Keys, site: str, campaign: str, days: list[str], version: int = 1
) -> Series:
    """Cumulative counts by variant at the end of each day, oldest day first (one round trip)."""
    ordered = sorted(set(days))
    per_day = await _per_day(redis, keys, site, campaign, ordered, version)
    return _cumulative(zip(ordered, per_day, strict=True))


def cumulative_series(days: Sequence[str], raw: Sequence[Mapping[Any, Any]]) -> Series:
    """The cumulative series of per-day hashes ``raw`` (of ``days``, oldest first), from the
    first day with data on."""
    return _from_first_data(
        _cumulative((day, counts_from_hash(r)) for day, r in zip(days, raw, strict=True))
    )


def _cumulative(days: Iterable[tuple[str, Mapping[str, VariantCounts]]]) -> Series:
    """Running totals by variant at the end of each day, in the order given."""
    series: Series = []
    running: dict[str, VariantCounts] = {}
    for day, counts in days:
        running = _merged(running, counts)
        series.append((day, running))
    return series


def _from_first_data(series: Series) -> Series:
    """``series`` from its first day with data on (charts and looks start there)."""
    first = next((i for i, (_, counts) in enumerate(series) if counts), len(series))
    return series[first:]


def _judged(
    name: str,
    series: Series,
    control: str,
    split: Mapping[str, float],
    settings: ExperimentSettings | None,
    campaign: Campaign | None = None,
    cap: RevenueCap | None = None,
) -> Report:
    """The report on the last day of ``series``; every earlier day is one look (of the
    sequential test, or where a fixed-horizon test reached its size). The rule is the
    campaign's (email flows are judged by the sequential rule)."""
    return experiment_report(
        name,
        series[-1][1] if series else {},
        control,
        split,
        settings or ExperimentSettings(),
        history=[counts for _, counts in series[:-1]],
        rule=campaign.decision_rule if campaign is not None else "sequential",
        planned_exposures=campaign.planned_exposures if campaign is not None else None,
        adjust=campaign is not None and campaign.variance_reduction,
        revenue_cap=cap,
    )


def series_json(series: Series) -> list[dict[str, Any]]:
    return [
        {"day": day, "variants": {v: _counts_json(c) for v, c in counts.items()}}
        for day, counts in series
    ]


def report_days(campaign: Campaign, now: float, days: int = 90) -> list[str]:
    """The last ``days`` day keys up to today in the campaign's time zone, oldest first, never
    before the experiment version started nor before the schedule's start (none before it
    starts)."""
    zone = ZoneInfo(campaign.schedule.timezone)
    today = datetime.fromtimestamp(now, zone).date()
    first = today - timedelta(days=max(1, days) - 1)
    if campaign.schedule.start is not None:
        first = max(first, _local_date(campaign.schedule.start, zone))
    if campaign.experiment_started is not None:
        first = max(first, datetime.fromtimestamp(campaign.experiment_started, zone).date())
    return [(first + timedelta(days=i)).strftime("%Y%m%d") for i in range((today - first).days + 1)]


def _local_date(moment: datetime, zone: ZoneInfo) -> date:
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(zone).date()


def campaign_split(campaign: Campaign) -> tuple[str, dict[str, float]]:
    """The control arm and the configured traffic shares of a campaign."""
    split = expected_split({v.key: v.weight for v in campaign.variants}, campaign.holdout)
    control = HOLDOUT if campaign.holdout > 0 else campaign.variants[0].key
    return control, split


async def build_report(
    redis: Redis,
    keys: Keys,
    site: str,
    campaign: Campaign,
    now: float,
    days: int = 90,
    settings: ExperimentSettings | None = None,
) -> tuple[Report, Series]:
    """The experiment report over the last ``days`` days and its cumulative daily series (each
    day is one look of the sequential test)."""
    days_back = report_days(campaign, now, days)
    version = campaign.experiment_version
    series = _from_first_data(
        await daily_series(redis, keys, site, campaign.id, days_back, version)
    )
    control, split = campaign_split(campaign)
    buyers = parse_buyers(await redis.hgetall(keys.campaign_buyers(site, campaign.id, version)))
    minimum = (settings or ExperimentSettings()).min_conversions
    tested, cap = capped_series(series, buyers, control, campaign.revenue_cap_percentile, minimum)
    return _judged(campaign.id, tested, control, split, settings, campaign, cap), series


async def campaign_report(
    redis: Redis,
    keys: Keys,
    site: str,
    campaign: Campaign,
    now: float,
    days: int = 90,
    settings: ExperimentSettings | None = None,
) -> dict[str, Any]:
    """The JSON document the CLI and the admin show: the report and the cumulative series."""
    report, series = await build_report(redis, keys, site, campaign, now, days, settings)
    window = report_days(campaign, now, days)
    since = series[0][0] if series else None
    if campaign.experiment_started is None and since is not None:
        window = [day for day in window if day >= since]  # an older campaign: from its data
    return {
        "site": site,
        "channel": "live" if campaign.trigger.live else "onsite",
        "campaign": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "experiment_version": campaign.experiment_version,
        "time_zone": campaign.schedule.timezone,
        "generated_at": now,
        "days": {"from": window[0], "to": window[-1]} if window else None,
        "report": plain(report),
        "series": series_json(series),
        "live_offers": await live_offers_during(redis, keys, site, campaign.id, since, now),
    }


async def live_offers_during(
    redis: Redis, keys: Keys, site: str, campaign: str, since: str | None, now: float
) -> list[dict[str, Any]]:
    """The live broadcasts of other campaigns that ran while this experiment had data (from
    its first day with data, ``since``, a ``YYYYMMDD`` day key; a day early, whatever the time
    zone). Their holdout saw none of them; the variants may have, which the report says."""
    if since is None:
        return []
    start = datetime.strptime(since, "%Y%m%d").replace(tzinfo=UTC).timestamp() - 86_400
    runs = []
    for raw in await redis.lrange(keys.live_runs(site), 0, -1):
        try:
            run = json.loads(raw)
            started, until = float(run["started"]), float(run["until"])
        except (ValueError, KeyError, TypeError):
            continue
        if run.get("campaign") != campaign and until >= start and started <= now:
            runs.append({"campaign": str(run["campaign"]), "started": started, "until": until})
    return sorted(runs, key=lambda r: r["started"])


# --- email flows -------------------------------------------------------------------------------
EMAIL_METRICS = ("sent", "clicks", "click_conversions", "unsubscribes", "bounces", "complaints")
_EMAIL_ALIASES = {"sent": "impressions"}
# Per channel of a flow's messaging arm: the stored metric (``<metric>:email``) of each figure.
_CHANNEL_FIELDS: dict[str, dict[str, str]] = {
    channel: {
        "recipients": f"recipients_{channel}",
        "sent": "sent" if channel == "email" else "sms_sent",
        "clicks": f"clicks_{channel}",
        "click_conversions": f"click_conversions_{channel}",
        "conversions": f"recipient_conversions_{channel}",
        "revenue": f"recipient_revenue_{channel}",
        **({"bounces": "bounces"} if channel == "email" else {}),
        **({"delivered": "sms_delivered", "failed": "sms_failed"} if channel == "sms" else {}),
    }
    for channel in CHANNELS
}
_SMS_REACH = "_sms_reach"


def flow_days(now: float, days: int = 90) -> list[str]:
    """The last ``days`` UTC day keys up to today, oldest first (flows count in UTC days)."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=n)).strftime("%Y%m%d") for n in range(max(1, days) - 1, -1, -1)]


def flow_split(flow: Flow) -> tuple[str, dict[str, float]]:
    """The control arm (the holdout when the flow has one) and the configured shares."""
    split = expected_split({EMAIL_ARM: 1.0}, flow.holdout)
    return (HOLDOUT if flow.holdout > 0 else EMAIL_ARM), split


@dataclass(frozen=True, slots=True)
class FlowReport:
    """A flow's report: the statistics, the cumulative series, email counts by arm (``sent``,
    ``clicks``...), the raw counts by step (``sent`` -> ``{"0": 12}``), the messaging arm's
    figures per channel (see :func:`channel_figures`), the report of the ``sms_reach``
    segment (None until a visitor who could get texts qualified) and, with an SMS holdout, the
    texts' own report: the messages against emails only within that segment."""

    report: Report
    series: Series
    email: dict[str, dict[str, int]]
    steps: dict[str, dict[str, int]]
    window: list[str]
    channels: dict[str, dict[str, float]]
    sms_reach: Report | None
    sms_reach_series: Series
    sms_value: Report | None = None


def channel_figures(totals: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The messaging arm's figures per channel from its summed ``<metric>:email`` counters:
    ``recipients`` (visitors who got a message of the channel), ``sent``, ``delivered`` (email:
    sent less hard bounces; SMS: the provider's final status), ``clicks`` (visitors who
    followed a link of the channel), ``click_conversions``, ``conversions`` and ``revenue``
    (orders of recipients after their first message of the channel) and
    ``revenue_per_recipient``."""
    figures: dict[str, dict[str, float]] = {}
    for channel, fields in _CHANNEL_FIELDS.items():
        row: dict[str, float] = {
            name: totals.get(metric, 0) if name == "revenue" else int(totals.get(metric, 0))
            for name, metric in fields.items()
        }
        if channel == "email":
            row["delivered"] = max(0, row["sent"] - row["bounces"])
        row["revenue"] = round(row["revenue"], 2)
        recipients = row["recipients"]
        row["revenue_per_recipient"] = round(row["revenue"] / recipients, 2) if recipients else 0.0
        figures[channel] = row
    return figures


def _segment(raw: Mapping[Any, Any], suffix: str) -> dict[str, Any]:
    """The fields of one segment (``exposures_sms_reach:holdout``) as plain metrics
    (``exposures:holdout``)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        metric, _, arm = reply_text(key).partition(":")
        if metric.endswith(suffix):
            out[f"{metric.removesuffix(suffix)}:{arm}"] = value
    return out


async def build_flow_report(
    redis: Redis,
    keys: Keys,
    site: str,
    flow: Flow,
    now: float,
    days: int = 90,
    settings: ExperimentSettings | None = None,
) -> FlowReport:
    """Read a flow's counters of the last ``days`` UTC days (one round trip) and compare the
    ``email`` arm with the ``holdout``. Counts start again when the holdout share changes."""
    window = flow_days(now, days)
    stage = flow_stage(flow)
    async with redis.pipeline(transaction=False) as pipe:
        for day in window:
            pipe.hgetall(keys.flow_stats(site, flow.name, stage, day))
        pipe.hgetall(keys.mail_stats(site, flow.name))
        *raw_days, raw_steps = await pipe.execute()
    series = _from_first_data(
        _cumulative(
            (day, counts_from_hash(raw, _EMAIL_ALIASES))
            for day, raw in zip(window, raw_days, strict=True)
        )
    )
    email: dict[str, dict[str, int]] = {}
    messaging: dict[str, float] = {}
    for raw in raw_days:
        for key, value in raw.items():
            metric, _, arm = reply_text(key).partition(":")
            if not arm or (number := _number(value)) is None:
                continue
            if metric in EMAIL_METRICS:
                totals = email.setdefault(arm, dict.fromkeys(EMAIL_METRICS, 0))
                totals[metric] += int(number)
            if arm == EMAIL_ARM:
                messaging[metric] = messaging.get(metric, 0) + number
    for totals in email.values():
        totals["delivered"] = max(0, totals["sent"] - totals["bounces"])
    control, split = flow_split(flow)
    report = _judged(f"email:{flow.name}", series, control, split, settings)
    reach_series = _from_first_data(
        _cumulative(
            (day, counts_from_hash(_segment(raw, _SMS_REACH)))
            for day, raw in zip(window, raw_days, strict=True)
        )
    )
    reach_weights = {EMAIL_ARM: 1.0}
    if flow.sms_holdout > 0:
        reach_weights = {EMAIL_ARM: 1 - flow.sms_holdout, EMAIL_ONLY_ARM: flow.sms_holdout}
    reach_split = expected_split(reach_weights, flow.holdout)
    reach = (
        _judged(f"email:{flow.name}:sms_reach", reach_series, control, reach_split, settings)
        if reach_series
        else None
    )
    texts: Report | None = None
    if flow.sms_holdout > 0 and reach_series:
        pair = [
            (day, {arm: c for arm, c in counts.items() if arm in reach_weights})
            for day, counts in reach_series
        ]
        texts = _judged(f"email:{flow.name}:sms", pair, EMAIL_ONLY_ARM, reach_weights, settings)
    steps: dict[str, dict[str, int]] = {}
    for key, value in raw_steps.items():
        event, _, step = reply_text(key).partition(":")
        if step and (number := _number(value)) is not None:
            steps.setdefault(event, {})[step] = int(number)
    return FlowReport(
        report, series, email, steps, window, channel_figures(messaging), reach, reach_series,
        texts,
    )  # fmt: skip


async def flow_report(
    redis: Redis,
    keys: Keys,
    site: str,
    flow: Flow,
    now: float,
    days: int = 90,
    settings: ExperimentSettings | None = None,
) -> dict[str, Any]:
    """The JSON document of a flow's report, in the campaigns' model (``channel`` ``email``)."""
    built = await build_flow_report(redis, keys, site, flow, now, days, settings)
    return {
        "site": site,
        "channel": "email",
        "flow": flow.name,
        "kind": flow.kind,
        "enabled": flow.enabled,
        "holdout": flow.holdout,
        "stage": flow_stage(flow),
        "attribution_days": flow.attribution_days,
        "time_zone": "UTC",
        "generated_at": now,
        "days": {"from": built.window[0], "to": built.window[-1]},
        "report": plain(built.report),
        "email": built.email,
        "channels": built.channels,
        "sms_holdout": flow.sms_holdout,
        "sms_reach": None if built.sms_reach is None else plain(built.sms_reach),
        "sms_value": None if built.sms_value is None else plain(built.sms_value),
        "steps": built.steps,
        "series": series_json(built.series),
    }


def plain(value: Any) -> Any:
    """``value`` in JSON's types (tuples become lists), as the HTTP API sends it."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _counts_json(counts: VariantCounts) -> dict[str, Any]:
    data: dict[str, Any] = plain(counts)
    data.pop("variant", None)
    return data


CSV_COLUMNS = (
    "variant", "control", "exposures", "impressions", "conversions", "redemptions",
    "conversion_rate", "conversion_rate_low", "conversion_rate_high", "uplift", "uplift_low",
    "uplift_high", "p_value", "sequential_p_value", "chance_to_beat_control", "revenue",
    "revenue_per_exposure", "revenue_difference", "revenue_difference_low",
    "revenue_difference_high", "revenue_p_value", "incremental_revenue",
    "incremental_revenue_low", "incremental_revenue_high", "captures", "consented_captures",
    "decision_rule", "decision_difference", "decision_difference_low",
    "decision_difference_high", "decision_change", "decision_change_low", "decision_change_high",
    "decision_p_value", "decision_revenue_difference", "decision_revenue_difference_low",
    "decision_revenue_difference_high", "decision_revenue_p_value", "verdict", "winner",
    "decision_adjusted", "unadjusted_difference", "unadjusted_difference_low",
    "unadjusted_difference_high", "unadjusted_p_value", "revenue_cap",
)  # fmt: skip


def report_csv(report: Report) -> str:
    """One row per arm (the control first); empty cells where a value does not apply. The
    ``decision_`` columns are the experiment's rule's (``decision_adjusted``: regression-adjusted,
    with the ``unadjusted_`` figures beside); ``verdict`` and ``winner`` its conclusion;
    ``revenue_cap`` the cap on revenue per visitor the revenue tests took (empty: none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    cap = report.revenue_cap.cap if report.revenue_cap is not None else None
    for row in report.variants:
        cells = [
            row.variant, int(row.is_control), row.exposures, row.impressions, row.conversions,
            row.redemptions, *_interval(row.conversion_rate), *_interval(row.uplift),
            _cell(row.p_value), _cell(row.sequential_p_value), _cell(row.chance_to_beat_control),
            _cell(row.revenue), _cell(row.revenue_per_exposure),
            *_interval(row.revenue_difference), _cell(row.revenue_p_value),
            *_interval(row.incremental_revenue), row.captures, row.consented_captures,
            report.decision, *_interval(row.difference), *_interval(row.change),
            _cell(row.decision_p), *_interval(row.revenue_decision),
            _cell(row.revenue_decision_p), report.verdict, int(row.variant == report.winner),
            int(row.adjusted), *_interval(row.unadjusted_difference),
            _cell(row.unadjusted_decision_p), _cell(cap),
        ]  # fmt: skip
        writer.writerow(cells)
    return out.getvalue()


def _interval(interval: Interval | None) -> list[str]:
    if interval is None:
        return ["", "", ""]
    return [_cell(interval.estimate), _cell(interval.low), _cell(interval.high)]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


def _number(value: Any) -> float | None:
    """A counter's value, or None for one that is not a number (never written by the product)."""
    try:
        return float(reply_text(value))
    except ValueError:
        return None
