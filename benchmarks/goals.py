"""Every speed goal in one table: runs ``benchmarks/realtime.py`` and ``benchmarks/offers.py``
(``make bench``) and prints one JSON object with, for each goal, what the product measured, the
baseline measured in the same run, their ratio, the goal and whether it is met, and the noise of
this shared machine while each ran (cores kept busy by other processes); then both runs whole.

``python benchmarks/goals.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def row(figure: str, product: Any, baseline: Any, baseline_is: str | None, ratio: Any,
        goal: str, met: bool) -> dict[str, Any]:  # fmt: skip
    return {"figure": figure, "product": product, "baseline": baseline,
            "baseline_is": baseline_is, "ratio": ratio, "goal": goal, "met": met}  # fmt: skip


def table(realtime: dict[str, Any], offers: dict[str, Any]) -> list[dict[str, Any]]:
    product, echo = realtime["product"], realtime["echo"]
    cpu = [r["closed_loop_cpu"].get("server_cpu_us_per_msg") for r in (product, echo)]
    live, decision = offers["live_vs_bare_app"], offers["decision"]
    met_rt, met_offers = realtime["met"], offers["goals"]
    echo_app = "bare echo app"
    return [
        row("live offer to visitors on one process, first to last served (s)",
            live["live_offer_s"], live["bare_app_broadcast_s"],
            "bare Starlette app sending one prepared payload to as many sockets",
            live["live_over_bare_app"], "ratio <= 2", met_offers["live_over_bare_app"]["met"]),
        row("server CPU per message, closed loop (us)", cpu[0], cpu[1], echo_app,
            realtime["ratio_server_cpu_per_msg"], "echo / product >= 0.4", met_rt["cpu_ratio"]),
        row("max messages/s, closed loop", product["max_msgs_per_s"], echo["max_msgs_per_s"],
            echo_app, realtime["ratio_msgs_per_s"], "product / echo >= 0.4", met_rt["ratio"]),
        row("RSS per idle connection (KiB)", product["rss_kib_per_idle_conn"],
            echo["rss_kib_per_idle_conn"], echo_app, realtime["rss_over_echo"],
            "product / echo <= 1.1", met_rt["rss_over_echo"]),
        row("event -> ack p99 at the offered rate (ms)", product["p99_ms"], echo["p99_ms"],
            echo_app, realtime["p99_over_echo"], "product / echo <= 1.5",
            met_rt["p99_over_echo"]),
        row("decision for 20 campaigns, pure CPU (us)", decision["decision_us"],
            decision["parse_frame_us"], "parsing one frame", decision["decision_over_parse"],
            "product <= 25 us", met_offers["decision_us"]["met"]),
        row("store round trips per exit-intent signal before its offer is sent (the decision "
            "trace is written after it)",
            offers["round_trips"]["round_trips_before_the_offer"], None, None, None, "<= 2",
            met_offers["round_trips_before_the_offer"]["met"]),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke test")
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    realtime = run("realtime.py", *quick)
    offers = run("offers.py", *quick)
    noise = {
        "realtime_others_cores_busy": {
            server: realtime[server]["closed_loop_cpu"]["cores_busy"].get("others")
            for server in ("product", "echo")
        },
        "offers_others_cores_busy": offers["noise"]["others_cores_busy"],
    }
    rows = table(realtime, offers)
    out = {
        "goals": rows,
        "met": sum(r["met"] for r in rows),
        "of": len(rows),
        "noise": noise,
        "runs": {"realtime": realtime, "offers": offers},  # every figure behind the table
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
