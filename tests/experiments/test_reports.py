"""Experiment reports against the real Valkey: per-day hashes in, sums, series and JSON out."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.asyncio import Redis

from widget_server.experiments.reports import (
    CSV_COLUMNS,
    build_report,
    campaign_report,
    daily_series,
    load_counts,
    report_csv,
    report_days,
)
from widget_server.offers.campaign_store import CampaignStore
from widget_server.offers.campaigns import Campaign, parse_campaign
from widget_server.store.keys import Keys

T = TypeVar("T")
KEYS = Keys()
ZONE = "Europe/Berlin"
# Noon on 2025-03-12 in Berlin: the report's last day is 20250312.
NOW = datetime(2025, 3, 12, 12, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
DAYS = {
    "20250310": {"exposures:holdout": 30, "exposures:a": 140, "exposures:b": 130,
                 "impressions:a": 140, "impressions:b": 130, "conversions:holdout": 1,
                 "conversions:a": 6, "revenue:a": 300.5, "revenue_sq:a": 15_500.25},
    "20250311": {"exposures:holdout": 25, "exposures:a": 120, "exposures:b": 125,
                 "conversions:b": 4, "revenue:b": 200.0, "revenue_sq:b": 10_000.0,
                 "redemptions:a": 2, "redemptions:": 1},
    "20250312": {"exposures:holdout": 20, "exposures:a": 110, "exposures:b": 115,
                 "conversions:a": 3, "revenue:a": 99.5, "revenue_sq:a": 4_950.25},
}  # fmt: skip


def run(make: Callable[[Redis], Awaitable[T]], url: str) -> T:
    async def main() -> T:
        client = Redis.from_url(url)
        try:
            return await make(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def campaign(**overrides: Any) -> Campaign:
    data: dict[str, Any] = {
        "id": "exit1",
        "name": "Exit offer",
        "status": "active",
        "holdout": 0.1,
        "schedule": {"timezone": ZONE},
        "variants": [
            {"key": "a", "offer": {"kind": "message", "headline": "Hi"}},
            {"key": "b", "offer": {"kind": "message", "headline": "Hello"}},
        ],
    }
    data.update(overrides)
    return parse_campaign(data)


@pytest.fixture
def stats_site(r: redis.Redis) -> str:
    """A fresh site key with the three days of counters written like the server writes them."""
    site = f"rep{secrets.token_hex(4)}"
    for day, fields in DAYS.items():
        key = KEYS.campaign_stats(site, "exit1", day)
        for field, value in fields.items():
            if isinstance(value, float):
                r.hincrbyfloat(key, field, value)
            else:
                r.hincrby(key, field, value)
    return site


def test_load_counts_sums_the_days(redis_url: str, stats_site: str) -> None:
    counts = run(lambda c: load_counts(c, KEYS, stats_site, "exit1", list(DAYS)), redis_url)
    assert set(counts) == {"holdout", "a", "b"}
    assert counts["holdout"].exposures == 75
    assert counts["holdout"].conversions == 1
    a = counts["a"]
    assert (a.exposures, a.impressions, a.conversions, a.redemptions) == (370, 140, 9, 2)
    assert a.revenue == pytest.approx(400.0)
    assert a.revenue_sq == pytest.approx(20_450.5)
    assert counts["b"].revenue == pytest.approx(200.0)


def test_load_counts_of_missing_days_is_empty(redis_url: str, stats_site: str) -> None:
    counts = run(lambda c: load_counts(c, KEYS, stats_site, "exit1", ["20240101"]), redis_url)
    assert counts == {}
    assert run(lambda c: load_counts(c, KEYS, stats_site, "exit1", []), redis_url) == {}


def test_daily_series_is_cumulative_and_ordered(redis_url: str, stats_site: str) -> None:
    days = ["20250312", "20250309", "20250310", "20250311"]
    series = run(lambda c: daily_series(c, KEYS, stats_site, "exit1", days), redis_url)
    assert [day for day, _ in series] == sorted(days)
    assert series[0][1] == {}
    assert [counts["a"].exposures for _, counts in series[1:]] == [140, 260, 370]
    assert [counts["b"].conversions for _, counts in series[1:]] == [0, 4, 4]


def test_report_days_follow_the_time_zone_and_the_schedule() -> None:
    days = report_days(campaign(), NOW, 3)
    assert days == ["20250310", "20250311", "20250312"]
    started = campaign(schedule={"timezone": ZONE, "start": "2025-03-11T09:00:00+01:00"})
    assert report_days(started, NOW, 90) == ["20250311", "20250312"]
    assert (
        report_days(campaign(schedule={"timezone": ZONE, "start": "2025-04-01T00:00:00Z"}), NOW)
        == []
    )
    late = datetime(2025, 3, 12, 23, 30, tzinfo=ZoneInfo(ZONE)).timestamp()  # 22:30 UTC
    assert report_days(campaign(), late, 1) == ["20250312"]


def test_campaign_report_json_shape(redis_url: str, stats_site: str) -> None:
    data = run(lambda c: campaign_report(c, KEYS, stats_site, campaign(), NOW), redis_url)
    json.dumps(data, allow_nan=False)
    assert data["campaign"] == "exit1"
    assert data["site"] == stats_site
    # A campaign saved before experiments recorded their start: from its first day with data.
    assert data["days"] == {"from": "20250310", "to": "20250312"}
    assert [point["day"] for point in data["series"]] == list(DAYS)
    assert data["series"][-1]["variants"]["a"]["exposures"] == 370
    report = data["report"]
    assert report["control"] == "holdout"
    assert [row["variant"] for row in report["variants"]] == ["holdout", "a", "b"]
    assert report["variants"][1]["exposures"] == 370
    assert report["health"]["looks"] == 3
    assert report["health"]["expected_split"] == pytest.approx(
        {"holdout": 0.1, "a": 0.45, "b": 0.45}
    )
    assert "Not enough data yet: 75 of 100 exposures in holdout." in report["sentences"]
    assert report["winner"] is None
    expected = {"uplift", "p_value", "sequential_p_value", "chance_to_beat_control",
                "revenue_per_exposure", "incremental_revenue"}  # fmt: skip
    assert expected <= set(report["variants"][1])


def test_the_period_starts_when_the_experiment_version_started(
    redis_url: str, stats_site: str
) -> None:
    started = datetime(2025, 3, 11, 9, 30, tzinfo=ZoneInfo(ZONE)).timestamp()
    later = campaign(experiment_started=started)
    data = run(lambda c: campaign_report(c, KEYS, stats_site, later, NOW), redis_url)
    assert data["days"] == {"from": "20250311", "to": "20250312"}
    assert [point["day"] for point in data["series"]] == ["20250311", "20250312"]
    fixed = campaign(decision_rule="fixed_horizon", planned_exposures=1000)
    data = run(lambda c: campaign_report(c, KEYS, stats_site, fixed, NOW), redis_url)
    assert data["report"]["decision"] == "fixed_horizon"
    assert data["report"]["verdict"] == "collecting"
    assert data["report"]["headline"].startswith("Fixed-horizon test: ")


def test_report_without_data_or_holdout(redis_url: str) -> None:
    plain = campaign(holdout=0.0)
    data = run(lambda c: campaign_report(c, KEYS, "nodata", plain, NOW, days=7), redis_url)
    json.dumps(data, allow_nan=False)
    assert data["series"] == []
    assert data["report"]["control"] == "a"
    assert [row["exposures"] for row in data["report"]["variants"]] == [0, 0]
    future = campaign(schedule={"timezone": ZONE, "start": "2025-04-01T00:00:00Z"})
    data = run(lambda c: campaign_report(c, KEYS, "nodata", future, NOW), redis_url)
    assert data["days"] is None
    assert data["series"] == []


def test_report_csv(redis_url: str, stats_site: str) -> None:
    report, _ = run(lambda c: build_report(c, KEYS, stats_site, campaign(), NOW), redis_url)
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["variant"] for row in rows] == ["holdout", "a", "b"]
    assert rows[0]["control"] == "1" and rows[0]["uplift"] == ""
    assert rows[1]["exposures"] == "370"
    assert float(rows[1]["conversion_rate"]) == pytest.approx(9 / 370, rel=1e-9)


def test_the_rule_is_chosen_before_the_experiment_starts(redis_url: str) -> None:
    """A draft takes any rule; once the campaign has run, another rule or planned size starts a
    new experiment version (the running one keeps the rule it started with), and its period
    starts then."""

    async def scenario(client: Redis) -> list[Campaign]:
        store = CampaignStore(client, KEYS)
        site = "rules" + secrets.token_hex(3)
        data = json.loads(campaign(status="draft").model_dump_json())
        saved = [await store.save(site, data, author="t")]
        saved.append(await store.save(site, {**data, "decision_rule": "fixed_horizon",
                                             "planned_exposures": 5000}, author="t"))  # fmt: skip
        running = {**data, "decision_rule": "fixed_horizon", "planned_exposures": 5000,
                   "status": "active"}  # fmt: skip
        saved.append(await store.save(site, running, author="t"))
        saved.append(await store.save(site, {**running, "name": "Renamed"}, author="t"))
        saved.append(await store.save(site, {**running, "planned_exposures": 8000}, author="t"))
        return saved

    draft, draft_fixed, started, renamed, replanned = run(scenario, redis_url)
    assert [c.experiment_version for c in (draft, draft_fixed, started, renamed)] == [1, 1, 1, 1]
    assert started.experiment_started is not None and draft.experiment_started is not None
    assert started.experiment_started > draft.experiment_started  # it left its draft then
    assert renamed.experiment_started == started.experiment_started
    assert replanned.experiment_version == 2 and replanned.planned_exposures == 8000
    assert replanned.experiment_started is not None
    assert replanned.experiment_started > started.experiment_started
