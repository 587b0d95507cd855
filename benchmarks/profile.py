"""Where a live offer's time goes on the server: a py-spy flame graph of one server process while
a live offer reaches every connected visitor (``make profile``).

One server process, one embedded Valkey, ``--sessions`` visitors connected (2,000 by default,
the figure of the speed goals), the demo's campaigns with the flash sale started live. py-spy
samples the server from just before the start until the last visitor has the offer, and writes
an SVG flame graph (``--out``, default ``docs/perf/live-offer.svg``). Prints JSON: the sessions,
how long the offer took to reach all of them, and where the SVG is. Run it before and after a
change to the fan-out and keep both graphs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from offers import EXAMPLES, _connect_all, _time_until_all, log  # noqa: E402

from tests.support import ServerProcess, add_site, save_campaigns  # noqa: E402
from widget_server.metrics import Metrics  # noqa: E402
from widget_server.offers.campaign_store import CampaignStore  # noqa: E402
from widget_server.offers.engine import OfferEngine  # noqa: E402
from widget_server.store.embedded import EmbeddedValkey  # noqa: E402
from widget_server.store.keys import Keys  # noqa: E402
from widget_server.store.scripts import Scripts  # noqa: E402
from widget_server.visitors.sessions import SessionStore  # noqa: E402


async def profile_live_offer(
    url: str, server: ServerProcess, site: str, n: int, out: Path, py_spy: str
) -> dict[str, Any]:
    log(f"opening {n} sessions")
    conns = await _connect_all([server.ws_url], site, n)
    client = Redis.from_url(url)
    keys, scripts = Keys(), Scripts.of(client)
    sessions = SessionStore(
        client, scripts, keys, session_ttl_s=1800, profile_ttl_s=86400, presence_ttl_s=90
    )
    engine = OfferEngine(client, scripts, keys, CampaignStore(client, keys), sessions, Metrics())
    sampler = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(_pid(server)), "--subprocesses", "--rate", "250",
        "--format", "raw" if out.suffix == ".txt" else "flamegraph",  # .txt: collapsed stacks
        "--output", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await client.config_resetstat()
    try:
        await asyncio.sleep(1.0)  # py-spy attached and sampling
        log("live offer")
        live = await _time_until_all(
            conns, "offer", lambda: engine.start_live(site, "flash-sale", 5), 300
        )
        store = await _store_time(client)
    finally:
        sampler.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(sampler.communicate(), 60)
        await client.aclose()
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    if sampler.returncode not in (0, -signal.SIGINT):
        raise SystemExit(f"py-spy failed: {err.decode().strip()}")
    return {"sessions": n, "live_offer_s": round(live, 3), "store": store, "flame_graph": str(out)}


async def _store_time(client: Redis) -> dict[str, Any]:
    """What the store spent on the live offer (``INFO commandstats`` since the reset), the
    commands run inside scripts included in their script's time."""
    stats = await client.info("commandstats")
    top = {
        name.removeprefix("cmdstat_"): {"calls": v["calls"], "ms": round(v["usec"] / 1000, 1)}
        for name, v in stats.items()
        if name.startswith("cmdstat_")
    }
    scripts = {n: v for n, v in top.items() if n in ("evalsha", "eval")}
    return {
        "script_ms": round(sum(v["ms"] for v in scripts.values()), 1),
        "commands": dict(sorted(top.items(), key=lambda kv: -kv[1]["ms"])[:8]),
    }


def _pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 sessions, for a smoke test")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "perf" / "live-offer.svg")
    args = parser.parse_args()
    if args.quick:
        args.sessions = 200
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * args.sessions + 1000)), hard)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedValkey(Path(tmp), persist=False) as valkey:
        site = add_site(valkey.url, origins=["*"])
        flash = dict(EXAMPLES[-1])
        flash.pop("caps", None)
        save_campaigns(valkey.url, site, [flash])
        server = ServerProcess(
            valkey.url, Path(tmp) / "node", WIDGET_LOG_LEVEL="error",
            WIDGET_MAX_CONNECTIONS_PER_IP="0",
        ).start()  # fmt: skip
        started = time.monotonic()
        try:
            result = asyncio.run(
                profile_live_offer(valkey.url, server, site, args.sessions, args.out, py_spy)
            )
        finally:
            server.stop()
        result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
