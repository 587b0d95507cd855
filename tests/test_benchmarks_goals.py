"""`make bench` prints every speed goal with its baseline from the same run (no timing
thresholds: whether a goal is met is the benchmark's finding, not the test's)."""

from __future__ import annotations

import json

import pytest

from .support import run_benchmark

FIGURES = ("live offer", "CPU per message", "messages/s", "RSS per idle", "p99", "decision",
           "round trips")  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_every_goal_is_printed_with_its_baseline_and_the_noise() -> None:
    result = json.loads(run_benchmark("goals.py", timeout=360))
    rows = result["goals"]
    assert [any(f in row["figure"] for row in rows) for f in FIGURES] == [True] * len(FIGURES)
    for row in rows:
        assert row["product"] > 0 and isinstance(row["met"], bool) and row["goal"], row
        if row["baseline"] is not None:
            assert row["baseline"] > 0 and row["ratio"] > 0, row
    assert result["met"] == sum(row["met"] for row in rows) and result["of"] == len(rows)
    noise = result["noise"]
    assert noise["offers_others_cores_busy"] >= 0
    assert set(noise["realtime_others_cores_busy"]) == {"product", "echo"}
