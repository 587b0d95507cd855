"""The traffic simulator against real server processes: what the server counts is what the
synthetic visitors did, and the A/B report finds the truth they were given."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytest
from redis.asyncio import Redis

from widget_server.cli import simulate as cli_simulate
from widget_server.devtools.simulate import (
    ArmTruth,
    SimulationResult,
    plan_visitors,
    simulate,
    simulate_offline,
)
from widget_server.errors import ConfigurationError
from widget_server.experiments.buyers import parse_buyers
from widget_server.experiments.reports import campaign_report
from widget_server.offers.assign import HOLDOUT, assign
from widget_server.offers.campaign_store import CampaignStore
from widget_server.offers.campaigns import Campaign, parse_campaign
from widget_server.settings import Settings
from widget_server.store.embedded import free_port
from widget_server.store.keys import Keys

from ..support import ServerProcess, add_site, save_campaigns

T = TypeVar("T")
ORIGIN = "https://shop.test"
CAMPAIGN = "simab"
TRUTH = {
    HOLDOUT: ArmTruth(0.05, 40.0, 15.0),
    "a": ArmTruth(0.05, 40.0, 15.0),
    "b": ArmTruth(0.10, 42.0, 15.0),
}
TRUE_UPLIFT = {"a": 0.05 / 0.05 - 1, "b": 0.10 / 0.05 - 1}
TRUE_REVENUE_DIFFERENCE = {"a": 0.0, "b": 0.10 * 42.0 - 0.05 * 40.0}  # per exposed visitor
E2E_VISITORS = 1600
E2E_SEED = 1


def campaign_data(cid: str = CAMPAIGN, **caps: Any) -> dict[str, Any]:
    """Two variants and a 20% holdout; caps let every simulated visitor be exposed once."""
    return {
        "id": cid,
        "name": "Simulated exit offer",
        "status": "active",
        "holdout": 0.2,
        "caps": {"per_session": 1, "per_visitor_day": 0, "per_visitor_week": 0, **caps},
        "variants": [
            {"key": "a", "offer": {"kind": "message", "headline": "Wait: free returns"}},
            {"key": "b", "offer": {"kind": "message", "headline": "Wait: a gift inside"}},
        ],
    }


def with_redis(redis_url: str, make: Callable[[Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await make(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def stored_campaign(redis_url: str, site: str, data: dict[str, Any]) -> Campaign:
    save_campaigns(redis_url, site, [data])
    campaign = with_redis(redis_url, lambda c: CampaignStore(c, Keys()).get(site, data["id"]))
    assert campaign is not None
    return campaign


def server_report(redis_url: str, site: str, campaign: Campaign) -> dict[str, Any]:
    return with_redis(redis_url, lambda c: campaign_report(c, Keys(), site, campaign, time.time()))


def rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["variant"]: row for row in document["report"]["variants"]}


@dataclass(frozen=True)
class Run:
    site: str
    campaign: Campaign
    result: SimulationResult
    document: dict[str, Any]


@pytest.fixture(scope="module")
def ab_run(server: ServerProcess, redis_url: str) -> Iterator[Run]:
    """One full run through the server: 1,600 visitors, holdout 5%, a 5%, b 10%."""
    site = add_site(redis_url)
    campaign = stored_campaign(redis_url, site, campaign_data())
    result = asyncio.run(
        simulate(server.ws_url, site, campaign, visitors=E2E_VISITORS, concurrency=50,
                 truth=TRUTH, seed=E2E_SEED, origin=ORIGIN)
    )  # fmt: skip
    yield Run(site, campaign, result, server_report(redis_url, site, campaign))


# --- the simulator on its own ------------------------------------------------------------------
def test_plans_depend_on_the_seed_only() -> None:
    plans = plan_visitors(200, seed=3)
    assert plans == plan_visitors(200, seed=3)
    assert plans[:50] == plan_visitors(50, seed=3)
    assert [p.visitor for p in plans] != [p.visitor for p in plan_visitors(200, seed=4)]
    assert len({p.visitor for p in plans}) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{8,64}", p.visitor) for p in plans)
    assert all(1 <= len(p.products) <= 3 for p in plans)


def test_order_values_have_the_arms_mean_and_sd() -> None:
    truth = ArmTruth(0.1, 40.0, 15.0)
    z = np.random.default_rng(5).standard_normal(200_000)
    values = np.array([truth.order_value(float(x)) for x in z])
    assert values.min() > 0
    assert values.mean() == pytest.approx(40.0, rel=0.01)
    assert values.std() == pytest.approx(15.0, rel=0.02)
    assert ArmTruth(0.1, 25.0, 0.0).order_value(2.5) == 25.0


def test_inputs_are_checked() -> None:
    campaign = parse_campaign(campaign_data())
    with pytest.raises(ValueError, match="holdout"):
        simulate_offline(campaign, visitors=1, truth={"a": TRUTH["a"], "b": TRUTH["b"]}, seed=1)
    with pytest.raises(ValueError, match="not an arm"):
        simulate_offline(campaign, visitors=1, truth=TRUTH, seed=1, drop_share={"c": 0.5})
    with pytest.raises(ValueError, match="between 0 and 1"):
        simulate_offline(campaign, visitors=1, truth=TRUTH, seed=1, drop_share={"b": 1.5})
    with pytest.raises(ValueError):
        ArmTruth(1.5, 40.0, 15.0)


def test_offline_run_follows_the_assignment() -> None:
    campaign = parse_campaign(campaign_data())
    result = simulate_offline(campaign, visitors=3000, truth=TRUTH, seed=2, drop_share={"b": 1.0})
    counts = result.counts()
    assert "b" not in counts
    assert result.dropped == sum(1 for o in result.outcomes if o.dropped) > 0
    for outcome in result.outcomes:
        assert outcome.dropped == (assign(campaign, outcome.visitor) == "b")
        assert outcome.arm in (None, assign(campaign, outcome.visitor))
    assert counts[HOLDOUT].impressions == counts[HOLDOUT].clicks == 0
    assert counts["a"].impressions == counts["a"].exposures


def test_unreachable_server_fails_every_visitor_quickly() -> None:
    campaign = parse_campaign(campaign_data())
    url = f"ws://127.0.0.1:{free_port()}/v1/ws"
    started = time.monotonic()
    result = asyncio.run(
        simulate(url, "nosite", campaign, visitors=20, concurrency=5, truth=TRUTH, seed=1,
                 origin=None, visitor_timeout_s=2)
    )  # fmt: skip
    assert time.monotonic() - started < 15  # each visitor gave up on its own, not in turn
    assert result.visitors == 20
    assert sum(result.errors.values()) == 20
    assert result.reached_signal == 0
    assert result.counts() == {}


def test_a_silent_server_cannot_hold_a_visitor() -> None:
    """A server that accepts TCP connections and never answers: every visit ends on its timeout."""
    campaign = parse_campaign(campaign_data())

    async def main() -> tuple[SimulationResult, float]:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        silent = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        started = time.monotonic()
        try:
            result = await simulate(
                f"ws://127.0.0.1:{port}/v1/ws", "nosite", campaign, visitors=6, concurrency=3,
                truth=TRUTH, seed=1, origin=None, visitor_timeout_s=0.5,
            )  # fmt: skip
        finally:
            silent.close()
        return result, time.monotonic() - started

    result, elapsed = asyncio.run(main())
    assert result.errors == {"timeout": 6}
    assert elapsed < 10  # six visitors, three at a time, 0.5 s each: not one after another


# --- through the server ------------------------------------------------------------------------
@pytest.mark.slow
def test_report_counts_what_the_visitors_did(ab_run: Run) -> None:
    result = ab_run.result
    assert not result.errors, result.errors
    assert not result.notes, result.notes
    assert result.reached_signal == E2E_VISITORS
    sent = result.counts()
    server = rows(ab_run.document)
    assert set(server) == set(sent) == {HOLDOUT, "a", "b"}
    assert sum(row["exposures"] for row in server.values()) == result.reached_signal
    totals = ab_run.document["series"][-1]["variants"]
    for arm, counts in sent.items():
        assert server[arm]["exposures"] == counts.exposures
        assert server[arm]["impressions"] == counts.impressions
        assert server[arm]["conversions"] == counts.conversions
        assert server[arm]["revenue"] == pytest.approx(counts.revenue, abs=1e-6)
        assert totals[arm]["revenue_sq"] == pytest.approx(counts.revenue_sq, rel=1e-9)
        assert totals[arm]["clicks"] == counts.clicks
        assert totals[arm]["dismissals"] == counts.dismissals
    assert server[HOLDOUT]["impressions"] == 0
    assert sum(o.converted for o in result.outcomes) == sum(
        r["conversions"] for r in server.values()
    )
    # Every visitor's arm came from the server and is the sticky assignment.
    for outcome in result.outcomes:
        assert outcome.arm == assign(ab_run.campaign, outcome.visitor)
        assert (outcome.offer_id is None) == (outcome.arm == HOLDOUT)


@pytest.mark.slow
def test_report_finds_the_true_uplift(ab_run: Run) -> None:
    report = ab_run.document["report"]
    server = rows(ab_run.document)
    assert report["control"] == HOLDOUT
    assert not report["health"]["srm_flag"]
    for arm in ("a", "b"):
        uplift = server[arm]["uplift"]
        assert uplift["low"] <= TRUE_UPLIFT[arm] <= uplift["high"], (arm, uplift)
        difference = server[arm]["revenue_difference"]
        assert difference["low"] <= TRUE_REVENUE_DIFFERENCE[arm] <= difference["high"]
    # The run through the server is exactly the offline run of the same seed, so the many-seed
    # check below speaks for it.
    offline = simulate_offline(ab_run.campaign, visitors=E2E_VISITORS, truth=TRUTH, seed=E2E_SEED)
    assert offline.counts() == ab_run.result.counts()
    offline_b = next(row for row in offline.report(ab_run.campaign).variants if row.variant == "b")
    assert offline_b.uplift is not None
    assert offline_b.uplift.low == pytest.approx(server["b"]["uplift"]["low"])
    assert offline_b.uplift.high == pytest.approx(server["b"]["uplift"]["high"])


def test_covariates_and_buyers_kept_by_the_server_match_what_the_visitors_did(
    ab_run: Run, redis_url: str
) -> None:
    """Each simulated visitor puts its first viewed product in the cart before its exit
    signal: the server's covariate sums hold, per arm, exactly those cart values, for every
    exposed visitor; its buyers' records are the arm's conversions and revenue."""
    last = ab_run.document["series"][-1]["variants"]
    plans = {plan.visitor: plan for plan in plan_visitors(E2E_VISITORS, E2E_SEED)}
    buyers = parse_buyers(
        with_redis(redis_url, lambda c: c.hgetall(Keys().campaign_buyers(ab_run.site, CAMPAIGN)))
    )
    for arm in ("holdout", "a", "b"):
        exposed = [o for o in ab_run.result.outcomes if o.exposed and o.arm == arm]
        moments = last[arm]["moments"]
        assert moments["n"] == last[arm]["exposures"] == len(exposed)
        carts = [plans[o.visitor].products[0][1] for o in exposed]
        assert moments["x"][0] == pytest.approx(sum(carts))
        assert moments["x"][1] == len(exposed)  # one item each
        assert moments["x"][3] == 0  # no earlier orders
        arm_buyers = [b for b in buyers if b.arm == arm]
        assert len(arm_buyers) == last[arm]["conversions"]
        assert sum(b.totals[-1][1] for b in arm_buyers) == pytest.approx(last[arm]["revenue"])
        assert sorted(b.x[0] for b in arm_buyers if b.x) == pytest.approx(sorted(
            plans[o.visitor].products[0][1] for o in exposed if o.converted
        ))  # fmt: skip
    # The report adjusts by the one covariate that varied (items, pages and orders did not).
    report = ab_run.document["report"]
    assert report["adjustment"] == "adjusted" and report["covariates"] == ["cart_value"]
    b = rows(ab_run.document)["b"]
    assert b["adjusted"] and b["unadjusted_difference"] is not None
    assert b["difference"] != b["unadjusted_difference"]


@pytest.mark.slow
def test_uplift_intervals_cover_the_truth_across_seeds() -> None:
    """95% intervals over 200 seeds of 2,000 visitors: about 190 should hold the truth. For a
    correct interval, fewer than 180 happens with probability 0.12%, and 199 or more 0.04%."""
    campaign = parse_campaign(campaign_data())
    seeds = range(100, 300)
    covered = {"uplift b": 0, "uplift a": 0, "revenue b": 0}
    for seed in seeds:
        result = simulate_offline(campaign, visitors=2000, truth=TRUTH, seed=seed)
        by_arm = {row.variant: row for row in result.report(campaign).variants}
        for arm in ("a", "b"):
            uplift = by_arm[arm].uplift
            assert uplift is not None
            covered[f"uplift {arm}"] += uplift.low <= TRUE_UPLIFT[arm] <= uplift.high
        difference = by_arm["b"].revenue_difference
        assert difference is not None
        covered["revenue b"] += difference.low <= TRUE_REVENUE_DIFFERENCE["b"] <= difference.high
    for name, hits in covered.items():
        assert 180 <= hits <= 198, (name, hits)


@pytest.mark.slow
def test_a_broken_split_is_flagged(server: ServerProcess, redis_url: str) -> None:
    site = add_site(redis_url)
    campaign = stored_campaign(redis_url, site, campaign_data())
    result = asyncio.run(
        simulate(server.ws_url, site, campaign, visitors=900, concurrency=50, truth=TRUTH,
                 seed=21, origin=ORIGIN, drop_share={"b": 0.4})
    )  # fmt: skip
    assert not result.errors and not result.notes
    assert 0 < result.dropped < 900
    assert result.reached_signal == 900 - result.dropped
    document = server_report(redis_url, site, campaign)
    health = document["report"]["health"]
    assert health["srm_flag"], health
    assert health["srm_p_value"] < 0.001
    assert health["observed_split"]["b"] < health["expected_split"]["b"] - 0.05
    assert document["report"]["winner"] is None
    assert document["report"]["sentences"][0].startswith("The split looks broken (p < 0.001)")
    assert sum(r["exposures"] for r in rows(document).values()) == result.reached_signal


def test_assignment_is_the_same_on_two_processes(
    two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str
) -> None:
    """The same visitors on two server processes at once get the variant ``assign`` gives."""
    site = add_site(redis_url)
    data = campaign_data(dismiss_cooldown_minutes=0, quiet_days_after_purchase=0)
    campaign = stored_campaign(redis_url, site, data)
    first, second = two_nodes

    async def both() -> list[SimulationResult]:
        runs = (
            simulate(node.ws_url, site, campaign, visitors=150, concurrency=25, truth=TRUTH,
                     seed=7, origin=ORIGIN)
            for node in (first, second)
        )  # fmt: skip
        return list(await asyncio.gather(*runs))

    on_first, on_second = asyncio.run(both())
    for result in (on_first, on_second):
        assert not result.errors and not result.notes
        assert result.reached_signal == 150
    arms = set()
    for one, two in zip(on_first.outcomes, on_second.outcomes, strict=True):
        assert one.visitor == two.visitor
        assert one.arm == two.arm == assign(campaign, one.visitor)
        arms.add(one.arm)
    assert arms == {HOLDOUT, "a", "b"}
    exposures = sum(
        row["exposures"] for row in rows(server_report(redis_url, site, campaign)).values()
    )
    assert exposures == 150  # each visitor counts once, however many nodes and sessions


# --- the command ---------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cli_simulate.add_parsers(sub)
    return parser.parse_args(argv)


def test_cli_simulates_and_reports(server: ServerProcess, redis_url: str) -> None:
    site = add_site(redis_url)
    stored_campaign(redis_url, site, campaign_data())
    args = parse_args(
        ["simulate", "--site", site, "--campaign", CAMPAIGN, "--visitors", "80", "--seed", "5",
         "--truth", "holdout=0.05:40:15,b=0.3:42:15", "--server", f"127.0.0.1:{server.port}",
         "--origin", ORIGIN, "--report"]
    )  # fmt: skip
    out = asyncio.run(cli_simulate.run(redis_url, Settings(redis_url=redis_url), args))
    assert f"80 visitors on {site}/{CAMPAIGN} through {server.ws_url}" in out
    assert "(seed 5): 80 reached exit intent, 0 dropped after hello, 0 failed" in out
    table = {line.split()[0]: line.split() for line in out.splitlines()[2:5]}
    assert set(table) == {HOLDOUT, "a", "b"}
    assert sum(int(row[1]) for row in table.values()) == 80
    assert table["b"][4] == "30.00%" and table["a"][4] == "5.00%"
    assert "Report (every visitor of the campaign, not only this run):" in out
    assert "Not enough data yet" in out


def test_cli_arguments() -> None:
    arms = [HOLDOUT, "a", "b"]
    truth = cli_simulate.parse_truth("a=0.06:40:15, b=0.07:42:10", arms)
    assert truth == {
        HOLDOUT: cli_simulate.DEFAULT_TRUTH,
        "a": ArmTruth(0.06, 40.0, 15.0),
        "b": ArmTruth(0.07, 42.0, 10.0),
    }
    for bad in ("c=0.1:40:15", "a=0.1:40", "a=2:40:15", "a", "a=x:1:1"):
        with pytest.raises(ConfigurationError):
            cli_simulate.parse_truth(bad, arms)
    assert cli_simulate.parse_drop("b=0.4") == {"b": 0.4}
    with pytest.raises(ConfigurationError):
        cli_simulate.parse_drop("b=much")
    assert cli_simulate.websocket_url("ws://127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/ws"
    assert cli_simulate.websocket_url("https://w.example.com/") == "wss://w.example.com/v1/ws"
    assert cli_simulate.websocket_url("localhost:9000") == "ws://localhost:9000/v1/ws"
    assert cli_simulate.websocket_url("ws://h:1/custom/ws") == "ws://h:1/custom/ws"
    with pytest.raises(ConfigurationError):
        cli_simulate.websocket_url("ftp://h")


def test_cli_fails_when_no_visitor_gets_through(redis_url: str) -> None:
    site = add_site(redis_url)
    stored_campaign(redis_url, site, campaign_data())
    args = parse_args(
        ["simulate", "--site", site, "--campaign", CAMPAIGN, "--visitors", "10",
         "--server", f"ws://127.0.0.1:{free_port()}"]
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="every visitor failed"):
        asyncio.run(cli_simulate.run(redis_url, Settings(redis_url=redis_url), args))
    args = parse_args(["simulate", "--site", site, "--campaign", "missing", "--visitors", "1"])
    with pytest.raises(ConfigurationError, match="no campaign"):
        asyncio.run(cli_simulate.run(redis_url, Settings(redis_url=redis_url), args))
