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


def table(realtime: dict[str, Any], offers: dict[str, Any]) -> list[dict[str, Any]]:
    product, echo = realtime["product"], realtime["echo"]
    cpu = [r["closed_loop_cpu"].get("server_cpu_us_per_msg") for r in (product, echo)]
    live = offers["live_vs_bare_app"]
    met_rt, met_offers = realtime["met"], offers["goals"]
    return [
        {"figure": "live offer to visitors on one process, first to last served (s)",
         "product": live["live_offer_s"], "baseline": live["bare_app_broadcast_s"],
         "baseline_is": "bare Starlette app sending one prepared payload to as many sockets",
         "ratio": live["live_over_bare_app"], "goal": "ratio <= 2",
         "met": met_offers["live_over_bare_app"]["met"]},
        {"figure": "server CPU per message, closed loop (us)", "product": cpu[0],
         "baseline": cpu[1], "baseline_is": "bare echo app",
         "ratio": realtime["ratio_server_cpu_per_msg"], "goal": "echo / product >= 0.4",
         "met": met_rt["cpu_ratio"]},
        {"figure": "max messages/s, closed loop", "product": product["max_msgs_per_s"],
         "baseline": echo["max_msgs_per_s"], "baseline_is": "bare echo app",
         "ratio": realtime["ratio_msgs_per_s"], "goal": "product / echo >= 0.4",
         "met": met_rt["ratio"]},
        {"figure": "RSS per idle connection (KiB)", "product": product["rss_kib_per_idle_conn"],
         "baseline": echo["rss_kib_per_idle_conn"], "baseline_is": "bare echo app",
         "ratio": realtime["rss_over_echo"], "goal": "product / echo <= 1.1",
         "met": met_rt["rss_over_echo"]},
        {"figure": "event -> ack p99 at the offered rate (ms)", "product": product["p99_ms"],
         "baseline": echo["p99_ms"], "baseline_is": "bare echo app",
         "ratio": realtime["p99_over_echo"], "goal": "product / echo <= 1.5",
         "met": met_rt["p99_over_echo"]},
        {"figure": "decision for 20 campaigns, pure CPU (us)",
         "product": offers["decision"]["decision_us"],
         "baseline": offers["decision"]["parse_frame_us"], "baseline_is": "parsing one frame",
         "ratio": offers["decision"]["decision_over_parse"], "goal": "product <= 25 us",
         "met": met_offers["decision_us"]["met"]},
        {"figure": "store round trips per exit-intent signal",
         "product": offers["round_trips"]["round_trips_per_exit_signal"], "baseline": None,
         "baseline_is": None, "ratio": None, "goal": "<= 2",
         "met": met_offers["round_trips_per_exit_signal"]["met"]},
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
