"""The realtime benchmark runs end to end and reports sane numbers (no timing thresholds)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from .support import run_benchmark

SERVER_KEYS = (
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "offered_rate",
    "achieved_rate",
    "max_msgs_per_s",
    "rss_kib_per_idle_conn",
)
TARGET_KEYS = ("ratio", "cpu_ratio", "p99_over_echo", "rss_over_echo")


def _run_quick() -> dict[str, Any]:
    # Not pinned to CPUs: other tests run beside it.
    result: dict[str, Any] = json.loads(run_benchmark("realtime.py", "--no-pin", timeout=240))
    return result


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_reports_sane_numbers() -> None:
    result = _run_quick()

    for server in ("product", "echo"):
        numbers = result[server]
        for key in SERVER_KEYS:
            assert _positive(numbers[key]), f"{server}.{key} = {numbers.get(key)!r}"
            assert math.isfinite(numbers[key])
        assert numbers["p50_ms"] <= numbers["p95_ms"] <= numbers["p99_ms"], numbers
        assert numbers["achieved_rate"] <= numbers["offered_rate"] * 1.1, numbers
        assert numbers["max_msgs_per_s"] > 0

    ratio = result["ratio_msgs_per_s"]
    assert _positive(ratio)
    expected = result["product"]["max_msgs_per_s"] / result["echo"]["max_msgs_per_s"]
    assert ratio == pytest.approx(expected, abs=0.0005)  # the report rounds to 3 decimals

    assert set(result["targets"]) == set(TARGET_KEYS)
    assert all(_positive(result["targets"][key]) for key in TARGET_KEYS)
    assert set(result["met"]) == set(TARGET_KEYS)
    assert all(isinstance(result["met"][key], bool) for key in TARGET_KEYS)
