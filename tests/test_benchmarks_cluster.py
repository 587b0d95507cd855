"""The cluster benchmark runs end to end and reports every number (no timing thresholds)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .support import run_benchmark


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_cluster_benchmark_quick_run_reports_its_numbers() -> None:
    result = json.loads(run_benchmark("cluster.py", timeout=240))

    cpu = result["cpu_per_message"]
    for store in ("single", "cluster"):
        for key in ("server_cpu_us_per_msg", "store_cpu_us_per_msg", "msgs_per_s"):
            assert _positive(cpu[store][key]), (store, key, cpu[store])
        assert cpu[store]["rounds"] and all(r["messages"] > 0 for r in cpu[store]["rounds"])
    assert _positive(cpu["cluster"]["store_replicas_cpu_us_per_msg"])
    for key in ("ratio_server_cpu", "ratio_store_cpu", "ratio_msgs_per_s"):
        assert _positive(cpu[key]), key
    assert cpu["goal_ratio_server_cpu_at_most"] == 1.3

    calls = result["store_client"]
    for store in ("single", "cluster"):
        assert _positive(calls[store]["command_cpu_us"])
        assert _positive(calls[store]["pipeline_of_2_cpu_us"])
    assert _positive(calls["ratio_command"]) and _positive(calls["ratio_pipeline_of_2"])

    fan = result["fan_out"]
    for store in ("single", "cluster"):
        assert fan[store]["sessions"] == 200
        assert _positive(fan[store]["live_offer_s"]) and _positive(fan[store]["bare_broadcast_s"])
    assert _positive(fan["ratio_live_offer"]) and _positive(fan["ratio_bare_broadcast"])

    failover = result["failover"]
    assert len(failover["runs"]) == 1
    run = failover["runs"][0]
    assert run["visitors"] == 20 and run["sockets_closed"] == 0
    for key in (
        "replica_promoted_s",
        "events_acked_again_s",
        "live_offer_accepted_s",
        "live_offer_every_visitor_s",
    ):
        assert _positive(run[key]), key
        assert _positive(failover["median"][key]), key
    assert all(_positive(t) for t in run["live_offer_per_node_s"])
