"""The offers benchmark runs end to end and reports every number (no timing thresholds)."""

from __future__ import annotations

import json

import pytest

from .support import run_benchmark


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_offers_benchmark_quick_run_reports_its_numbers() -> None:
    result = json.loads(run_benchmark("offers.py", timeout=240))
    assert result["decision"]["decision_us"] > 0 and result["decision"]["campaigns"] == 20
    trips = result["round_trips"]
    # The signal's slot and the campaign's slot: at least two before the offer goes out.
    assert trips["round_trips_per_exit_signal"] >= trips["round_trips_before_the_offer"] >= 2
    assert result["fan_out"]["sessions"] == 200 and result["fan_out"]["live_offer_s"] > 0
    yardstick = result["live_vs_bare_app"]
    assert yardstick["sessions"] == 200 and yardstick["bare_app_broadcast_s"] > 0
    assert yardstick["live_over_bare_app"] > 0 and "<= 2" in yardstick["goal"]
