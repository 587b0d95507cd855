"""The offers benchmark runs end to end and reports every number (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .support import ROOT


@pytest.mark.slow
def test_offers_benchmark_quick_run_reports_its_numbers() -> None:
    run = subprocess.run(
        [sys.executable, "benchmarks/offers.py", "--quick"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["decision"]["decision_us"] > 0 and result["decision"]["campaigns"] == 20
    assert result["round_trips"]["round_trips_per_exit_signal"] >= 2
    assert result["fan_out"]["sessions"] == 200 and result["fan_out"]["live_offer_s"] > 0
