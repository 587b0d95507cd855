"""The recommendation benchmark runs end to end and reports what it promises (no timing checks)."""

from __future__ import annotations

import json

import pytest

from .support import run_benchmark


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_prints_one_json_report() -> None:
    report = json.loads(run_benchmark("recommend.py", timeout=240))
    assert {
        "catalog_size", "build_s", "requests", "latency_ms", "session_latency_ms",
        "precision_at_8", "brute_force", "speedup_p50", "speedup_mean",
        "recall_at_8_vs_brute_force", "target_p99_ms", "meets_target", "mode",
        "cpu_ms_per_request", "load_average",
    } <= set(report)  # fmt: skip
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert {"requests", "latency_ms", "precision_at_8"} <= set(report["brute_force"])
    assert report["mode"] == "quick" and report["catalog_size"] == 2000
    assert 0.0 <= report["precision_at_8"] <= 1.0
